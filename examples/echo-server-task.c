/* SPDX-License-Identifier: MIT */
/*
 * echo-server-task: echo-server with a task per connection.
 *
 *   usage: echo-server-task [PORT]      (default 8080; 0 = any free port)
 *
 * The echo-server example of the Python library iou mirrors, line by line
 * (examples/echo-server.c is the same program with callbacks):
 *
 *   Python (aio)                                C (iou task)
 *   async def echo(socket):                     static void echo(iou_stream *s, void *ud)
 *       logging.info("client %s:%d connected")  iou_peer_address(s, ...); fprintf
 *       data = await sock_recv(socket, 1024)    n = iou_task_read(s, buf, 1024, -1)
 *       await sock_sendall(socket, data)        iou_task_write_all(s, buf, n, -1)
 *   await start_tcp_server("127.0.0.1", 8080,   iou_task_server_start(loop, &o, echo, ...)
 *           echo, graceful_shutdown=10.0)       signal: iou_server_shutdown(srv, 10000, ...)
 *
 * Each connection echoes until the client closes; the stream is closed
 * when the handler returns.  Signals, messages and exit status as
 * echo-server: 0 after a graceful shutdown, 1 when it cannot run, 2 on bad
 * usage, 128 + the signal's number after a second signal.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "iou.h"

#define GRACE_MS 10000

static void echo(iou_stream *s, void *ud)
{
	char host[INET6_ADDRSTRLEN], buf[1024];
	uint16_t port;
	ssize_t n;

	(void)ud;
	if (iou_peer_address(s, host, sizeof(host), &port) == 0)
		fprintf(stderr, "client %s:%u connected\n", host, (unsigned)port);
	while ((n = iou_task_read(s, buf, sizeof(buf), -1)) > 0)
		if (iou_task_write_all(s, buf, (size_t)n, -1) < 0)
			break;
}

/* ---- graceful shutdown --------------------------------------------------- */

struct app {
	iou_server *srv;
	iou_signal *sigint, *sigterm;
	int shutting_down;
};

static void on_shutdown_done(iou_server *srv, uint64_t finished, uint64_t cut,
			     void *ud)
{
	struct app *a = ud;

	(void)srv;
	fprintf(stderr, "shutdown: %llu connections finished, %llu cut\n",
		(unsigned long long)finished, (unsigned long long)cut);
	iou_signal_stop(a->sigint);
	iou_signal_stop(a->sigterm);
}

static void on_signal(iou_signal *sig, int signo, void *ud)
{
	struct app *a = ud;

	(void)sig;
	if (a->shutting_down) {
		fprintf(stderr, "echo-server: second signal, exiting now\n");
		_exit(128 + signo);
	}
	a->shutting_down = 1;
	fprintf(stderr, "shutting down: waiting up to %d s for clients\n",
		GRACE_MS / 1000);
	iou_server_shutdown(a->srv, GRACE_MS, on_shutdown_done, a);
}

int main(int argc, char **argv)
{
	struct app a = { 0 };
	struct iou_server_opts o;
	iou_loop *loop;
	unsigned long port = 8080;
	char *end;
	int ret;

	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: echo-server-task [PORT]\n");
		return 2;
	}
	if (argc == 2) {
		errno = 0;
		port = strtoul(argv[1], &end, 10);
		if (errno || end == argv[1] || *end || port > 65535) {
			fprintf(stderr, "echo-server: bad port '%s': want 0..65535\n",
				argv[1]);
			return 2;
		}
	}
	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "echo-server: cannot create the event loop: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_server_opts_init(&o);
	o.host = "127.0.0.1";
	o.port = (uint16_t)port;
	ret = iou_task_server_start(loop, &o, echo, NULL, NULL, &a.srv);
	if (ret < 0) {
		fprintf(stderr, "echo-server: cannot listen on 127.0.0.1 port %lu: %s\n",
			port, iou_strerror(ret));
		iou_loop_destroy(loop);
		return 1;
	}
	ret = iou_signal_start(loop, SIGINT, on_signal, &a, &a.sigint);
	if (ret == 0)
		ret = iou_signal_start(loop, SIGTERM, on_signal, &a, &a.sigterm);
	if (ret < 0) {
		fprintf(stderr, "echo-server: cannot watch signals: %s\n",
			iou_strerror(ret));
		return 1;
	}
	printf("listening on 127.0.0.1:%u\n", (unsigned)iou_server_port(a.srv));
	fflush(stdout);
	ret = iou_loop_run(loop);
	if (ret < 0) {
		fprintf(stderr, "echo-server: event loop failed: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	return 0;
}
