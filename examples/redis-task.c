/* SPDX-License-Identifier: MIT */
/*
 * redis-task: a Redis-protocol server for a subset of commands, written
 * with a task per connection: the protocol reads as the protocol.
 *
 *   usage: redis-task [PORT]     (default 6379; 0 = any free port)
 *
 * Commands: PING [message], SET key value, GET key, DEL key [key ...],
 * as RESP arrays (what redis-cli and redis-benchmark send) or inline
 * ("SET k v" on a line), pipelined or not; CONFIG GET answers an empty
 * list (redis-benchmark asks).  Anything else: -ERR.  Replies are fed
 * (iou_feed) and drained when no request is left buffered, so a pipeline
 * of N requests costs one send.
 *
 * Prints "listening on 127.0.0.1:PORT"; SIGINT/SIGTERM shut down with a
 * 10 s grace.  Exit status: 0 after a shutdown, 1 when it cannot run, 2 on
 * bad usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iou.h"

#define LINE_MAX_BYTES 4096      /* an inline command, a "*N" or "$N" line */
#define BULK_MAX (1024 * 1024)   /* one argument */
#define ARGS_MAX 64
#define ARGS_SPACE 1024          /* per connection, for small arguments */
#define GRACE_MS 10000

/* ---- the key space: a chained hash table -------------------------------- */

struct entry {
	struct entry *next;
	size_t klen, vlen;
	char *val;
	char key[];
};

static struct entry **table;
static size_t nbuckets = 1024, nentries;

static uint64_t hash(const char *p, size_t n)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */

	while (n--)
		h = (h ^ (unsigned char)*p++) * 1099511628211ull;
	return h;
}

static struct entry **find(const char *k, size_t klen)
{
	struct entry **e = &table[hash(k, klen) & (nbuckets - 1)];

	for (; *e; e = &(*e)->next)
		if ((*e)->klen == klen && !memcmp((*e)->key, k, klen))
			break;
	return e;
}

static void grow(void)
{
	size_t n = nbuckets * 2;
	struct entry **t = calloc(n, sizeof(*t));

	if (!t)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < nbuckets; i++) {
		for (struct entry *e = table[i], *next; e; e = next) {
			size_t b = hash(e->key, e->klen) & (n - 1);

			next = e->next;
			e->next = t[b];
			t[b] = e;
		}
	}
	free(table);
	table = t;
	nbuckets = n;
}

static int set(const char *k, size_t klen, const char *v, size_t vlen)
{
	struct entry **pe = find(k, klen), *e = *pe;
	char *val = malloc(vlen ? vlen : 1);

	if (!val)
		return -ENOMEM;
	memcpy(val, v, vlen);
	if (!e) {
		e = malloc(sizeof(*e) + klen);
		if (!e) {
			free(val);
			return -ENOMEM;
		}
		memcpy(e->key, k, klen);
		e->klen = klen;
		e->next = NULL;
		*pe = e;
		if (++nentries > nbuckets)
			grow();
	} else {
		free(e->val);
	}
	e->val = val;
	e->vlen = vlen;
	return 0;
}

static int del(const char *k, size_t klen)
{
	struct entry **pe = find(k, klen), *e = *pe;

	if (!e)
		return 0;
	*pe = e->next;
	free(e->val);
	free(e);
	nentries--;
	return 1;
}

/* ---- one connection ----------------------------------------------------- */

struct args {
	int n;
	char *v[ARGS_MAX];
	size_t len[ARGS_MAX];
	char *bulk[ARGS_MAX];   /* malloc'ed arguments, NULL for the others */
	size_t used;            /* bytes of `space` in use */
	char space[ARGS_SPACE]; /* small arguments: no malloc per argument */
};

/* Room for an argument of n bytes: in `space` while it lasts. */
static char *arg_room(struct args *a, size_t n)
{
	if (n <= sizeof(a->space) - a->used) {
		a->bulk[a->n] = NULL;
		a->used += n;
		return a->space + a->used - n;
	}
	return a->bulk[a->n] = malloc(n);
}

static void args_free(struct args *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->bulk[i]);
	a->n = 0;
	a->used = 0;
}

static int feed_fmt(iou_stream *s, const char *fmt, long long v)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), fmt, v);

	return iou_feed(s, buf, (size_t)n);
}

static int reply_bulk(iou_stream *s, const char *p, size_t n)
{
	int ret = feed_fmt(s, "$%lld\r\n", (long long)n);

	if (ret == 0)
		ret = iou_feed(s, p, n);
	return ret ? ret : iou_feed(s, "\r\n", 2);
}

static int cmd_is(const struct args *a, const char *name)
{
	return strlen(name) == a->len[0] && !strncasecmp(a->v[0], name, a->len[0]);
}

static int execute(iou_stream *s, const struct args *a)
{
	char err[96];

	if (cmd_is(a, "PING") && a->n <= 2)
		return a->n == 2 ? reply_bulk(s, a->v[1], a->len[1])
				 : iou_feed(s, "+PONG\r\n", 7);
	if (cmd_is(a, "SET") && a->n == 3) {
		if (set(a->v[1], a->len[1], a->v[2], a->len[2]) < 0)
			return iou_feed(s, "-ERR out of memory\r\n", 20);
		return iou_feed(s, "+OK\r\n", 5);
	}
	if (cmd_is(a, "GET") && a->n == 2) {
		struct entry *e = *find(a->v[1], a->len[1]);

		return e ? reply_bulk(s, e->val, e->vlen)
			 : iou_feed(s, "$-1\r\n", 5);
	}
	if (cmd_is(a, "DEL") && a->n >= 2) {
		long long n = 0;

		for (int i = 1; i < a->n; i++)
			n += del(a->v[i], a->len[i]);
		return feed_fmt(s, ":%lld\r\n", n);
	}
	if (cmd_is(a, "CONFIG"))
		return iou_feed(s, "*0\r\n", 4);
	snprintf(err, sizeof(err), "-ERR unknown command or wrong arguments '%.*s'\r\n",
		 (int)(a->len[0] < 32 ? a->len[0] : 32), a->v[0]);
	return iou_feed(s, err, strlen(err));
}

