/* SPDX-License-Identifier: MIT */
/*
 * http-get-task: http-get written as a task, in straight lines.
 *
 *   usage: http-get-task HOST PORT [PATH]
 *
 * The buffered-stream example of the Python library iou mirrors, one call
 * per await (examples/http-get.c is the same program with callbacks):
 *
 *   Python (aio)                               C (iou task)
 *   s = await open_tcp_stream(host, 80)        iou_task_connect(host, 80, ..., &s)
 *   await s.write_all(b"GET / HTTP/1.1...")    iou_task_write_all(s, req, len, -1)
 *   status = await s.read_until(b"\r\n")       iou_task_read_until(s, buf, cap, "\r\n", 2, -1)
 *   headers = await s.read_until(b"\r\n\r\n")  iou_task_read_until(s, buf, cap, "\r\n\r\n", 4, -1)
 *   body = await s.read_exactly(size=n)        iou_task_read(s, buf, left, -1) until n
 *
 * Same output, messages and exit status as http-get: 0 on a 2xx status
 * with the whole body, 1 otherwise, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iou.h"

#define HEAD_MAX (64 * 1024)
#define CONNECT_TIMEOUT_MS 10000

struct get {
	const char *host;
	uint16_t port;
	const char *path;
	int exit_code;
};

static void usage(void)
{
	fprintf(stderr, "usage: http-get-task HOST PORT [PATH]\n");
	exit(2);
}

/* err 0: the server closed before the part; else why the read failed. */
static int fail(const char *what, ssize_t err)
{
	fprintf(stderr, "http-get: %s: %s\n", what,
		err ? iou_strerror((int)err) : "the server closed the connection");
	return 1;
}

/* The value of the first Content-Length header in h[0..len), matched
 * without regard to case.  Returns 1 found, 0 missing, -1 malformed. */
static int content_length(const char *h, size_t len, unsigned long long *out)
{
	static const char name[] = "content-length:";
	const char *end = h + len, *eol;

	for (; h < end; h = eol + 2) {
		unsigned long long v = 0;
		int digits = 0;

		eol = memmem(h, (size_t)(end - h), "\r\n", 2);
		if (!eol)
			eol = end;
		if ((size_t)(eol - h) < sizeof(name) - 1 ||
		    strncasecmp(h, name, sizeof(name) - 1) != 0)
			continue;
		h += sizeof(name) - 1;
		while (h < eol && (*h == ' ' || *h == '\t'))
			h++;
		for (; h < eol && *h >= '0' && *h <= '9'; h++, digits++) {
			if (v > (~0ULL - 9) / 10)
				return -1;
			v = v * 10 + (unsigned)(*h - '0');
		}
		while (h < eol && (*h == ' ' || *h == '\t'))
			h++;
		if (!digits || h != eol)
			return -1;
		*out = v;
		return 1;
	}
	return 0;
}

/* The three digits after the first space of "HTTP/1.1 200 OK", or 0. */
static int status_code(const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len);

	if (len < 12 || memcmp(line, "HTTP/", 5) != 0 || !sp ||
	    sp + 4 > line + len || sp[1] < '1' || sp[1] > '9' ||
	    sp[2] < '0' || sp[2] > '9' || sp[3] < '0' || sp[3] > '9')
		return 0;
	return (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
}

