/* SPDX-License-Identifier: MIT */
/*
 * check_reads: what a stream's reads and writes promise at the edges:
 * iou_read returns every buffered byte, a clean end of file between
 * messages differs from a truncated message, read_exactly_into streams
 * more than max_buffered into the caller's buffer, write callbacks may be
 * NULL, streams work on Unix-domain sockets, and a feed the stream could
 * never hold is refused, and one read kind after another starts from its
 * own state.  Peers are plain blocking sockets, driven from the
 * test thread or by helper threads (tests/t_stream_peer.h).
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h" /* the buffer pool's address range (zero-copy check) */
#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)
#define JOIN_MS 20000

/* ---- helpers ------------------------------------------------------------ */

/* A loop whose receive buffers are `size` bytes (0: the default). */
static iou_loop *loop_with_bufs(unsigned size)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	if (size)
		o.buf_size = size;
	return t_loop_create_or_skip(&o);
}

/* One read's outcome, with a copy of its bytes. */
struct got {
	ssize_t res;
	int calls;
	const void *data;
	unsigned char bytes[4096];
};

static void got_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct got *g = ud;

	(void)s;
	g->calls++;
	g->res = res;
	g->data = d;
	if (res > 0)
		memcpy(g->bytes, d, (size_t)res < sizeof(g->bytes) ? (size_t)res
								   : sizeof(g->bytes));
}

static void wait_got(iou_loop *loop, struct got *g)
{
	ck_assert_int_eq(tsp_run_until(loop, &g->calls, 5000), 0);
	ck_assert_int_eq(g->calls, 1);
}

/* Run turns until the stream holds `n` bytes (bounded). */
static void wait_buffered(iou_loop *loop, iou_stream *s, size_t n)
{
	for (int i = 0; i < 5000 && iou_buffered(s) < n; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(iou_buffered(s), n);
}

/* Run turns until the peer socket received n bytes into buf (bounded). */
static void peer_recv(iou_loop *loop, int peer, void *buf, size_t n)
{
	uint64_t end = t_now_ms() + 10000;
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(peer, (unsigned char *)buf + got, n - got,
				 MSG_DONTWAIT);

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		ck_assert_msg(r < 0 && errno == EAGAIN, "peer recv: %zd", r);
		ck_assert_msg(t_now_ms() < end, "peer got %zu of %zu bytes",
			      got, n);
		ck_assert_int_ge(tsp_turn(loop), 0);
	}
}

static int in_pool(const iou_loop *loop, const void *p)
{
	const unsigned char *lo = loop->pool.base;
	const unsigned char *hi = lo + (size_t)loop->pool.buf_size *
				       loop->bufs.buf_count;

	return (const unsigned char *)p >= lo && (const unsigned char *)p < hi;
}

/* ======================================================================== */
/* iou_read returns what is buffered                                        */
/* ======================================================================== */

/* Ten bytes from four receives (each waited for, so each lands in its own
 * receive buffer) while no read is pending: one iou_read gets all ten. */
