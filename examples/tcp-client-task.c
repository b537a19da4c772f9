/* SPDX-License-Identifier: MIT */
/*
 * tcp-client-task: tcp-client written as a task.
 *
 *   usage: tcp-client-task HOST PORT MESSAGE
 *
 * The TCP-client example of the Python library iou mirrors, line by line
 * (examples/tcp-client.c is the same program with callbacks):
 *
 *   Python (aio)                                  C (iou task)
 *   async with await open_tcp_stream(host, port)  iou_task_connect(host, port, ..., &s)
 *           as s:
 *       await s.write(b"Hello World!!!")          iou_task_write_all(s, msg, len, -1)
 *       while data := await s.read(1024):         while ((n = iou_task_read(s, buf, 1024,
 *           print(data)                                   SILENCE_MS)) > 0) fwrite(...)
 *   (leaving "async with" closes the stream)      iou_task_close(s, ...)
 *
 * Like tcp-client it also gives up after 1 s without data: here that is
 * the read's deadline.  Exit status: 0 when the exchange ended (peer
 * closed, or 1 s of silence), 1 when the connection failed, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iou.h"

#define SILENCE_MS 1000
#define CONNECT_TIMEOUT_MS 10000

struct client {
	const char *host;
	uint16_t port;
	const char *msg;
	int exit_code;
};

static void client(void *arg)
{
	struct client *c = arg;
	char buf[1024];
	iou_stream *s;
	ssize_t n;
	int ret;

	ret = iou_task_connect(c->host, c->port, NULL, CONNECT_TIMEOUT_MS, &s);
	if (ret < 0) {
		fprintf(stderr, "tcp-client: cannot connect to %s port %u: %s\n",
			c->host, (unsigned)c->port, iou_strerror(ret));
		c->exit_code = 1;
		return;
	}
	n = strlen(c->msg) ? iou_task_write_all(s, c->msg, strlen(c->msg), -1) : 0;
	if (n < 0) {
		fprintf(stderr, "tcp-client: sending: %s\n", iou_strerror((int)n));
		c->exit_code = 1;
	}
	while (n >= 0 && (n = iou_task_read(s, buf, sizeof(buf), SILENCE_MS)) > 0) {
		fwrite(buf, 1, (size_t)n, stdout);
		fflush(stdout);
	}
	if (n < 0 && n != -ETIMEDOUT && !c->exit_code) {
		fprintf(stderr, "tcp-client: reading: %s\n", iou_strerror((int)n));
		c->exit_code = 1;
	}
	iou_task_close(s, 1000);
}

int main(int argc, char **argv)
{
	struct client c = { 0 };
	iou_loop *loop;
	unsigned long port;
	char *end;
	int ret;

	if (argc != 4) {
		fprintf(stderr, "usage: tcp-client-task HOST PORT MESSAGE\n");
		return 2;
	}
	errno = 0;
	port = strtoul(argv[2], &end, 10);
	if (errno || end == argv[2] || *end || argv[2][0] == '-' ||
	    port < 1 || port > 65535) {
		fprintf(stderr, "tcp-client: bad port '%s': want 1..65535\n", argv[2]);
		return 2;
	}
	c.host = argv[1];
	c.port = (uint16_t)port;
	c.msg = argv[3];
	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "tcp-client: cannot create the event loop: %s\n",
			iou_strerror(ret));
		return 1;
	}
	ret = iou_task_spawn(loop, client, &c, NULL, NULL);
	if (ret == 0)
		ret = iou_loop_run(loop); /* until the task has ended */
	if (ret < 0) {
		fprintf(stderr, "tcp-client: event loop failed: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	return c.exit_code;
}