static int get(struct get *g, iou_stream *s, char *buf)
{
	unsigned long long length, got = 0;
	char *req;
	ssize_t n;
	int status, len, found;

	len = asprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		       g->path, g->host);
	if (len < 0)
		return fail("sending the request", -ENOMEM);
	n = iou_task_write_all(s, req, (size_t)len, -1);
	free(req);
	if (n < 0)
		return fail("sending the request", n);

	n = iou_task_read_until(s, buf, HEAD_MAX, "\r\n", 2, -1);
	if (n == -IOU_EOVERFLOW) {
		fprintf(stderr, "http-get: status line longer than %d bytes\n",
			HEAD_MAX);
		return 1;
	}
	if (n <= 0)
		return fail("reading the status line", n);
	fwrite(buf, 1, (size_t)n - 2, stdout);
	putchar('\n');
	status = status_code(buf, (size_t)n - 2);
	if (!status) {
		fprintf(stderr, "http-get: not an HTTP status line\n");
		return 1;
	}

	/* An empty header section is just the blank line. */
	n = iou_task_peek(s, buf, 2, -1);
	if (n <= 0)
		return fail("reading the headers", n);
	if (memcmp(buf, "\r\n", 2) == 0) {
		fprintf(stderr, "http-get: no Content-Length header\n");
		return 1;
	}
	n = iou_task_read_until(s, buf, HEAD_MAX, "\r\n\r\n", 4, -1);
	if (n == -IOU_EOVERFLOW) {
		fprintf(stderr, "http-get: header section longer than %d bytes\n",
			HEAD_MAX);
		return 1;
	}
	if (n <= 0)
		return fail("reading the headers", n);
	found = content_length(buf, (size_t)n, &length);
	if (found <= 0) {
		fprintf(stderr, "http-get: %s Content-Length header\n",
			found ? "malformed" : "no");
		return 1;
	}

	while (got < length) {
		unsigned long long left = length - got;

		n = iou_task_read(s, buf, left < HEAD_MAX ? (size_t)left : HEAD_MAX, -1);
		if (n == 0) {
			fprintf(stderr, "http-get: short body: the server closed after %llu of %llu bytes\n",
				got, length);
			return 1;
		}
		if (n < 0)
			return fail("reading the body", n);
		fwrite(buf, 1, (size_t)n, stdout);
		got += (unsigned long long)n;
	}
	return status >= 200 && status <= 299 ? 0 : 1;
}

static void main_task(void *arg)
{
	struct get *g = arg;
	struct iou_connect_opts o;
	iou_stream *s;
	char *buf;
	int ret;

	iou_connect_opts_init(&o);
	ret = iou_task_connect(g->host, g->port, &o, CONNECT_TIMEOUT_MS, &s);
	if (ret < 0) {
		fprintf(stderr, "http-get: cannot connect to %s port %u: %s\n",
			g->host, (unsigned)g->port, iou_strerror(ret));
		return;
	}
	buf = malloc(HEAD_MAX);
	g->exit_code = buf ? get(g, s, buf) : fail("reading", -ENOMEM);
	free(buf);
	iou_task_close(s, 1000);
}

int main(int argc, char **argv)
{
	struct get g = { .exit_code = 1 };
	iou_loop *loop;
	unsigned long port;
	char *end;
	int ret;

	if (argc < 3 || argc > 4)
		usage();
	g.host = argv[1];
	g.path = argc > 3 ? argv[3] : "/";
	errno = 0;
	port = strtoul(argv[2], &end, 10);
	if (errno || end == argv[2] || *end || argv[2][0] == '-' ||
	    port < 1 || port > 65535) {
		fprintf(stderr, "http-get: bad port '%s': want 1..65535\n", argv[2]);
		usage();
	}
	g.port = (uint16_t)port;
	if (!*g.host || strpbrk(g.host, " \t\r\n") || g.path[0] != '/' ||
	    strpbrk(g.path, " \t\r\n")) {
		fprintf(stderr, "http-get: bad host or path (PATH starts with '/')\n");
		usage();
	}
	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "http-get: cannot create the event loop: %s\n",
			iou_strerror(ret));
		return 1;
	}
	ret = iou_task_spawn(loop, main_task, &g, NULL, NULL);
	if (ret == 0)
		ret = iou_loop_run(loop); /* until the task has ended */
	if (ret < 0) {
		fprintf(stderr, "http-get: event loop failed: %s\n", iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "http-get: writing to stdout: %s\n", strerror(errno));
		return 1;
	}
	return g.exit_code;
}
