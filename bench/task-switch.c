/* SPDX-License-Identifier: MIT */
/*
 * task-switch: the cost of one context switch of iou's tasks
 * (lib/task_switch.S), ping-ponging between the main stack and a
 * coroutine: N round trips are 2N switches.
 *
 *   usage: task-switch [ROUND_TRIPS]     (default 10 000 000)
 *
 * Two shapes: "flat", the switch called straight from a loop on each side
 * (what libaco and Boost.Context publish, 9-10 ns on current x86-64), and
 * "nested", where each side switches from inside two calls and returns
 * through them, as the library's resume and wait do.  Prints the fastest
 * and the median of 5 runs of each, in ns and in TSC ticks on x86-64 (the
 * TSC counts at the nominal clock, not the core's).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* lib/task.h (internal; the static library has them) */
void iou__ctx_switch(void **save_sp, void *load_sp);
void *iou__ctx_init(unsigned char *top, void (*fn)(void *), void *arg);

#define RUNS 5

static void *main_sp, *co_sp;
static volatile unsigned sink; /* keeps the nested calls real calls */

static void flat_main(void *arg)
{
	(void)arg;
	for (;;)
		iou__ctx_switch(&co_sp, main_sp);
}

static void flat_round_trip(void)
{
	iou__ctx_switch(&main_sp, co_sp);
}

__attribute__((noinline)) static void co_suspend(void)
{
	iou__ctx_switch(&co_sp, main_sp);
	sink++;
}

__attribute__((noinline)) static void co_wait(void)
{
	co_suspend();
	sink++;
}

static void nested_main(void *arg)
{
	(void)arg;
	for (;;)
		co_wait();
}

__attribute__((noinline)) static void resume(void)
{
	iou__ctx_switch(&main_sp, co_sp);
	sink++;
}

__attribute__((noinline)) static void nested_round_trip(void)
{
	resume();
	sink++;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t ticks(void)
{
#if defined(__x86_64__)
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
#else
	return 0;
#endif
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void measure(const char *name, void (*co)(void *),
		    void (*round_trip)(void), unsigned char *stack, size_t size,
		    long n)
{
	double ns[RUNS], tk[RUNS];

	co_sp = iou__ctx_init(stack + size, co, NULL);
	for (int r = 0; r < RUNS; r++) {
		double t0 = now_ns();
		uint64_t k0 = ticks();

		for (long i = 0; i < n; i++)
			round_trip();
		tk[r] = (double)(ticks() - k0) / (2.0 * (double)n);
		ns[r] = (now_ns() - t0) / (2.0 * (double)n);
	}
	qsort(ns, RUNS, sizeof(ns[0]), cmp);
	qsort(tk, RUNS, sizeof(tk[0]), cmp);
	printf("switch %-6s: %.1f ns fastest, %.1f ns median", name, ns[0],
	       ns[RUNS / 2]);
	if (tk[0] > 0)
		printf(" (%.0f / %.0f TSC ticks)", tk[0], tk[RUNS / 2]);
	printf(", %d x %ld round trips\n", RUNS, n);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	size_t size = 64 * 1024;
	unsigned char *stack = malloc(size);

	if (n < 1 || !stack) {
		fprintf(stderr, "usage: task-switch [ROUND_TRIPS]\n");
		return 2;
	}
	measure("flat", flat_main, flat_round_trip, stack, size, n);
	measure("nested", nested_main, nested_round_trip, stack, size, n);
	free(stack);
	return 0;
}
