# Every relocation type the front end supports, each in a function that returns what the
# relocation computed, so the test can compare it with the addresses the link produced.
# Assembled by clang-19 (integrated assembler, GOTPCRELX relaxation markers on).

        .text
        .globl  target_fn
        .type   target_fn,@function
target_fn:                              # the callee most tests reach: returns 7
        movl    $7, %eax
        ret

        .globl  rex_gotpcrelx_mov       # R_X86_64_REX_GOTPCRELX (mov -> lea when in range)
rex_gotpcrelx_mov:
        movq    data_obj@GOTPCREL(%rip), %rax
        ret

        .globl  gotpcrelx_call          # R_X86_64_GOTPCRELX on call *, relaxed to addr32 call
gotpcrelx_call:
        subq    $8, %rsp
        call    *target_fn@GOTPCREL(%rip)
        addq    $8, %rsp
        ret

        .globl  gotpcrelx_jmp           # R_X86_64_GOTPCRELX on jmp *, relaxed to jmp; nop
gotpcrelx_jmp:
        jmp     *target_fn@GOTPCREL(%rip)

        .globl  gotpcrelx_call_far      # out of reach (libc): stays an indirect call via the GOT
gotpcrelx_call_far:
        subq    $8, %rsp
        movq    $-5, %rdi
        call    *labs@GOTPCREL(%rip)
        addq    $8, %rsp
        ret

        .globl  plt_call_far            # R_X86_64_PLT32 to libc: through a stub
plt_call_far:
        subq    $8, %rsp
        movq    $-6, %rdi
        call    labs@PLT
        addq    $8, %rsp
        ret

        .globl  gotpc32_gotoff64        # R_X86_64_GOTPC32 + R_X86_64_GOTOFF64
gotpc32_gotoff64:
        leaq    _GLOBAL_OFFSET_TABLE_(%rip), %rax
        movabsq $data_obj@GOTOFF, %rcx
        addq    %rcx, %rax
        ret

        .globl  gotpc64_got64           # R_X86_64_GOTPC64 + R_X86_64_GOT64 (large-model GOT load)
gotpc64_got64:
.Lpc1:  leaq    .Lpc1(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpc1, %rcx
        addq    %rcx, %rax
        movabsq $data_obj@GOT, %rcx
        movq    (%rax,%rcx), %rax
        ret

        .globl  gotpcrel64              # R_X86_64_GOTPCREL64: GOT entry - P
gotpcrel64:
        .byte   0x48, 0xb9              # movabsq $imm64, %rcx
.Lg64:  .reloc  .Lg64, R_X86_64_GOTPCREL64, data_obj
        .quad   0
        leaq    .Lg64(%rip), %rax
        movq    (%rax,%rcx), %rax
        ret

        .globl  pltoff64_local          # R_X86_64_PLTOFF64 to a definition of this object
pltoff64_local:
.Lpc2:  leaq    .Lpc2(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpc2, %rcx
        addq    %rcx, %rax
        movabsq $target_fn@PLTOFF, %rcx
        addq    %rcx, %rax
        jmp     *%rax

        .globl  pltoff64_far            # R_X86_64_PLTOFF64 to libc: through a stub
pltoff64_far:
.Lpc3:  leaq    .Lpc3(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpc3, %rcx
        addq    %rcx, %rax
        movabsq $labs@PLTOFF, %rcx
        addq    %rcx, %rax
        movq    $-9, %rdi
        jmp     *%rax

        .globl  pc64                    # R_X86_64_PC64
pc64:
.Lpc4:  movabsq $data_obj-.Lpc4, %rcx
        leaq    .Lpc4(%rip), %rax
        addq    %rcx, %rax
        ret

        .globl  abs32                   # R_X86_64_32 (a missing weak symbol is 0)
abs32:
        movl    $weak_missing+0x12345, %eax
        ret

        .globl  abs32s                  # R_X86_64_32S
abs32s:
        movq    $weak_missing-0x12345, %rax
        ret

        .globl  abs64                   # R_X86_64_64 in code (large non-PIC style)
abs64:
        movabsq $data_obj, %rax
        ret

        .globl  weak_missing_address    # a missing weak reference resolves to 0
weak_missing_address:
        movq    weak_missing@GOTPCREL(%rip), %rax
        ret

        .globl  tls_ld_address          # R_X86_64_TLSLD + R_X86_64_DTPOFF64
tls_ld_address:
        pushq   %rbx
        leaq    tls_var@tlsld(%rip), %rdi
        call    __tls_get_addr@PLT
        movabsq $tls_var@DTPOFF, %rcx
        addq    %rcx, %rax
        popq    %rbx
        ret

        .globl  tls_gd_address          # R_X86_64_TLSGD (the psABI's padded sequence)
tls_gd_address:
        pushq   %rbx
        .byte   0x66
        leaq    tls_var@tlsgd(%rip), %rdi
        .value  0x6666
        rex64
        call    __tls_get_addr@PLT
        popq    %rbx
        ret

        .weak   weak_missing

        .data
        .globl  data_obj
        .p2align 3
data_obj:
        .quad   target_fn               # +0:  R_X86_64_64
        .long   target_fn - .           # +8:  R_X86_64_PC32 in data
        .short  weak_missing+0x1234     # +12: R_X86_64_16
        .byte   weak_missing+0x56       # +14: R_X86_64_8
        .byte   0
        .quad   target_fn - .           # +16: R_X86_64_PC64 in data

        .section .tdata,"awT",@progbits
        .globl  tls_var
        .type   tls_var,@object
        .p2align 2
tls_var:
        .long   1234

        .section .note.GNU-stack,"",@progbits