START_TEST(read_returns_every_buffered_byte)
{
	static const char *const piece[] = { "0", "12", "345", "6789" };
	iou_loop *loop = loop_with_bufs(0);
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	size_t have = 0;

	/* a first read starts receiving */
	ck_assert_int_eq(iou_read(s, 1024, got_cb, &g), 0);
	ck_assert_int_eq(send(peer, "a", 1, 0), 1);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 1);
	for (int i = 0; i < 4; i++) {
		size_t len = strlen(piece[i]);

		ck_assert_int_eq(send(peer, piece[i], len, 0), (ssize_t)len);
		have += len;
		wait_buffered(loop, s, have);
	}
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 1024, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_msg(g.res == 10, "iou_read(1024) with 10 bytes buffered from "
		      "4 receives returned %zd", g.res);
	ck_assert_int_eq(memcmp(g.bytes, "0123456789", 10), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	/* bytes spanning buffers were copied together, out of the pool */
	ck_assert(!in_pool(loop, g.data));
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* 1000 bytes in 64-byte buffers: iou_read(600) gets 600 of them, the next
 * iou_read the other 400, in order; a read inside one buffer is a view into
 * the pool, not a copy. */
START_TEST(read_up_to_max_across_small_buffers)
{
	iou_loop *loop = loop_with_bufs(64);
	unsigned char b[1000];
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_fill(b, sizeof(b), 21, 0);
	ck_assert_int_eq(iou_read(s, 10, got_cb, &g), 0);
	ck_assert_int_eq(send(peer, b, 10, 0), 10);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 10);
	ck_assert(in_pool(loop, g.data));

	ck_assert_int_eq(send(peer, b, sizeof(b), 0), (ssize_t)sizeof(b));
	wait_buffered(loop, s, sizeof(b));
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 600, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_msg(g.res == 600, "iou_read(600) with 1000 bytes buffered in "
		      "64-byte buffers returned %zd", g.res);
	ck_assert_int_eq(memcmp(g.bytes, b, 600), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 4096, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 400);
	ck_assert_int_eq(memcmp(g.bytes, b + 600, 400), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* clean end of file vs a truncated message                                 */
/* ======================================================================== */

enum { K_EXACTLY, K_PEEK, K_UNTIL, K_KINDS };

static const char *const kind_name[] = { "read_exactly", "peek",
					 "read_until" };

/* A 4-byte message "ab;\n" (read_until: up to "\n") with `kind`. */
static int read_msg(iou_stream *s, int kind, struct got *g)
{
	switch (kind) {
	case K_EXACTLY:
		return iou_read_exactly(s, 4, got_cb, g);
	case K_PEEK:
		return iou_peek(s, 4, got_cb, g);
	default:
		return iou_read_until(s, "\n", 1, 100, got_cb, g);
	}
}

/* Two whole messages, then end of file: both delivered, then res 0 with
 * data NULL (the peer closed between messages), again on the next read;
 * the stream is still usable for writing. */
START_TEST(clean_eof_between_messages_is_zero)
{
	iou_loop *loop = loop_with_bufs(0);
	int kind = _i;
	struct got g = { 0 };
	unsigned char b[8];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(send(peer, "ab;\ncd;\n", 8, 0), 8);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	for (int i = 0; i < 2; i++) {
		memset(&g, 0, sizeof(g));
		ck_assert_int_eq(read_msg(s, kind, &g), 0);
		wait_got(loop, &g);
		ck_assert_int_eq(g.res, 4);
		ck_assert_int_eq(memcmp(g.bytes, i ? "cd;\n" : "ab;\n", 4), 0);
		if (kind == K_PEEK) /* peeked bytes stay: consume them */
			ck_assert_int_eq(iou_take_buffer(s, b, 4), 4);
	}
	for (int i = 0; i < 2; i++) {
		memset(&g, 0, sizeof(g));
		ck_assert_int_eq(read_msg(s, kind, &g), 0);
		wait_got(loop, &g);
		ck_assert_msg(g.res == 0, "%s at a clean end of file: %zd (%s)",
			      kind_name[kind], g.res, iou_strerror((int)g.res));
		ck_assert_ptr_null(g.data);
	}
	ck_assert_int_eq(iou_write_all(s, "bye", 3, NULL, NULL), 0);
	peer_recv(loop, peer, b, 3);
	ck_assert_int_eq(memcmp(b, "bye", 3), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* A message cut short by end of file: IOU_EINCOMPLETE, data NULL, and the
 * bytes that arrived stay buffered. */
START_TEST(truncated_message_is_incomplete)
{
	iou_loop *loop = loop_with_bufs(0);
	int kind = _i;
	struct got g = { 0 };
	unsigned char b[8];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(send(peer, "ab;\ncd", 6, 0), 6);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(iou_read_exactly(s, 4, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 4);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(read_msg(s, kind, &g), 0);
	wait_got(loop, &g);
	ck_assert_msg(g.res == -IOU_EINCOMPLETE, "%s of a truncated message: "
		      "%zd", kind_name[kind], g.res);
	ck_assert_ptr_null(g.data);
	ck_assert_uint_eq(iou_buffered(s), 2);
	ck_assert_int_eq(iou_take_buffer(s, b, sizeof(b)), 2);
	ck_assert_int_eq(memcmp(b, "cd", 2), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* read_exactly_into: more than max_buffered                                */
/* ======================================================================== */

struct into {
	ssize_t res;
	size_t got;
	int calls;
};

static void into_cb(iou_stream *s, ssize_t res, size_t got, void *ud)
{
	struct into *r = ud;

	(void)s;
	r->calls++;
	r->res = res;
	r->got = got;
}

/* 4 MiB through a stream that buffers at most 64 KiB: byte-exact, and the
 * stream's own buffer never holds more than 64 KiB; then a clean end of
 * file gives 0 with nothing stored. */
START_TEST(read_exactly_into_4mib_through_64kib)
{
	const size_t len = 4 * MiB, max_buf = 64 * KiB;
	iou_loop *loop = loop_with_bufs(0);
	struct iou_stream_opts o;
	struct into r = { 0 };
	struct got g = { 0 };
	struct tsp_peer p;
	unsigned char *buf = malloc(len);
	size_t most = 0;
	uint64_t end;
	iou_stream *s;
	int peer;

	ck_assert_ptr_nonnull(buf);
	iou_stream_opts_init(&o);
	o.max_buffered = max_buf;
	peer = tsp_open_pair(loop, &o, &s);
	ck_assert_int_eq(iou_read_exactly(s, len, got_cb, &g), -EINVAL);
	tsp_send_start(&p, peer, 31, len, 0, 0, TSP_SHUT_WR);
	ck_assert_int_eq(iou_read_exactly_into(s, buf, len, into_cb, &r), 0);
	end = t_now_ms() + 30000;
	while (!r.calls) {
		ck_assert_msg(t_now_ms() < end, "%zu of %zu bytes after 30 s",
			      s->into_got, len);
		ck_assert_int_ge(tsp_turn(loop), 0);
		if (iou_buffered(s) > most)
			most = iou_buffered(s);
	}
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.res, (ssize_t)len);
	ck_assert_uint_eq(r.got, len);
	ck_assert_uint_eq(tsp_mismatch(buf, len, 31, 0), len);
	ck_assert_msg(most <= max_buf, "the stream buffered %zu bytes", most);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);

	memset(&r, 0, sizeof(r));
	ck_assert_int_eq(iou_read_exactly_into(s, buf, 10, into_cb, &r), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.calls, 5000), 0);
	ck_assert_int_eq(r.res, 0);
	ck_assert_uint_eq(r.got, 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* Bytes buffered before the read count first; end of file after some of
 * the bytes is IOU_EINCOMPLETE with `got` saying how many are in buf. */
START_TEST(read_exactly_into_truncated_reports_got)
{
	iou_loop *loop = loop_with_bufs(64);
	unsigned char b[200], out[300];
	struct into r = { 0 };
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_fill(b, sizeof(b), 41, 0);
	ck_assert_int_eq(iou_peek(s, 1, got_cb, &g), 0); /* starts receiving */
	ck_assert_int_eq(send(peer, b, 100, 0), 100);
	wait_got(loop, &g);
	wait_buffered(loop, s, 100);
	memset(out, 0, sizeof(out));
	ck_assert_int_eq(iou_read_exactly_into(s, out, sizeof(out), into_cb, &r), 0);
	ck_assert_int_eq(send(peer, b + 100, 100, 0), 100);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.calls, 5000), 0);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.res, -IOU_EINCOMPLETE);
	ck_assert_uint_eq(r.got, 200);
	ck_assert_int_eq(memcmp(out, b, 200), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* Arguments, one read at a time, and a close while it waits: -ECANCELED
 * with the bytes stored so far. */
START_TEST(read_exactly_into_errors_and_close)
{
	iou_loop *loop = loop_with_bufs(0);
	unsigned char out[100];
	struct into r = { 0 };
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), closed = 0;

	ck_assert_int_eq(iou_read_exactly_into(NULL, out, 1, into_cb, &r), -EINVAL);
	ck_assert_int_eq(iou_read_exactly_into(s, NULL, 1, into_cb, &r), -EINVAL);
	ck_assert_int_eq(iou_read_exactly_into(s, out, 0, into_cb, &r), -EINVAL);
	ck_assert_int_eq(iou_read_exactly_into(s, out, 1, NULL, &r), -EINVAL);
	ck_assert_int_eq(iou_read_exactly_into(s, out, (size_t)SSIZE_MAX + 1,
					       into_cb, &r), -EINVAL);
	ck_assert_int_eq(iou_read_exactly_into(s, out, sizeof(out), into_cb, &r), 0);
	ck_assert_int_eq(iou_read(s, 1, got_cb, &g), -EBUSY);
	ck_assert_int_eq(iou_read_exactly_into(s, out, 1, into_cb, &r), -EBUSY);
	ck_assert_int_eq(send(peer, "hello", 5, 0), 5);
	for (int i = 0; i < 5000 && s->into_got < 5; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(s->into_got, 5);
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(tsp_run_until(loop, &closed, 5000), 0);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.res, -ECANCELED);
	ck_assert_uint_eq(r.got, 5);
	ck_assert_int_eq(memcmp(out, "hello", 5), 0);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* write callbacks may be NULL                                              */
/* ======================================================================== */

static void count_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	(void)s;
	ck_assert_int_gt(res, 0);
	(*(int *)ud)++;
}

/* iou_write, iou_write_all (a large one: several sends) and iou_drain with
 * NULL callbacks, an empty drain too: every byte goes out, in order; the
 * last write's callback runs after all of them. */
START_TEST(writes_with_null_callbacks_go_out_in_order)
{
	const size_t big_len = 300 * KiB;
	iou_loop *loop = loop_with_bufs(0);
	unsigned char *big = malloc(big_len), *want, *store;
	size_t total = 4 + big_len + 6 + 4, off = 0;
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), done = 0;

	want = malloc(total);
	store = malloc(total);
	ck_assert(big && want && store);
	tsp_fill(big, big_len, 51, 0);
	memcpy(want, "one,", 4);
	memcpy(want + 4, big, big_len);
	memcpy(want + 4 + big_len, "three,four", 10);
	tsp_recv_start(&p, peer, total, 0, 0, store, total, TSP_KEEP);
	ck_assert_int_eq(iou_write(s, "one,", 4, NULL, NULL), 0);
	ck_assert_int_eq(iou_write_all(s, big, big_len, NULL, NULL), 0);
	ck_assert_int_eq(iou_drain(s, NULL, NULL), 0); /* nothing fed */
	ck_assert_int_eq(iou_feed(s, "three,", 6), 0);
	ck_assert_int_eq(iou_drain(s, NULL, NULL), 0);
	ck_assert_int_eq(iou_write_all(s, "four", 4, count_write_cb, &done), 0);
	ck_assert_int_eq(tsp_run_until(loop, &done, 10000), 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, total);
	for (; off < total && store[off] == want[off]; off++)
		;
	ck_assert_msg(off == total, "byte %zu of %zu differs", off, total);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(big);
	free(want);
	free(store);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* Unix-domain sockets                                                      */
/* ======================================================================== */

/* Both ends of socketpair(AF_UNIX, SOCK_STREAM) as streams, one with the
 * default options (TCP_NODELAY on), one with keepalive and buffer sizes:
 * bytes both ways, a half close seen as end of file, then close. */
START_TEST(stream_open_unix_socketpair)
{
	iou_loop *loop = loop_with_bufs(0);
	struct iou_stream_opts o;
	struct got g = { 0 };
	iou_stream *a, *b;
	int sv[2], ret, done = 0;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ret = iou_stream_open(loop, sv[0], NULL, &a);
	ck_assert_msg(ret == 0, "iou_stream_open(AF_UNIX, defaults): %d (%s)",
		      ret, iou_strerror(ret));
	iou_stream_opts_init(&o);
	o.keepalive_s = 5;
	o.sndbuf = 64 * KiB;
	o.rcvbuf = 64 * KiB;
	ret = iou_stream_open(loop, sv[1], &o, &b);
	ck_assert_msg(ret == 0, "iou_stream_open(AF_UNIX, keepalive): %d (%s)",
		      ret, iou_strerror(ret));

	ck_assert_int_eq(iou_write_all(a, "ping", 4, count_write_cb, &done), 0);
	ck_assert_int_eq(iou_read_exactly(b, 4, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 4);
	ck_assert_int_eq(memcmp(g.bytes, "ping", 4), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_write_all(b, "pong!", 5, count_write_cb, &done), 0);
	ck_assert_int_eq(iou_read(a, 100, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 5);
	ck_assert_int_eq(memcmp(g.bytes, "pong!", 5), 0);
	ck_assert_int_eq(tsp_run_until_count(loop, &done, 2, 5000), 0);

	ck_assert_int_eq(iou_shutdown(a, SHUT_WR), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(b, 100, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 0);
	tsp_close_and_wait(loop, a);
	tsp_close_and_wait(loop, b);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* feeds the stream can never hold                                          */
/* ======================================================================== */

/* Fed "abc", then a feed of a size it can never hold (_i: SIZE_MAX / 2 + 1,
 * SIZE_MAX, a size whose sum with the 3 bytes wraps, one whose sum passes
 * UINT32_MAX by one): -EINVAL with nothing changed (data is never read),
 * and the stream still feeds, drains and sends. */
START_TEST(feed_too_large_is_einval)
{
	static const size_t bad[] = { SIZE_MAX / 2 + 1, SIZE_MAX, SIZE_MAX - 1,
				      (size_t)UINT32_MAX - 2 };
	iou_loop *loop = loop_with_bufs(0);
	unsigned char small[8] = "xxxxxxx", b[8];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), done = 0, ret;

	ck_assert_int_eq(iou_feed(s, "abc", 3), 0);
	ret = iou_feed(s, small, bad[_i]);
	ck_assert_msg(ret == -EINVAL, "iou_feed(%zu) after 3 bytes: %d (%s)",
		      bad[_i], ret, iou_strerror(ret));
	ck_assert_uint_eq(iou_fed(s), 3);
	ck_assert_int_eq(iou_feed(s, "def", 3), 0);
	ck_assert_uint_eq(iou_fed(s), 6);
	ck_assert_int_eq(iou_drain(s, count_write_cb, &done), 0);
	ck_assert_int_eq(tsp_run_until(loop, &done, 5000), 0);
	peer_recv(loop, peer, b, 6);
	ck_assert_int_eq(memcmp(b, "abcdef", 6), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* Inside a read callback, iou_buffered() no longer counts the bytes that
 * callback got (a peek's stay counted): what the next read will find. */
struct left {
	size_t in_cb;
	ssize_t res;
	int calls;
};

static void left_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct left *l = ud;

	(void)data;
	l->res = res;
	l->in_cb = iou_buffered(s);
	l->calls++;
}

START_TEST(buffered_in_callback_excludes_delivered)
{
	iou_loop *loop = loop_with_bufs(0);
	struct left l = { 0 }, p = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(send(peer, "abcd", 4, 0), 4);
	usleep(20000);
	ck_assert_int_eq(iou_read_exactly(s, 1, left_cb, &l), 0);
	ck_assert_int_eq(tsp_run_until(loop, &l.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(l.res, 1);
	ck_assert_uint_eq(l.in_cb, 3);
	ck_assert_int_eq(iou_peek(s, 2, left_cb, &p), 0);
	ck_assert_int_eq(tsp_run_until(loop, &p.calls, T_TIMEOUT_MS), 0);
	ck_assert_uint_eq(p.in_cb, 3);
	ck_assert_uint_eq(iou_buffered(s), 3);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* one read kind after another                                              */
/* ======================================================================== */

struct fwd {
	ssize_t res;
	int calls;
};

static void fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct fwd *f = ud;

	(void)s;
	f->calls++;
	f->res = res;
}

#define LONG_SEP "--boundary-17-b--" /* longer than the inline separator */

/* The pending read's fields of different kinds share memory: each kind must
 * start from its own state whatever ran before, and a close must release
 * only what the pending kind holds.  read_until with a long separator (a
 * block), a forward, read_until with a short one, read_exactly_into, then a
 * forward that waits (nothing buffered) and is cancelled, a read_until
 * again, and a close under a pending long-separator read_until. */
START_TEST(read_kinds_in_turn)
{
	iou_loop *loop = loop_with_bufs(0);
	unsigned char out[10], fwd_got[8];
	struct into r = { 0 };
	struct got g = { 0 };
	struct fwd f = { 0 };
	iou_stream *s, *t;
	int peer = tsp_open_pair(loop, NULL, &s);
	int tpeer = tsp_open_pair(loop, NULL, &t);
	const char *m1 = "one" LONG_SEP;

	ck_assert_int_eq(iou_read_until(s, LONG_SEP, strlen(LONG_SEP), 1024,
					got_cb, &g), 0);
	ck_assert_int_eq(send(peer, m1, strlen(m1), 0), (ssize_t)strlen(m1));
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, (ssize_t)strlen(m1));
	ck_assert_int_eq(memcmp(g.bytes, m1, strlen(m1)), 0);

	ck_assert_int_eq(send(peer, "forward!", 8, 0), 8);
	wait_buffered(loop, s, 8);
	ck_assert_int_eq(iou_forward(s, t, 8, fwd_cb, &f), 0);
	ck_assert_int_eq(tsp_run_until(loop, &f.calls, 5000), 0);
	ck_assert_int_eq(f.calls, 1);
	ck_assert_int_eq(f.res, 8);
	peer_recv(loop, tpeer, fwd_got, 8);
	ck_assert_int_eq(memcmp(fwd_got, "forward!", 8), 0);

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\r\n", 2, 1024, got_cb, &g), 0);
	ck_assert_int_eq(send(peer, "two\r\n", 5, 0), 5);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 5);
	ck_assert_int_eq(memcmp(g.bytes, "two\r\n", 5), 0);

	ck_assert_int_eq(iou_read_exactly_into(s, out, sizeof(out), into_cb, &r), 0);
	ck_assert_int_eq(send(peer, "0123456789", 10, 0), 10);
	ck_assert_int_eq(tsp_run_until(loop, &r.calls, 5000), 0);
	ck_assert_int_eq(r.res, 10);
	ck_assert_int_eq(memcmp(out, "0123456789", 10), 0);

	/* waiting for bytes: no forward write of its own to detach */
	memset(&f, 0, sizeof(f));
	ck_assert_int_eq(iou_forward(s, t, 100, fwd_cb, &f), 0);
	ck_assert_int_eq(tsp_turn(loop), 0);
	ck_assert_int_eq(iou_read_cancel(s), 0);
	ck_assert_int_eq(tsp_run_until(loop, &f.calls, 5000), 0);
	ck_assert_int_eq(f.calls, 1);
	ck_assert_int_eq(f.res, -ECANCELED);

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1024, got_cb, &g), 0);
	ck_assert_int_eq(send(peer, "three\n", 6, 0), 6);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 6);

	/* the close releases the pending read's separator block */
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, LONG_SEP, strlen(LONG_SEP), 1024,
					got_cb, &g), 0);
	tsp_close_and_wait(loop, s);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.res, -ECANCELED);
	tsp_close_and_wait(loop, t);
	close(peer);
	close(tpeer);
	t_loop_destroy(loop);
}
END_TEST

static Suite *reads_suite(void)
{
	Suite *s = suite_create("reads");
	TCase *tc;

	tc = tcase_create("read");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_returns_every_buffered_byte);
	tcase_add_test(tc, read_up_to_max_across_small_buffers);
	tcase_add_test(tc, buffered_in_callback_excludes_delivered);
	suite_add_tcase(s, tc);

	tc = tcase_create("end of file");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, clean_eof_between_messages_is_zero, 0, K_KINDS);
	tcase_add_loop_test(tc, truncated_message_is_incomplete, 0, K_KINDS);
	suite_add_tcase(s, tc);

	tc = tcase_create("read_exactly_into");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, read_exactly_into_4mib_through_64kib);
	tcase_add_test(tc, read_exactly_into_truncated_reports_got);
	tcase_add_test(tc, read_exactly_into_errors_and_close);
	suite_add_tcase(s, tc);

	tc = tcase_create("kinds");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_kinds_in_turn);
	suite_add_tcase(s, tc);

	tc = tcase_create("writes");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, writes_with_null_callbacks_go_out_in_order);
	suite_add_tcase(s, tc);

	tc = tcase_create("unix");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, stream_open_unix_socketpair);
	suite_add_tcase(s, tc);

	tc = tcase_create("feed");
	tcase_set_timeout(tc, 10); /* the base code looped for ever */
	tcase_add_loop_test(tc, feed_too_large_is_einval, 0, 4);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(reads_suite());
}
