/* SPDX-License-Identifier: MIT */
/*
 * loop-backend: which backend an iou loop gets here, for make check's
 * passes (one per backend) and its run under tests/progs/no-uring.
 *
 *   usage: loop-backend uring|epoll|auto
 *
 * Creates a loop with that backend (auto: the library's choice, which the
 * environment variable IOU_BACKEND can make), prints iou_loop_backend() on
 * stdout ("io_uring" or "epoll") and destroys it.
 *
 * Exit status: 0 created; 3 IOU_ENOFEATURE, 4 IOU_ENOURING, 1 any other
 * error (each with one line on stdout: "none: IOU_E...: why"); 2 bad usage.
 */
#include <stdio.h>
#include <string.h>

#include "iou.h"

int main(int argc, char **argv)
{
	struct iou_loop_opts o;
	iou_loop *loop;
	int ret;

	iou_loop_opts_init(&o);
	if (argc == 2 && strcmp(argv[1], "uring") == 0) {
		o.backend = IOU_BACKEND_URING;
	} else if (argc == 2 && strcmp(argv[1], "epoll") == 0) {
		o.backend = IOU_BACKEND_EPOLL;
	} else if (argc != 2 || strcmp(argv[1], "auto") != 0) {
		fprintf(stderr, "usage: loop-backend uring|epoll|auto\n");
		return 2;
	}
	o.queue_depth = 8;
	o.buf_count = 8;
	ret = iou_loop_create(&loop, &o);
	if (ret < 0) {
		printf("none: %s: %s\n",
		       ret == -IOU_ENOFEATURE ? "IOU_ENOFEATURE" :
		       ret == -IOU_ENOURING ? "IOU_ENOURING" : "error",
		       iou_strerror(ret));
		return ret == -IOU_ENOFEATURE ? 3 : ret == -IOU_ENOURING ? 4 : 1;
	}
	printf("%s\n", iou_loop_backend(loop));
	iou_loop_destroy(loop);
	return 0;
}
