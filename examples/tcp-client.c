/* SPDX-License-Identifier: MIT */
/*
 * tcp-client: send one message, print what comes back.
 *
 *   usage: tcp-client HOST PORT MESSAGE
 *
 * The TCP-client example of the Python library iou mirrors, side by side:
 *
 *   Python (aio)                                  C (iou)
 *   async with await open_tcp_stream(host, port)  iou_tcp_connect(loop, host, port, ...)
 *           as s:                                 on_connected(s, res, ud)
 *       await s.write(b"Hello World!!!")          iou_write_all(s, msg, len, ...)
 *       while data := await s.read(1024):         iou_read(s, 1024, on_read, ...)
 *           print(data)                           on_read: fwrite(data, ...); iou_read again
 *   (leaving "async with" closes the stream)      iou_close(s, NULL, NULL)
 *
 * Python waits for the peer to close.  This client also gives up after 1 s
 * without data (a one-shot iou timer, restarted on every read): on expiry
 * it closes the stream, which ends the pending read with -ECANCELED.
 *
 * Exit status: 0 when the exchange ended (peer closed, or 1 s of silence),
 * 1 when the connection failed, 2 on bad usage.
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
	const char *msg;     /* argv: lives until the write callback */
	iou_stream *s;
	iou_timer *silence;  /* NULL when not running */
	int closing;
	int exit_code;
};

static void finish(struct client *c, int exit_code)
{
	if (c->silence) {
		iou_timer_cancel(c->silence);
		c->silence = NULL;
	}
	if (!c->closing) {
		c->closing = 1;
		if (exit_code)
			c->exit_code = exit_code;
		iou_close(c->s, NULL, NULL); /* a pending read ends with -ECANCELED */
	}
}

static void on_silence(iou_timer *t, void *ud)
{
	struct client *c = ud;

	(void)t;
	c->silence = NULL; /* a one-shot timer is freed after this returns */
	finish(c, 0);
}

/* Start the silence timer, or start it over. */
static void restart_silence(struct client *c)
{
	if (c->silence)
		iou_timer_cancel(c->silence);
	c->silence = NULL;
	if (iou_timer_start(iou_stream_loop(c->s), SILENCE_MS, 0, on_silence, c,
			    &c->silence) < 0)
		finish(c, 1);
}

static void on_read(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct client *c = ud;
	int ret;

	if (res <= 0) {
		/* 0: the peer closed.  -ECANCELED: we closed (silence). */
		if (res < 0 && !c->closing)
			fprintf(stderr, "tcp-client: reading: %s\n",
				iou_strerror((int)res));
		finish(c, res < 0 ? 1 : 0);
		return;
	}
	fwrite(data, 1, (size_t)res, stdout);
	fflush(stdout);
	restart_silence(c);
	ret = iou_read(s, 1024, on_read, c);
	if (ret < 0)
		finish(c, 1);
}

static void on_sent(iou_stream *s, ssize_t res, void *ud)
{
	struct client *c = ud;

	(void)s;
	if (res < 0 && !c->closing) {
		fprintf(stderr, "tcp-client: sending: %s\n", iou_strerror((int)res));
		finish(c, 1);
	}
}

static void on_connected(iou_stream *s, int res, void *ud)
{
	struct client *c = ud;
	size_t len = strlen(c->msg);

	if (res < 0) {
		fprintf(stderr, "tcp-client: cannot connect to %s port %u: %s\n",
			c->host, (unsigned)c->port, iou_strerror(res));
		c->exit_code = 1;
		return;
	}
	c->s = s;
	/* A write and a read may be in flight together: send and listen. */
	if (len && iou_write_all(s, c->msg, len, on_sent, c) < 0) {
		finish(c, 1);
		return;
	}
	if (iou_read(s, 1024, on_read, c) < 0) {
		finish(c, 1);
		return;
	}
	restart_silence(c);
}

int main(int argc, char **argv)
{
	struct client c = { 0 };
	struct iou_connect_opts o;
	iou_loop *loop;
	unsigned long port;
	char *end;
	int ret;

	if (argc != 4) {
		fprintf(stderr, "usage: tcp-client HOST PORT MESSAGE\n");
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
	iou_connect_opts_init(&o);
	o.timeout_ms = CONNECT_TIMEOUT_MS;
	ret = iou_tcp_connect(loop, c.host, c.port, &o, on_connected, &c, NULL);
	if (ret < 0) {
		fprintf(stderr, "tcp-client: cannot connect to %s port %u: %s\n",
			c.host, (unsigned)c.port, iou_strerror(ret));
		iou_loop_destroy(loop);
		return 1;
	}
	ret = iou_loop_run(loop); /* until the stream is closed */
	if (ret < 0) {
		fprintf(stderr, "tcp-client: event loop failed: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	return c.exit_code;
}
