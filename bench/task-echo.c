/* SPDX-License-Identifier: MIT */
/*
 * task-echo: an echo server with a task per connection, in one of three
 * styles, to compare what a task's echo costs:
 *
 *   usage: task-echo read|view|forward [PORT]     (default port 8080)
 *
 *   read     iou_task_read() into a 64 KiB stack buffer, iou_task_write_all()
 *   view     iou_task_read_view() (no copy), iou_task_write_all() of the view
 *   forward  iou_task_forward(s, s) (no copy, one call)
 *
 * Drive it with tools/iou-bench; runs until killed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iou.h"

static int mode;

static void echo(iou_stream *s, void *ud)
{
	unsigned char buf[65536];
	const void *p;
	ssize_t n;

	(void)ud;
	for (;;) {
		if (mode == 0) {
			n = iou_task_read(s, buf, sizeof(buf), -1);
			p = buf;
		} else if (mode == 1) {
			n = iou_task_read_view(s, SIZE_MAX, -1, &p);
		} else {
			if (iou_task_forward(s, s, SIZE_MAX, -1) <= 0)
				return;
			continue;
		}
		if (n <= 0 || iou_task_write_all(s, p, (size_t)n, -1) != n)
			return;
	}
}

int main(int argc, char **argv)
{
	struct iou_server_opts o;
	struct iou_task_opts t;
	iou_server *srv;
	iou_loop *loop;

	if (argc < 2 || (strcmp(argv[1], "read") && strcmp(argv[1], "view") &&
			 strcmp(argv[1], "forward"))) {
		fprintf(stderr, "usage: task-echo read|view|forward [PORT]\n");
		return 2;
	}
	mode = !strcmp(argv[1], "read") ? 0 : !strcmp(argv[1], "view") ? 1 : 2;
	if (iou_loop_create(&loop, NULL) < 0)
		return 1;
	iou_server_opts_init(&o);
	o.port = (uint16_t)(argc > 2 ? atoi(argv[2]) : 8080);
	iou_task_opts_init(&t);
	t.stack_size = 128 * 1024; /* room for the 64 KiB buffer */
	if (iou_task_server_start(loop, &o, echo, NULL, &t, &srv) < 0)
		return 1;
	printf("task-echo %s on port %u\n", argv[1], iou_server_port(srv));
	fflush(stdout);
	iou_loop_run(loop);
	return 0;
}
