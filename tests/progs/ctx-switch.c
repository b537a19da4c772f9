/* SPDX-License-Identifier: MIT */
/*
 * ctx-switch: the context switch of tasks alone (lib/task_switch.S and
 * lib/task_ctx.c, no io_uring), for every architecture it is written for;
 * tests/ctx-switch.sh runs it natively and, built for aarch64, under
 * qemu-user.
 *
 * A coroutine and the main stack switch 1 000 000 times.  Between switches
 * both keep many integer and floating-point values live (the compiler
 * keeps them in callee-saved registers across the call) and each its own
 * FP rounding mode (MXCSR / x87 control word, FPCR): every value and mode
 * must be intact at the end.  backtrace() in the coroutine must end at
 * the entry frame (iou__ctx_entry) rather than walk on into the stack.
 *
 * Exit status: 0 pass, 1 fail (with one line saying what differed).
 */
#include <execinfo.h>
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/task_ctx.h"

#define ROUNDS 1000000L
#define STACK (64 * 1024)

static void *main_sp, *co_sp;
static long co_sum;
static double co_f;
static int co_round, co_done, co_bad_div, co_frames, co_ends_at_entry;
static volatile double one = 1.0, ten = 10.0; /* 1/10: nearest rounds up */

/* Values a compiler keeps in callee-saved registers across the switch. */
static void co_main(void *arg)
{
	volatile long seed = (long)(size_t)arg;
	long a = seed, b = seed * 3, c = seed * 5, d = seed * 7, e = seed * 11,
	     f = seed * 13, g = seed * 17, h = seed * 19;
	double x = 1.0, y = 2.0, z = 3.0, w = 4.0;

	double tenth;
	void *frames[32];

	co_frames = backtrace(frames, 32);
	co_ends_at_entry = co_frames > 0 &&
		(uintptr_t)frames[co_frames - 1] > (uintptr_t)iou__ctx_entry &&
		(uintptr_t)frames[co_frames - 1] < (uintptr_t)iou__ctx_entry + 64;
	fesetround(FE_DOWNWARD);
	tenth = one / ten; /* rounded down: by MXCSR / FPCR, not x87 */
	for (long i = 0; i < ROUNDS; i++) {
		iou__ctx_switch(&co_sp, main_sp);
		if (one / ten != tenth)
			co_bad_div++;
		a += 1; b += 2; c += 3; d += 4; e += 5; f += 6; g += 7; h += 8;
		x += 1.0; y += 0.5; z += 0.25; w += 0.125;
	}
	co_round = fegetround();
	co_sum = a + b + c + d + e + f + g + h;
	co_f = x + y + z + w;
	co_done = 1;
	for (;;)
		iou__ctx_switch(&co_sp, main_sp);
}

int main(void)
{
	unsigned char *stack = malloc(STACK + 64);
	volatile long seed = 5;
	long p = seed, q = seed * 2, r = seed * 4, s = seed * 8;
	double u = 0.5, v = 0.25;
	long want_co = 7 * (1 + 3 + 5 + 7 + 11 + 13 + 17 + 19) +
		       ROUNDS * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8);
	double want_f = 10.0 + ROUNDS * 1.875;
	int bad_round = 0, bad_div = 0;
	double tenth;

	if (!stack)
		return 1;
	fesetround(FE_TONEAREST);
	tenth = one / ten;
	/* Above the stack, as the library's task record is: not zeros, so an
	 * unwinder that went past the entry frame would find garbage. */
	memset(stack + STACK, 0xa5, 64);
	co_sp = iou__ctx_init(stack + STACK, co_main, (void *)(size_t)7);
	for (long i = 0; i <= ROUNDS; i++) {
		iou__ctx_switch(&main_sp, co_sp);
		p -= 1; q -= 2; r -= 3; s -= 4;
		u += 1.0; v += 2.0;
		if (fegetround() != FE_TONEAREST)
			bad_round++;
		if (one / ten != tenth)
			bad_div++;
	}
	if (!co_done) {
		printf("FAIL: the coroutine did not finish its %ld rounds\n", ROUNDS);
		return 1;
	}
	if (bad_round || bad_div || co_bad_div || co_round != FE_DOWNWARD) {
		printf("FAIL: rounding modes mixed: main off %d + %d times, coroutine %d times, %s\n",
		       bad_round, bad_div, co_bad_div,
		       co_round == FE_DOWNWARD ? "ok at the end" : "changed at the end");
		return 1;
	}
	if (co_sum != want_co || co_f != want_f) {
		printf("FAIL: coroutine values: %ld (want %ld), %.3f (want %.3f)\n",
		       co_sum, want_co, co_f, want_f);
		return 1;
	}
	if (p != 5 - (ROUNDS + 1) || q != 10 - 2 * (ROUNDS + 1) ||
	    r != 20 - 3 * (ROUNDS + 1) || s != 40 - 4 * (ROUNDS + 1) ||
	    u != 0.5 + (ROUNDS + 1) || v != 0.25 + 2.0 * (ROUNDS + 1)) {
		printf("FAIL: main's values changed across switches\n");
		return 1;
	}
	if (!co_ends_at_entry || co_frames > 4) {
		printf("FAIL: backtrace in the coroutine: %d frames, %s\n",
		       co_frames, co_ends_at_entry ? "ends at the entry"
						   : "does not end at the entry");
		return 1;
	}
	printf("ok: %ld switches, values and rounding modes intact, backtrace of %d frames ends at the entry\n",
	       2 * ROUNDS, co_frames);
	free(stack);
	return 0;
}
