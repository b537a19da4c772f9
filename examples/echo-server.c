/* SPDX-License-Identifier: MIT */
/*
 * echo-server: a TCP echo server on iou, the simple way.
 *
 *   usage: echo-server [PORT]      (default 8080; 0 = any free port)
 *
 * The echo-server example of the Python library iou mirrors, side by side:
 *
 *   Python (aio)                                C (iou)
 *   async def echo(socket):                     on_connection(srv, s, peer, ud)
 *       logging.info("client %s:%d connected")  iou_sockaddr_text(peer, ...); fprintf
 *       data = await sock_recv(socket, 1024)    iou_read(s, 1024, ...), then on_read
 *       await sock_sendall(socket, data)        iou_write_all(s, copy, ...), then on_sent
 *   await start_tcp_server("127.0.0.1", 8080,   iou_server_start(loop, &o, on_connection, ...)
 *           echo, graceful_shutdown=10.0)       signal: iou_server_shutdown(srv, 10000, ...)
 *
 * Unlike Python's handler, which echoes once, each connection echoes until
 * the client closes.  Read data is valid only during the read callback, so
 * it is copied into the connection's buffer, which then must live until the
 * write callback; one read or one write is in flight per connection, so one
 * buffer is enough.  (tools/iou-echo does the same without the copy, with
 * iou_forward().)
 *
 * Signals: no iou function may be called from a signal handler, so
 * SIGINT and SIGTERM come as loop callbacks (iou_signal_start()), which
 * start the shutdown.  A second signal ends the process at once.
 *
 * Exit status: 0 after a graceful shutdown, 1 when it cannot run, 2 on bad
 * usage, 128 + the signal's number after a second signal (130: SIGINT,
 * 143: SIGTERM).
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iou.h"

#define GRACE_MS 10000

struct conn {
	char buf[1024]; /* the bytes being echoed, until on_sent */
};

static void on_closed(iou_stream *s, void *ud)
{
	(void)s;
	free(ud); /* the stream is freed by iou when this returns */
}

static void echo_next(iou_stream *s, struct conn *c);

static void on_sent(iou_stream *s, ssize_t res, void *ud)
{
	struct conn *c = ud;

	if (res < 0) { /* reset by the peer, or -ECANCELED: cut by shutdown */
		iou_close(s, on_closed, c);
		return;
	}
	echo_next(s, c);
}

static void on_read(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct conn *c = ud;

	if (res <= 0) { /* 0: the client closed; < 0: an error */
		iou_close(s, on_closed, c);
		return;
	}
	memcpy(c->buf, data, (size_t)res); /* data is gone once we return */
	if (iou_write_all(s, c->buf, (size_t)res, on_sent, c) < 0)
		iou_close(s, on_closed, c);
}

static void echo_next(iou_stream *s, struct conn *c)
{
	if (iou_read(s, sizeof(c->buf), on_read, c) < 0)
		iou_close(s, on_closed, c);
}

static void on_connection(iou_server *srv, iou_stream *s,
			  const struct sockaddr *peer, void *ud)
{
	struct conn *c;
	char host[INET6_ADDRSTRLEN];
	uint16_t port;

	(void)srv;
	(void)ud;
	if (iou_sockaddr_text(peer, host, sizeof(host), &port) == 0)
		fprintf(stderr, "client %s:%u connected\n", host, (unsigned)port);
	c = malloc(sizeof(*c));
	if (!c) {
		iou_close(s, NULL, NULL);
		return;
	}
	echo_next(s, c);
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
	/* The watchers alone would not keep iou_loop_run() going, but the
	 * loop can only be destroyed once they are stopped. */
	iou_signal_stop(a->sigint);
	iou_signal_stop(a->sigterm);
}

/* SIGINT or SIGTERM, on the loop's thread. */
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
		fprintf(stderr, "usage: echo-server [PORT]\n");
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
	ret = iou_server_start(loop, &o, on_connection, NULL, &a.srv);
	if (ret < 0) {
		fprintf(stderr, "echo-server: cannot listen on 127.0.0.1 port %lu: %s\n",
			port, iou_strerror(ret));
		iou_loop_destroy(loop);
		return 1;
	}
	/* The signals are blocked from here on (this program has no other
	 * threads, which would have to block them too). */
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

	/* Runs until the shutdown closed the server and every connection,
	 * and the watchers stopped. */
	ret = iou_loop_run(loop);
	if (ret < 0) {
		fprintf(stderr, "echo-server: event loop failed: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	return 0;
}
