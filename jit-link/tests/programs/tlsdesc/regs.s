# Whether a TLS descriptor's resolver keeps every register but %rax, as the caller of
# `call *(%rax)` assumes (x86-64 psABI, TLS descriptors): loads a pattern into %rcx, %rdx,
# %rsi, %rdi, %r8-%r11 and %xmm0-%xmm15 (and, in the AVX variant, the upper halves of
# %ymm0-%ymm15), reads `counter` through its descriptor, and returns a mask of the registers
# that changed (bit 0-7: the general ones in that order, bit 8-23: the xmm ones, bit 24-39: the
# upper halves of the ymm ones), with the counter's value, in *value.
#
#   unsigned long tlsdesc_keeps_registers(int *value);       (SSE; reads `counter`)
#   unsigned long tlsdesc_keeps_registers_avx(int *value);   (AVX: ymm; reads `counter_avx`)

        .text
        .globl  tlsdesc_keeps_registers
        .type   tlsdesc_keeps_registers,@function
tlsdesc_keeps_registers:
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        movq    %rdi, %r12                      # value
        call    load_patterns
        leaq    counter@tlsdesc(%rip), %rax
        call    *counter@tlscall(%rax)
        movl    %fs:(%rax), %ebx
        call    compare_patterns                # mask in %rax
        movl    %ebx, (%r12)
        popq    %r13
        popq    %r12
        popq    %rbx
        ret
        .size   tlsdesc_keeps_registers, .-tlsdesc_keeps_registers

        .globl  tlsdesc_keeps_registers_avx
        .type   tlsdesc_keeps_registers_avx,@function
tlsdesc_keeps_registers_avx:
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        movq    %rdi, %r12
        call    load_patterns
        # The upper halves: each ymm's high 128 bits get its low 128 bits' pattern, xor 0x55.
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        vmovdqu pattern+16*\n(%rip), %xmm\n
        vinsertf128 $1, upper+16*\n(%rip), %ymm\n, %ymm\n
        .endr
        leaq    counter_avx@tlsdesc(%rip), %rax
        call    *counter_avx@tlscall(%rax)
        movl    %fs:(%rax), %ebx
        call    compare_patterns
        movq    %rax, %r13
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        vextractf128 $1, %ymm\n, %xmm\n
        vpcmpeqb upper+16*\n(%rip), %xmm\n, %xmm\n
        vpmovmskb %xmm\n, %ecx
        cmpl    $0xffff, %ecx
        je      1f
        btsq    $(24+\n), %r13
1:
        .endr
        vzeroupper
        movq    %r13, %rax
        movl    %ebx, (%r12)
        popq    %r13
        popq    %r12
        popq    %rbx
        ret
        .size   tlsdesc_keeps_registers_avx, .-tlsdesc_keeps_registers_avx

# int cpu_has_avx(void): AVX there, and its state enabled by the kernel (CPUID.1:ECX bits 27
# and 28; XCR0 bits 1 and 2).
        .globl  cpu_has_avx
        .type   cpu_has_avx,@function
cpu_has_avx:
        pushq   %rbx
        movl    $1, %eax
        cpuid
        xorl    %eax, %eax
        andl    $0x18000000, %ecx
        cmpl    $0x18000000, %ecx
        jne     1f
        xorl    %ecx, %ecx
        xgetbv
        andl    $6, %eax
        cmpl    $6, %eax
        sete    %al
        movzbl  %al, %eax
1:      popq    %rbx
        ret
        .size   cpu_has_avx, .-cpu_has_avx

# Loads the patterns (clobbers only what it loads).
        .type   load_patterns,@function
load_patterns:
        movabsq $0x1111111111111111, %rcx
        movabsq $0x2222222222222222, %rdx
        movabsq $0x3333333333333333, %rsi
        movabsq $0x4444444444444444, %rdi
        movabsq $0x5555555555555555, %r8
        movabsq $0x6666666666666666, %r9
        movabsq $0x7777777777777777, %r10
        movabsq $0x1234567812345678, %r11
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        movdqu  pattern+16*\n(%rip), %xmm\n
        .endr
        ret
        .size   load_patterns, .-load_patterns

# Returns in %rax the mask of the general and xmm registers that lost their pattern; keeps
# the ymm upper halves (SSE instructions leave them alone).
        .type   compare_patterns,@function
compare_patterns:
        pushq   %rbx
        xorl    %ebx, %ebx
        movabsq $0x1111111111111111, %rax
        cmpq    %rax, %rcx
        je      1f
        orq     $1, %rbx
1:      movabsq $0x2222222222222222, %rax
        cmpq    %rax, %rdx
        je      1f
        orq     $2, %rbx
1:      movabsq $0x3333333333333333, %rax
        cmpq    %rax, %rsi
        je      1f
        orq     $4, %rbx
1:      movabsq $0x4444444444444444, %rax
        cmpq    %rax, %rdi
        je      1f
        orq     $8, %rbx
1:      movabsq $0x5555555555555555, %rax
        cmpq    %rax, %r8
        je      1f
        orq     $16, %rbx
1:      movabsq $0x6666666666666666, %rax
        cmpq    %rax, %r9
        je      1f
        orq     $32, %rbx
1:      movabsq $0x7777777777777777, %rax
        cmpq    %rax, %r10
        je      1f
        orq     $64, %rbx
1:      movabsq $0x1234567812345678, %rax
        cmpq    %rax, %r11
        je      1f
        orq     $128, %rbx
1:
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        pcmpeqb pattern+16*\n(%rip), %xmm\n
        pmovmskb %xmm\n, %ecx
        cmpl    $0xffff, %ecx
        je      1f
        btsq    $(8+\n), %rbx
1:
        .endr
        movq    %rbx, %rax
        popq    %rbx
        ret
        .size   compare_patterns, .-compare_patterns

        .section .rodata
        .p2align 4
pattern:
        .irp    n, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16
        .quad   \n * 0x0101010101010101, \n * 0x0203040506070809
        .endr
upper:
        .irp    n, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16
        .quad   \n * 0x1010101010101010, \n * 0x0908070605040302
        .endr
        .section .note.GNU-stack,"",@progbits
