/* SPDX-License-Identifier: MIT */
/*
 * task-switch: the cost of one context switch of iou's tasks
 * (lib/task_switch.S), ping-ponging between the main stack and a
 * coroutine: N round trips are 2N switches.
 *
 *   usage: task-switch [ROUND_TRIPS]     (default 10 000 000)
 *
 * Prints "switch: X.X ns" (the median of 5 runs).  libaco and
 * Boost.Context publish 9-10 ns per switch on current x86-64.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* lib/task.h (internal; the static library has them) */
void iou__ctx_switch(void **save_sp, void *load_sp);
void *iou__ctx_init(unsigned char *top, void (*fn)(void *), void *arg);

static void *main_sp, *co_sp;

static void co_main(void *arg)
{
	(void)arg;
	for (;;)
		iou__ctx_switch(&co_sp, main_sp);
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	size_t size = 64 * 1024;
	unsigned char *stack = malloc(size);
	double runs[5];

	if (n < 1 || !stack) {
		fprintf(stderr, "usage: task-switch [ROUND_TRIPS]\n");
		return 2;
	}
	co_sp = iou__ctx_init(stack + size, co_main, NULL);
	for (int r = 0; r < 5; r++) {
		double t0 = now_ns();

		for (long i = 0; i < n; i++)
			iou__ctx_switch(&main_sp, co_sp);
		runs[r] = (now_ns() - t0) / (2.0 * (double)n);
	}
	qsort(runs, 5, sizeof(runs[0]), cmp);
	printf("switch: %.1f ns (median of 5 x %ld round trips)\n", runs[2], n);
	free(stack);
	return 0;
}