/* "*N" was read: N times "$len" and len bytes plus CRLF.  0 or an error. */
static int read_array(iou_stream *s, const char *line, struct args *a)
{
	long n = strtol(line + 1, NULL, 10);
	char hdr[32];

	if (n < 1 || n > ARGS_MAX)
		return -EPROTO;
	for (; a->n < n; a->n++) {
		ssize_t r = iou_task_read_until(s, hdr, sizeof(hdr), "\r\n", 2, -1);
		long len;

		if (r <= 0)
			return r ? (int)r : -EPROTO;
		len = hdr[0] == '$' ? strtol(hdr + 1, NULL, 10) : -1;
		if (len < 0 || len > BULK_MAX)
			return -EPROTO;
		a->v[a->n] = arg_room(a, (size_t)len + 2);
		if (!a->v[a->n])
			return -ENOMEM;
		a->len[a->n] = (size_t)len;
		r = iou_task_read_exactly(s, a->v[a->n], (size_t)len + 2, -1);
		if (r != len + 2) {
			a->n++; /* args_free() frees it */
			return r < 0 ? (int)r : -EPROTO;
		}
	}
	return 0;
}

/* An inline command: words separated by spaces, in place. */
static void split_inline(char *line, size_t n, struct args *a)
{
	char *p = line, *end = line + n;

	while (p < end && a->n < ARGS_MAX) {
		char *w;

		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		for (w = p; p < end && *p != ' '; p++)
			;
		a->v[a->n] = w;
		a->len[a->n] = (size_t)(p - w);
		a->bulk[a->n++] = NULL;
	}
}

static void client(iou_stream *s, void *ud)
{
	char line[LINE_MAX_BYTES];
	struct args a = { 0 };
	ssize_t n;

	(void)ud;
	for (;;) {
		/* Nothing more buffered: the replies so far go out together. */
		if (!iou_buffered(s) && iou_fed(s) && iou_task_drain(s, -1) < 0)
			break;
		n = iou_task_read_until(s, line, sizeof(line), "\n", 1, -1);
		if (n <= 0)
			break; /* end of file, error, or a line too long */
		n -= n >= 2 && line[n - 2] == '\r' ? 2 : 1;
		if (line[0] == '*') {
			int ret = read_array(s, line, &a);

			if (ret < 0) {
				args_free(&a);
				break;
			}
		} else {
			split_inline(line, (size_t)n, &a);
		}
		if (a.n && execute(s, &a) < 0) {
			args_free(&a);
			break;
		}
		args_free(&a);
	}
	iou_task_drain(s, 1000); /* what was answered before the end */
}

/* ---- the server --------------------------------------------------------- */

struct app {
	iou_server *srv;
	iou_signal *sigint, *sigterm;
};

static void on_done(iou_server *srv, uint64_t finished, uint64_t cut, void *ud)
{
	struct app *a = ud;

	(void)srv;
	(void)finished;
	(void)cut;
	iou_signal_stop(a->sigint);
	iou_signal_stop(a->sigterm);
}

static void on_signal(iou_signal *sig, int signo, void *ud)
{
	struct app *a = ud;

	(void)sig;
	(void)signo;
	if (a->srv && iou_server_shutdown(a->srv, GRACE_MS, on_done, a) == 0)
		a->srv = NULL;
}

int main(int argc, char **argv)
{
	struct app a = { 0 };
	struct iou_server_opts o;
	iou_loop *loop;
	unsigned long port = 6379;
	char *end;
	int ret;

	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: redis-task [PORT]\n");
		return 2;
	}
	if (argc == 2) {
		errno = 0;
		port = strtoul(argv[1], &end, 10);
		if (errno || end == argv[1] || *end || port > 65535) {
			fprintf(stderr, "redis-task: bad port '%s': want 0..65535\n",
				argv[1]);
			return 2;
		}
	}
	table = calloc(nbuckets, sizeof(*table));
	if (!table)
		return 1;
	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "redis-task: cannot create the event loop: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_server_opts_init(&o);
	o.port = (uint16_t)port;
	ret = iou_task_server_start(loop, &o, client, NULL, NULL, &a.srv);
	if (ret < 0) {
		fprintf(stderr, "redis-task: cannot listen on 127.0.0.1 port %lu: %s\n",
			port, iou_strerror(ret));
		return 1;
	}
	ret = iou_signal_start(loop, SIGINT, on_signal, &a, &a.sigint);
	if (ret == 0)
		ret = iou_signal_start(loop, SIGTERM, on_signal, &a, &a.sigterm);
	if (ret < 0) {
		fprintf(stderr, "redis-task: cannot watch signals: %s\n",
			iou_strerror(ret));
		return 1;
	}
	printf("listening on 127.0.0.1:%u\n", (unsigned)iou_server_port(a.srv));
	fflush(stdout);
	ret = iou_loop_run(loop);
	if (ret < 0) {
		fprintf(stderr, "redis-task: event loop failed: %s\n",
			iou_strerror(ret));
		return 1;
	}
	iou_loop_destroy(loop);
	for (size_t i = 0; i < nbuckets; i++)
		while (table[i])
			del(table[i]->key, table[i]->klen);
	free(table);
	return 0;
}
