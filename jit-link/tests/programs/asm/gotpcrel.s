# R_X86_64_GOTPCREL without relaxation markers (assembled with -mrelax-relocations=no).
        .text
        .globl  plain_gotpcrel
plain_gotpcrel:
        movq    data_obj@GOTPCREL(%rip), %rax
        ret
        .section .note.GNU-stack,"",@progbits
