/* SPDX-License-Identifier: MIT */
/*
 * idle-tasks: the memory of N idle tasks, with no sockets: each task sleeps
 * (iou_task_sleep) until cancelled.  For task counts beyond the fd limit,
 * where bench/idle-conns cannot go (each idle connection costs the server
 * and the client one descriptor each).
 *
 *   usage: idle-tasks [-n TASKS] [-s STACK_BYTES]   (default 100000, 64 KiB)
 *
 * Once every task sleeps, prints one line: the process's VmRSS and
 * /proc/self/maps line count before the spawns and after, the RSS growth
 * per task, and the time from the first spawn until all slept.  Then it
 * cancels and joins them all; exits 0, 1 on an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iou.h>

static iou_task **tasks;
static long ntasks;
static long sleeping;
static int failed;
static struct timespec t_start;

static long vmrss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static long maps_lines(void)
{
	long n = 0;
	int c;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return -1;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void sleeper(void *arg)
{
	(void)arg;
	sleeping++;
	iou_task_sleep(3600u * 1000u); /* until cancelled */
}

/* Spawned last: measures once the others sleep, then ends them. */
static void meter(void *arg)
{
	long *before = arg; /* rss kB, maps lines */

	while (sleeping < ntasks)
		if (iou_task_yield() < 0)
			return;
	double ms = ms_since(&t_start);
	long rss = vmrss_kb(), maps = maps_lines();
	printf("tasks %ld rss_before_kB %ld rss_after_kB %ld bytes_per_task %.0f "
	       "maps_before %ld maps_after %ld start_ms %.1f\n",
	       ntasks, before[0], rss, (double)(rss - before[0]) * 1024 / (double)ntasks,
	       before[1], maps, ms);
	fflush(stdout);
	for (long i = 0; i < ntasks; i++)
		iou_task_cancel(tasks[i]);
	for (long i = 0; i < ntasks; i++)
		if (iou_task_join(tasks[i]) < 0)
			failed = 1;
}

int main(int argc, char **argv)
{
	struct iou_task_opts opts;
	iou_loop *loop;
	long before[2];
	int opt, rc;

	iou_task_opts_init(&opts);
	ntasks = 100000;
	while ((opt = getopt(argc, argv, "n:s:h")) != -1) {
		switch (opt) {
		case 'n': ntasks = atol(optarg); break;
		case 's': opts.stack_size = (size_t)atol(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n TASKS] [-s STACK_BYTES]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (ntasks < 1) {
		fprintf(stderr, "idle-tasks: bad task count\n");
		return 2;
	}
	rc = iou_loop_create(&loop, NULL);
	if (rc < 0) {
		fprintf(stderr, "idle-tasks: iou_loop_create: %s\n", strerror(-rc));
		return 1;
	}
	/* resident before the first measure, so it is not counted per task */
	tasks = malloc((size_t)ntasks * sizeof(*tasks));
	if (!tasks)
		return 1;
	memset(tasks, 0, (size_t)ntasks * sizeof(*tasks));

	before[0] = vmrss_kb();
	before[1] = maps_lines();
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	for (long i = 0; i < ntasks; i++) {
		rc = iou_task_spawn(loop, sleeper, NULL, &opts, &tasks[i]);
		if (rc < 0) {
			fprintf(stderr, "idle-tasks: spawn #%ld: %s\n", i, strerror(-rc));
			return 1;
		}
	}
	iou_task *m;
	rc = iou_task_spawn(loop, meter, before, NULL, &m);
	if (rc < 0 || iou_task_detach(m) < 0)
		return 1;
	rc = iou_loop_run(loop);
	if (rc < 0) {
		fprintf(stderr, "idle-tasks: iou_loop_run: %s\n", strerror(-rc));
		return 1;
	}
	iou_loop_destroy(loop);
	free(tasks);
	return failed;
}
