/* SPDX-License-Identifier: MIT */
/*
 * http-get: fetch one resource over HTTP/1.1 with iou's buffered reads.
 *
 *   usage: http-get HOST PORT [PATH]
 *
 * The buffered-stream example of the Python library iou mirrors.  Each
 * await becomes a call plus the callback that carries on from there; what
 * Python keeps in local variables lives in struct get:
 *
 *   Python (aio)                               C (iou)                            continues in
 *   s = await open_tcp_stream(host, 80)        iou_tcp_connect(loop, host, ...)   on_connected
 *   await s.write_all(b"GET / HTTP/1.1...")    iou_write_all(s, g->req, ...)      on_sent
 *   status = await s.read_until(b"\r\n")       iou_read_until(s, "\r\n", ...)     on_status
 *                                              iou_peek(s, 2, ...)                on_header_start
 *   headers = await s.read_until(b"\r\n\r\n")  iou_read_until(s, "\r\n\r\n", ...) on_headers
 *   body = await s.read_exactly(size=n)        iou_read_exactly(s, n, ...)        on_body
 *
 * (The peek tells an empty header section, which the Python version misses:
 * its blank line alone holds no "\r\n\r\n".  The body is read in pieces of
 * at most CHUNK bytes: one read_exactly can ask for no more than the stream
 * buffers, max_buffered.)
 *
 * Prints the status line (without its CRLF) and a newline on stdout, then
 * the body bytes exactly as received.  The body must be framed by
 * Content-Length (chunked and close-delimited bodies are not supported).
 *
 * Exit status: 0 on a 2xx status with the whole body, 1 otherwise (with a
 * one-line message on stderr unless the status alone says why), 2 on bad
 * usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iou.h"

#define HEAD_MAX (64 * 1024) /* status line, and the whole header section */
#define CHUNK (64 * 1024)    /* body read size: must not exceed max_buffered */
#define CONNECT_TIMEOUT_MS 10000

struct get {
	const char *host;
	uint16_t port;
	char *req;            /* the request: lives until on_sent ran */
	iou_stream *s;
	int status;           /* HTTP status code, 0 until the status line */
	unsigned long long length, got;
	int exit_code;
};

static void usage(void)
{
	fprintf(stderr, "usage: http-get HOST PORT [PATH]\n");
	exit(2);
}

/* End the exchange: closing the stream leaves the loop without work, so
 * iou_loop_run() in main() returns once the close completed. */
static void finish(struct get *g, int exit_code)
{
	g->exit_code = exit_code;
	iou_close(g->s, NULL, NULL);
}

/* err 0: a read met a clean end of file (nothing of the next part had
 * arrived); IOU_EINCOMPLETE: the server closed inside it. */
static void fail(struct get *g, const char *what, int err)
{
	fprintf(stderr, "http-get: %s: %s\n", what,
		err ? iou_strerror(err) : "the server closed the connection");
	finish(g, 1);
}

/* The value of the first Content-Length header in h[0..len), matched
 * without regard to case.  Returns 1 found, 0 missing, -1 malformed. */
static int content_length(const char *h, size_t len,
			  unsigned long long *out)
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

static void read_body(struct get *g);

static void on_body(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct get *g = ud;

	if (res == -IOU_EINCOMPLETE || res == 0) {
		/* The peer closed early; what did arrive is still buffered. */
		char buf[4096];
		ssize_t n;

		while ((n = iou_take_buffer(s, buf, sizeof(buf))) > 0) {
			fwrite(buf, 1, (size_t)n, stdout);
			g->got += (unsigned long long)n;
		}
		fprintf(stderr, "http-get: short body: the server closed after %llu of %llu bytes\n",
			g->got, g->length);
		finish(g, 1);
		return;
	}
	if (res < 0) {
		fail(g, "reading the body", (int)res);
		return;
	}
	fwrite(data, 1, (size_t)res, stdout); /* data is ours only until we return */
	g->got += (unsigned long long)res;
	read_body(g);
}

static void read_body(struct get *g)
{
	unsigned long long left = g->length - g->got;
	int ret;

	if (left == 0) {
		finish(g, g->status >= 200 && g->status <= 299 ? 0 : 1);
		return;
	}
	ret = iou_read_exactly(g->s, left < CHUNK ? (size_t)left : CHUNK,
			       on_body, g);
	if (ret < 0)
		fail(g, "reading the body", ret);
}

static void on_headers(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct get *g = ud;
	int found;

	(void)s;
	if (res == -IOU_EOVERFLOW) {
		fprintf(stderr, "http-get: header section longer than %d bytes\n",
			HEAD_MAX);
		finish(g, 1);
		return;
	}
	if (res <= 0) {
		fail(g, "reading the headers", (int)res);
		return;
	}
	found = content_length(data, (size_t)res, &g->length);
	if (found <= 0) {
		fprintf(stderr, "http-get: %s Content-Length header\n",
			found ? "malformed" : "no");
		finish(g, 1);
		return;
	}
	read_body(g);
}

