/* SPDX-License-Identifier: MIT */
/*
 * The context switch of tasks (task.c), for x86-64 and aarch64.
 *
 *   void iou__ctx_switch(void **save_sp, void *load_sp);
 *
 * Pushes the callee-saved registers and the floating-point control words
 * (MXCSR and the x87 control word; FPCR on aarch64) on the current stack,
 * stores the stack pointer in *save_sp, loads load_sp and pops the same
 * frame from there.  Everything else is caller-saved, so a switch is a call
 * as far as the compiler knows.  No signal mask is saved: no syscall, unlike
 * swapcontext().
 *
 * A new task's stack starts with such a frame (task.c builds it) whose
 * return address is iou__ctx_entry and whose first two callee-saved
 * registers hold the entry function and its argument.  iou__ctx_entry
 * marks the return address undefined in its unwind info, so debuggers and
 * backtrace() stop there instead of walking into garbage.
 */

#if defined(__x86_64__)

	.text
	.globl	iou__ctx_switch
	.hidden	iou__ctx_switch
	.type	iou__ctx_switch, @function
	.p2align 4
iou__ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	pushq	$0
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	(%rsp), %rax
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	/* Loading the control words stalls: only when the other side's
	 * differ (a task that changed its rounding mode, say).  MXCSR's
	 * status flags (bits 0-5) are not part of the comparison. */
	xorq	(%rsp), %rax
	testq	$-64, %rax
	jnz	2f
1:	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	/* Not ret: the return predictor holds this side's caller, not the
	 * other stack's, so ret mispredicts on every switch; an indirect
	 * jump is predicted from its own history (25 against 35 ns a switch
	 * inside nested calls, bench/task-switch). */
	popq	%rcx
	jmpq	*%rcx
2:	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	jmp	1b
	.cfi_endproc
	.size	iou__ctx_switch, .-iou__ctx_switch

/* First instruction of a task: r12 = entry function, r13 = its argument;
 * the stack pointer is 16-byte aligned here.  The entry never returns. */
	.globl	iou__ctx_entry
	.hidden	iou__ctx_entry
	.type	iou__ctx_entry, @function
	.p2align 4
iou__ctx_entry:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp
	movq	%r13, %rdi
	callq	*%r12
	ud2
	.cfi_endproc
	.size	iou__ctx_entry, .-iou__ctx_entry

#elif defined(__aarch64__)

	.text
	.globl	iou__ctx_switch
	.hidden	iou__ctx_switch
	.type	iou__ctx_switch, %function
	.p2align 4
iou__ctx_switch:
	.cfi_startproc
	sub	sp, sp, #176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x9, fpcr
	str	x9, [sp, #160]
	mov	x10, sp
	str	x10, [x0]
	mov	sp, x1
	/* Writing FPCR may stall: only when the other side's differs. */
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	ret
	.cfi_endproc
	.size	iou__ctx_switch, .-iou__ctx_switch

/* First instruction of a task: x19 = entry function, x20 = its argument. */
	.globl	iou__ctx_entry
	.hidden	iou__ctx_entry
	.type	iou__ctx_entry, %function
	.p2align 4
iou__ctx_entry:
	.cfi_startproc
	.cfi_undefined x30
	mov	x29, #0
	mov	x0, x20
	blr	x19
	brk	#0
	.cfi_endproc
	.size	iou__ctx_entry, .-iou__ctx_entry

#else
#error "tasks: no context switch for this architecture (x86-64, aarch64)"
#endif

	.section .note.GNU-stack, "", %progbits