static void on_header_start(iou_stream *s, ssize_t res, const void *data,
			    void *ud)
{
	struct get *g = ud;
	int ret;

	if (res <= 0) {
		fail(g, "reading the headers", (int)res);
		return;
	}
	if (memcmp(data, "\r\n", 2) == 0) {
		fprintf(stderr, "http-get: no Content-Length header\n");
		finish(g, 1);
		return;
	}
	ret = iou_read_until(s, "\r\n\r\n", 4, HEAD_MAX, on_headers, g);
	if (ret < 0)
		fail(g, "reading the headers", ret);
}

static void on_status(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct get *g = ud;
	const char *line = data;
	size_t len;
	int ret;

	if (res == -IOU_EOVERFLOW) {
		fprintf(stderr, "http-get: status line longer than %d bytes\n",
			HEAD_MAX);
		finish(g, 1);
		return;
	}
	if (res <= 0) {
		fail(g, "reading the status line", (int)res);
		return;
	}
	len = (size_t)res - 2; /* without the CRLF */
	fwrite(line, 1, len, stdout);
	putchar('\n');
	/* "HTTP/1.1 200 OK": the code is the three digits after the space. */
	if (len >= 12 && memcmp(line, "HTTP/", 5) == 0) {
		const char *sp = memchr(line, ' ', len);

		if (sp && sp + 4 <= line + len && sp[1] >= '1' && sp[1] <= '9' &&
		    sp[2] >= '0' && sp[2] <= '9' && sp[3] >= '0' && sp[3] <= '9')
			g->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 +
				    (sp[3] - '0');
	}
	if (!g->status) {
		fprintf(stderr, "http-get: not an HTTP status line\n");
		finish(g, 1);
		return;
	}
	/* The header section may be empty: then the next bytes are the blank
	 * line, and "\r\n\r\n" would never come. */
	ret = iou_peek(s, 2, on_header_start, g);
	if (ret < 0)
		fail(g, "reading the headers", ret);
}

static void on_sent(iou_stream *s, ssize_t res, void *ud)
{
	struct get *g = ud;
	int ret;

	free(g->req); /* the kernel is done with it */
	g->req = NULL;
	if (res < 0) {
		fail(g, "sending the request", (int)res);
		return;
	}
	ret = iou_read_until(s, "\r\n", 2, HEAD_MAX, on_status, g);
	if (ret < 0)
		fail(g, "reading the status line", ret);
}

static void on_connected(iou_stream *s, int res, void *ud)
{
	struct get *g = ud;
	int ret;

	if (res < 0) {
		fprintf(stderr, "http-get: cannot connect to %s port %u: %s\n",
			g->host, (unsigned)g->port, iou_strerror(res));
		g->exit_code = 1;
		return;
	}
	g->s = s;
	/* The buffer must stay valid until on_sent runs. */
	ret = iou_write_all(s, g->req, strlen(g->req), on_sent, g);
	if (ret < 0) {
		free(g->req);
		g->req = NULL;
		fail(g, "sending the request", ret);
	}
}

int main(int argc, char **argv)
{
	struct get g = { .exit_code = 1 };
	struct iou_connect_opts o;
	const char *path = argc > 3 ? argv[3] : "/";
	iou_loop *loop;
	unsigned long port;
	char *end;
	int ret;

	if (argc < 3 || argc > 4)
		usage();
	g.host = argv[1];
	errno = 0;
	port = strtoul(argv[2], &end, 10);
	if (errno || end == argv[2] || *end || argv[2][0] == '-' ||
	    port < 1 || port > 65535) {
		fprintf(stderr, "http-get: bad port '%s': want 1..65535\n", argv[2]);
		usage();
	}
	g.port = (uint16_t)port;
	/* No spaces or line breaks: they would change the request's meaning. */
	if (!*g.host || strpbrk(g.host, " \t\r\n") || path[0] != '/' ||
	    strpbrk(path, " \t\r\n")) {
		fprintf(stderr, "http-get: bad host or path (PATH starts with '/')\n");
		usage();
	}
	if (asprintf(&g.req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		     path, g.host) < 0) {
		fprintf(stderr, "http-get: out of memory\n");
		return 1;
	}

	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "http-get: cannot create the event loop: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_connect_opts_init(&o);
	o.timeout_ms = CONNECT_TIMEOUT_MS; /* covers the name look-up too */
	ret = iou_tcp_connect(loop, g.host, g.port, &o, on_connected, &g, NULL);
	if (ret < 0) {
		fprintf(stderr, "http-get: cannot connect to %s port %u: %s\n",
			g.host, (unsigned)g.port, iou_strerror(ret));
		iou_loop_destroy(loop);
		free(g.req);
		return 1;
	}
	ret = iou_loop_run(loop); /* until the stream is closed */
	if (ret < 0) {
		fprintf(stderr, "http-get: event loop failed: %s\n", iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	free(g.req); /* still ours if the connect failed */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "http-get: writing to stdout: %s\n", strerror(errno));
		return 1;
	}
	return g.exit_code;
}
