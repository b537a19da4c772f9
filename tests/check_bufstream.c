/* SPDX-License-Identifier: MIT */
/*
 * check_bufstream: the receive side of streams: read_exactly, peek,
 * read_until and take_buffer across provided-buffer boundaries (loops with
 * 64-byte buffers, so that boundaries are frequent), end of file, errors,
 * close, a starved buffer pool (ENOBUFS) and backpressure.  Peers are plain
 * blocking sockets driven by helper threads (tests/t_stream_peer.h).
 */
#include <check.h>
#include <errno.h>
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

/* ---- small helpers ------------------------------------------------------ */

/* A loop whose receive buffers are `size` bytes, `count` of them. */
static iou_loop *small_loop(unsigned size, unsigned count)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	o.buf_size = size;
	o.buf_count = count;
	return t_loop_create_or_skip(&o);
}

static void never_read_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	(void)s; (void)res; (void)d; (void)ud;
	ck_abort_msg("read callback must not run");
}

/* One read's outcome, with a copy of its bytes. */
struct got {
	ssize_t res;
	int calls;
	unsigned char data[8192];
	ssize_t taken;            /* take_buffer from inside the callback */
	int take_in_cb;
	unsigned char taken_data[4096];
};

static void got_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct got *g = ud;

	g->calls++;
	g->res = res;
	if (res > 0) {
		ck_assert_ptr_nonnull(d);
		memcpy(g->data, d, (size_t)res < sizeof(g->data) ? (size_t)res
								  : sizeof(g->data));
	} else {
		ck_assert_ptr_null(d);
	}
	if (g->take_in_cb)
		g->taken = iou_take_buffer(s, g->taken_data, sizeof(g->taken_data));
}

static void wait_got(iou_loop *loop, struct got *g)
{
	ck_assert_int_eq(tsp_run_until(loop, &g->calls, 5000), 0);
	ck_assert_int_eq(g->calls, 1);
}

/* ======================================================================== */
/* read_exactly and peek across buffer boundaries                           */
/* ======================================================================== */

/* Reads records of cycling sizes with read_exactly (or peek, then
 * read_exactly of the same size), checking every byte of the stream
 * `seed`, until `total` bytes. */
struct exact {
	const size_t *sizes;
	size_t nsizes, idx, off, total, zero_copy_max;
	uint64_t seed;
	int peek_first, peeked, err, done, bad, records;
	const unsigned char *pool_lo, *pool_hi;
	int not_zero_copy;
};

static void exact_cb(iou_stream *s, ssize_t res, const void *d, void *ud);

static void exact_next(iou_stream *s, struct exact *e)
{
	size_t n = e->sizes[e->idx % e->nsizes];
	int ret;

	if (n > e->total - e->off)
		n = e->total - e->off;
	if (e->peek_first && !e->peeked)
		ret = iou_peek(s, n, exact_cb, e);
	else
		ret = iou_read_exactly(s, n, exact_cb, e);
	if (ret < 0) {
		e->err = ret;
		e->done = 1;
	}
}

static void exact_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct exact *e = ud;
	size_t want = e->sizes[e->idx % e->nsizes];
	const unsigned char *p = d;

	if (want > e->total - e->off)
		want = e->total - e->off;
	if (res < 0) {
		e->err = (int)res;
		e->done = 1;
		return;
	}
	if ((size_t)res != want || tsp_mismatch(d, want, e->seed, e->off) != want)
		e->bad++;
	/* a record inside one buffer is a view into the pool, not a copy */
	if (e->pool_lo && (p < e->pool_lo || p + res > e->pool_hi) &&
	    (size_t)res <= e->zero_copy_max && e->idx == 0)
		e->not_zero_copy++;
	if (e->peek_first && !e->peeked) {
		e->peeked = 1; /* the same bytes again, consumed this time */
		exact_next(s, e);
		return;
	}
	e->peeked = 0;
	e->off += want;
	e->idx++;
	e->records++;
	if (e->off == e->total) {
		e->done = 1;
		return;
	}
	exact_next(s, e);
}

static const size_t odd_sizes[] = { 1, 63, 64, 65, 3, 127, 128, 129, 200,
				    1000, 2, 64 * 5 + 7, 4096, 5000 };

static void exact_run(size_t total, size_t chunk, unsigned pause_us,
		      int peek_first)
{
	iou_loop *loop = small_loop(64, 256);
	struct exact e = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	e.sizes = odd_sizes;
	e.nsizes = sizeof(odd_sizes) / sizeof(odd_sizes[0]);
	e.total = total;
	e.seed = 11 + chunk;
	e.peek_first = peek_first;
	tsp_send_start(&p, peer, e.seed, total, chunk, pause_us, TSP_SHUT_WR);
	exact_next(s, &e);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 20000), 0);
	ck_assert_int_eq(e.err, 0);
	ck_assert_int_eq(e.bad, 0);
	ck_assert_uint_eq(e.off, total);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}

START_TEST(read_exactly_across_boundaries_bursts)
{
	exact_run(1 * MiB + 17, 0, 0, 0);
}
END_TEST

START_TEST(read_exactly_across_boundaries_one_byte_peer)
{
	exact_run(2500, 1, 20, 0);
}
END_TEST

START_TEST(peek_then_read_exactly_same_bytes)
{
	exact_run(256 * KiB + 3, 0, 0, 1);
}
END_TEST

START_TEST(peek_then_read_one_byte_peer)
{
	exact_run(1500, 1, 20, 1);
}
END_TEST

/* A record that lies inside one received buffer is delivered as a view
 * into the pool (no copy), as the design promises. */
START_TEST(read_exactly_within_one_buffer_is_zero_copy)
{
	iou_loop *loop = small_loop(4096, 64);
	static const size_t one[] = { 100 };
	struct exact e = { 0 };
	unsigned char b[100];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	e.sizes = one;
	e.nsizes = 1;
	e.total = 100;
	e.seed = 5;
	e.zero_copy_max = 100;
	e.pool_lo = loop->pool.base;
	e.pool_hi = loop->pool.base + (size_t)loop->pool.buf_size * loop->bufs.buf_count;
	exact_next(s, &e);
	tsp_fill(b, sizeof(b), 5, 0);
	ck_assert_int_eq(send(peer, b, sizeof(b), 0), (ssize_t)sizeof(b));
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 5000), 0);
	ck_assert_int_eq(e.err, 0);
	ck_assert_int_eq(e.bad, 0);
	ck_assert_int_eq(e.not_zero_copy, 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* read_exactly of max_buffered bytes, more than the whole pool holds: the
 * stream copies buffers out so the pool never runs dry for good. */
START_TEST(read_exactly_larger_than_pool)
{
	iou_loop *loop = small_loop(64, 16); /* a 1 KiB pool */
	static const size_t big[] = { 32 * KiB };
	struct iou_stream_opts o;
	struct exact e = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer;

	iou_stream_opts_init(&o);
	o.max_buffered = 32 * KiB;
	peer = tsp_open_pair(loop, &o, &s);
	e.sizes = big;
	e.nsizes = 1;
	e.total = 128 * KiB;
	e.seed = 6;
	tsp_send_start(&p, peer, 6, e.total, 0, 0, TSP_SHUT_WR);
	exact_next(s, &e);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 15000), 0);
	ck_assert_int_eq(e.err, 0);
	ck_assert_int_eq(e.bad, 0);
	ck_assert_int_eq(e.records, 4);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* read_until                                                               */
/* ======================================================================== */

/* A deterministic stream of records: payloads drawn from a small alphabet
 * that includes the separator's own bytes (so near-matches and overlaps
 * are frequent), lengths 0..199 (so separators land at every offset of the
 * 64-byte buffers and straddle their boundaries), starting with an empty
 * record (separator at the very start) and ending with a separator (at the
 * very end).  The oracle is memmem over the whole stream.  The separators
 * used here contain no 0xff byte. */
static unsigned char *make_records(const unsigned char *sep, size_t seplen,
				   size_t target, size_t *len)
{
	unsigned char *buf = malloc(target + 256 + 2 * seplen + 8);
	uint64_t x = 0x243F6A8885A308D3ull ^ seplen;
	size_t n = 0;
	int first = 1;

	ck_assert_ptr_nonnull(buf);
	while (n < target) {
		size_t plen;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		plen = first ? 0 : (size_t)(x >> 33) % 200;
		first = 0;
		if (n + plen + seplen > target + 256)
			break;
		for (size_t i = 0; i < plen; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			switch ((x >> 40) % 4) {
			case 0:
				buf[n + i] = sep[(x >> 20) % seplen];
				break;
			case 1:
				buf[n + i] = sep[0];
				break;
			default:
				buf[n + i] = (unsigned char)('a' + (x >> 50) % 26);
				break;
			}
		}
		/* now and then a separator missing its last byte */
		if (plen > seplen && (x >> 60) % 3 == 0)
			memcpy(buf + n + plen - (seplen - 1), sep, seplen - 1);
		n += plen;
		memcpy(buf + n, sep, seplen);
		n += seplen;
	}
	/* A last record whose payload shares no byte with the separator, so
	 * that whatever the partial separators above did, the stream ends
	 * exactly at a separator. */
	memset(buf + n, 0xff, 3);
	n += 3;
	memcpy(buf + n, sep, seplen);
	n += seplen;
	*len = n;
	return buf;
}

struct until {
	const unsigned char *data, *sep;
	size_t len, seplen, off, max;
	int records, bad, err, done, at_start_ok;
};

static void until_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct until *u = ud;
	const unsigned char *hit;
	size_t rec;
	int ret;

	if (res <= 0) {
		u->err = (int)res;
		u->done = 1;
		return;
	}
	hit = memmem(u->data + u->off, u->len - u->off, u->sep, u->seplen);
	ck_assert_ptr_nonnull(hit);
	rec = (size_t)(hit - (u->data + u->off)) + u->seplen;
	if ((size_t)res != rec || memcmp(d, u->data + u->off, rec) != 0) {
		if (!u->bad)
			fprintf(stderr, "record %d at %zu: got %zd bytes, want %zu\n",
				u->records, u->off, res, rec);
		u->bad++;
	}
	if (u->records == 0 && u->off == 0 && (size_t)res == u->seplen)
		u->at_start_ok = 1;
	u->off += rec;
	u->records++;
	/* past the last record: one more read, which gets a clean end of
	 * file (0) */
	ret = iou_read_until(s, u->sep, u->seplen, u->max, until_cb, u);
	if (ret < 0) {
		u->err = ret;
		u->done = 1;
	}
}

static void until_run(const char *sep, size_t seplen, size_t target,
		      size_t chunk, unsigned pause_us)
{
	iou_loop *loop = small_loop(64, 256);
	struct until u = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	unsigned char *data;
	char sepcopy[128];

	ck_assert_uint_le(seplen, sizeof(sepcopy));
	memcpy(sepcopy, sep, seplen);
	data = make_records((const unsigned char *)sep, seplen, target, &u.len);
	u.data = data;
	u.sep = (const unsigned char *)sep;
	u.seplen = seplen;
	u.max = 4096;
	tsp_send_buf_start(&p, peer, data, u.len, chunk, pause_us, TSP_SHUT_WR);
	/* the separator is copied: scribbling over ours must not matter */
	ck_assert_int_eq(iou_read_until(s, sepcopy, seplen, u.max, until_cb, &u), 0);
	memset(sepcopy, 0, sizeof(sepcopy));
	ck_assert_int_eq(tsp_run_until(loop, &u.done, 20000), 0);
	ck_assert_int_eq(u.bad, 0);
	ck_assert_int_eq(u.at_start_ok, 1);
	ck_assert_uint_eq(u.off, u.len);
	ck_assert_int_eq(u.err, 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(data);
	t_loop_destroy(loop);
}

START_TEST(read_until_sep1_across_boundaries)
{
	until_run("\n", 1, 256 * KiB, 0, 0);
}
END_TEST

START_TEST(read_until_sep2_across_boundaries)
{
	until_run("\r\n", 2, 256 * KiB, 0, 0);
}
END_TEST

START_TEST(read_until_sep16_across_boundaries)
{
	until_run("0123456789ABCDEF", 16, 256 * KiB, 0, 0);
}
END_TEST

/* 17 bytes: longer than the inline separator; self-overlapping. */
START_TEST(read_until_sep17_across_boundaries)
{
	until_run("abababababababab!", 17, 256 * KiB, 0, 0);
}
END_TEST

START_TEST(read_until_sep17_one_byte_peer)
{
	until_run("abababababababab!", 17, 2000, 1, 20);
}
END_TEST

START_TEST(read_until_sep1_one_byte_peer)
{
	until_run("\n", 1, 1500, 1, 20);
}
END_TEST

/* A separator longer than a whole receive buffer. */
START_TEST(read_until_sep_longer_than_buffer)
{
	char sep[100];

	for (size_t i = 0; i < sizeof(sep); i++)
		sep[i] = (char)('A' + i % 3);
	until_run(sep, sizeof(sep), 128 * KiB, 0, 0);
}
END_TEST

/* A record of exactly `max` bytes (separator included) is fine; one more
 * byte is IOU_EOVERFLOW, with nothing consumed. */
START_TEST(read_until_record_of_exactly_max)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	unsigned char msg[401];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	memset(msg, 'a', 200);
	msg[199] = '\n';
	memset(msg + 200, 'b', 201);
	msg[400] = '\n';
	ck_assert_int_eq(send(peer, msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 200, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 200);
	ck_assert_int_eq(memcmp(g.data, msg, 200), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 200, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, -IOU_EOVERFLOW);
	ck_assert_uint_ge(iou_buffered(s), 200);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 201, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 201);
	ck_assert_int_eq(memcmp(g.data, msg + 200, 201), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* IOU_EOVERFLOW loses nothing and the stream stays usable: everything is
 * read afterwards, in order, and later records work again. */
START_TEST(read_until_overflow_loses_nothing)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	unsigned char *msg = malloc(5000);
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_ptr_nonnull(msg);
	tsp_fill(msg, 5000, 8, 0);
	for (size_t i = 0; i < 5000; i++)
		if (msg[i] == '\n')
			msg[i] = 'x';
	ck_assert_int_eq(send(peer, msg, 5000, 0), 5000);
	for (int i = 0; i < 3; i++) { /* and again: still nothing consumed */
		memset(&g, 0, sizeof(g));
		ck_assert_int_eq(iou_read_until(s, "\n", 1, 1000 + (size_t)i * 300,
						got_cb, &g), 0);
		wait_got(loop, &g);
		ck_assert_int_eq(g.res, -IOU_EOVERFLOW);
		ck_assert_uint_ge(iou_buffered(s), 1000 + (size_t)i * 300);
	}
	/* all 5000 bytes still there, in order */
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_exactly(s, 5000, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 5000);
	ck_assert_int_eq(memcmp(g.data, msg, 5000), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	/* usable afterwards */
	ck_assert_int_eq(send(peer, "tail\nmore", 9, 0), 9);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 100, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 5);
	ck_assert_int_eq(memcmp(g.data, "tail\n", 5), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(msg);
	t_loop_destroy(loop);
}
END_TEST

/* A separator split across two sends that arrive apart (the first half
 * waits in one buffer, the rest arrives later in another). */
START_TEST(read_until_sep_split_between_arrivals)
{
	iou_loop *loop = small_loop(64, 64);
	static const char sep[] = "<<--boundary-->>!"; /* 17 bytes */
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read_until(s, sep, 17, 1000, got_cb, &g), 0);
	ck_assert_int_eq(send(peer, "hello<<--bou", 12, 0), 12);
	tsp_run_for(loop, 30);
	ck_assert_int_eq(g.calls, 0);
	ck_assert_int_eq(send(peer, "ndary-->>!after", 15, 0), 15);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 22);
	ck_assert_int_eq(memcmp(g.data, "hello<<--boundary-->>!", 22), 0);
	ck_assert_uint_eq(iou_buffered(s), 5);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* end of file                                                              */
/* ======================================================================== */

START_TEST(read_exactly_incomplete_keeps_data)
{
	iou_loop *loop = small_loop(64, 64);
	unsigned char b[300], out[4096];
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_fill(b, sizeof(b), 12, 0);
	ck_assert_int_eq(send(peer, b, sizeof(b), 0), (ssize_t)sizeof(b));
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(iou_read_exactly(s, 1000, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, -IOU_EINCOMPLETE);
	ck_assert_uint_eq(iou_buffered(s), 300);
	/* take_buffer hands them over, in parts */
	ck_assert_int_eq(iou_take_buffer(s, out, 100), 100);
	ck_assert_int_eq(iou_take_buffer(s, out + 100, sizeof(out) - 100), 200);
	ck_assert_int_eq(memcmp(out, b, 300), 0);
	ck_assert_int_eq(iou_take_buffer(s, out, sizeof(out)), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	/* and then plain end of file */
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 10, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* INCOMPLETE from read_until; take_buffer works from inside its callback. */
START_TEST(read_until_incomplete_keeps_data)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	static const char msg[] = "line one\nno separator after this part, spanning"
				  " more than one sixty-four byte buffer......";
	size_t len = sizeof(msg) - 1;

	ck_assert_int_eq(send(peer, msg, len, 0), (ssize_t)len);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1000, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 9);
	memset(&g, 0, sizeof(g));
	g.take_in_cb = 1;
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1000, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, -IOU_EINCOMPLETE);
	ck_assert_int_eq(g.taken, (ssize_t)(len - 9));
	ck_assert_int_eq(memcmp(g.taken_data, msg + 9, len - 9), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(peek_incomplete_keeps_data)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	unsigned char out[16];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(send(peer, "abc", 3, 0), 3);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(iou_peek(s, 2, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 2);
	ck_assert_int_eq(memcmp(g.data, "ab", 2), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_peek(s, 4, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, -IOU_EINCOMPLETE);
	ck_assert_int_eq(iou_take_buffer(s, out, sizeof(out)), 3);
	ck_assert_int_eq(memcmp(out, "abc", 3), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* Complete records before the end of file are still delivered; the read
 * after them, with nothing left, gets a clean end of file (0). */
START_TEST(records_before_eof_still_delivered)
{
	iou_loop *loop = small_loop(64, 64);
	unsigned char b[300];
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_fill(b, sizeof(b), 13, 0);
	ck_assert_int_eq(send(peer, b, sizeof(b), 0), (ssize_t)sizeof(b));
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	tsp_run_for(loop, 20);
	for (int i = 0; i < 3; i++) {
		memset(&g, 0, sizeof(g));
		ck_assert_int_eq(iou_read_exactly(s, 100, got_cb, &g), 0);
		wait_got(loop, &g);
		ck_assert_int_eq(g.res, 100);
		ck_assert_int_eq(memcmp(g.data, b + i * 100, 100), 0);
	}
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_exactly(s, 1, got_cb, &g), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* errors                                                                   */
/* ======================================================================== */

START_TEST(invalid_arguments_are_einval)
{
	iou_loop *loop = small_loop(64, 64);
	struct iou_stream_opts o;
	unsigned char b[8];
	iou_stream *s;
	int peer;

	iou_stream_opts_init(&o);
	o.max_buffered = 1000;
	peer = tsp_open_pair(loop, &o, &s);
	ck_assert_int_eq(iou_read_exactly(NULL, 1, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_exactly(s, 0, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_exactly(s, 1001, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_exactly(s, 1, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_peek(NULL, 1, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_peek(s, 0, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_peek(s, 1001, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_peek(s, 1, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(NULL, "\n", 1, 10, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(s, NULL, 1, 10, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(s, "\n", 0, 10, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(s, "abc", 3, 2, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1001, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 10, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_read(s, 0, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_take_buffer(NULL, b, sizeof(b)), -EINVAL);
	ck_assert_int_eq(iou_take_buffer(s, NULL, 1), -EINVAL);
	ck_assert_int_eq(iou_take_buffer(s, NULL, 0), 0);
	/* limits that are allowed */
	{
		struct got g = { 0 };

		ck_assert_int_eq(iou_read_until(s, "abc", 3, 3, got_cb, &g), 0);
		ck_assert_int_eq(send(peer, "abc", 3, 0), 3);
		wait_got(loop, &g);
		ck_assert_int_eq(g.res, 3);
	}
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

static void take_in_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	unsigned char b[8];

	(void)d;
	ck_assert_int_gt(res, 0);
	*(ssize_t *)ud = iou_take_buffer(s, b, sizeof(b));
}

START_TEST(busy_while_a_read_is_pending)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	unsigned char b[8];
	ssize_t in_cb = 0;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read_until(s, "\r\n", 2, 100, got_cb, &g), 0);
	ck_assert_int_eq(iou_read_until(s, "x", 1, 100, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_read_exactly(s, 1, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_peek(s, 1, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_read(s, 1, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_take_buffer(s, b, sizeof(b)), -EBUSY);
	ck_assert_int_eq(send(peer, "ab\r\ncd", 6, 0), 6);
	wait_got(loop, &g);
	/* the separator of the pending read was kept, not replaced */
	ck_assert_int_eq(g.res, 4);
	ck_assert_int_eq(memcmp(g.data, "ab\r\n", 4), 0);
	/* take_buffer from inside a read callback is -EBUSY (the bytes
	 * handed to it are not consumed yet) */
	ck_assert_int_eq(iou_peek(s, 1, take_in_cb, &in_cb), 0);
	for (int i = 0; i < 200 && in_cb == 0; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(in_cb, -EBUSY);
	ck_assert_int_eq(iou_take_buffer(s, b, sizeof(b)), 2);
	ck_assert_int_eq(memcmp(b, "cd", 2), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* After shutdown(SHUT_RD): reads are IOU_ECLOSED, a pending read fails so,
 * and what was buffered stays readable with take_buffer. */
START_TEST(shutdown_rd_keeps_buffered_for_take_buffer)
{
	iou_loop *loop = small_loop(64, 64);
	struct got g = { 0 };
	unsigned char out[512], b[200];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_fill(b, sizeof(b), 14, 0);
	ck_assert_int_eq(send(peer, b, sizeof(b), 0), (ssize_t)sizeof(b));
	ck_assert_int_eq(iou_read_until(s, "\n\n\n", 3, 1000, got_cb, &g), 0);
	for (int i = 0; i < 400 && iou_buffered(s) < sizeof(b); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(iou_buffered(s), sizeof(b));
	ck_assert_int_eq(g.calls, 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_RD), 0);
	wait_got(loop, &g);
	ck_assert_int_eq(g.res, -IOU_ECLOSED);
	ck_assert_int_eq(iou_read_exactly(s, 1, never_read_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_peek(s, 1, never_read_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 10, never_read_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_take_buffer(s, out, sizeof(out)), (ssize_t)sizeof(b));
	ck_assert_int_eq(memcmp(out, b, sizeof(b)), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* close and cancel                                                         */
/* ======================================================================== */

static void close_with_pending(int kind)
{
	iou_loop *loop = small_loop(64, 64);
	static const char sep17[] = "12345678901234567";
	struct got g = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), closed = 0;

	switch (kind) {
	case 0:
		ck_assert_int_eq(iou_read_exactly(s, 1000, got_cb, &g), 0);
		break;
	case 1:
		ck_assert_int_eq(iou_peek(s, 1000, got_cb, &g), 0);
		break;
	default: /* 17 bytes: the separator is allocated */
		ck_assert_int_eq(iou_read_until(s, sep17, 17, 1000, got_cb, &g), 0);
		break;
	}
	ck_assert_int_eq(send(peer, "some bytes that do not finish the read", 38, 0), 38);
	for (int i = 0; i < 400 && iou_buffered(s) < 38; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(iou_buffered(s), 38);
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(tsp_run_until(loop, &closed, 5000), 0);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.res, -ECANCELED);
	ck_assert_int_eq(closed, 1);
	close(peer);
	t_loop_destroy(loop);
}

START_TEST(close_cancels_pending_read_exactly)
{
	close_with_pending(0);
}
END_TEST

START_TEST(close_cancels_pending_peek)
{
	close_with_pending(1);
}
END_TEST

START_TEST(close_cancels_pending_read_until_long_sep)
{
	close_with_pending(2);
}
END_TEST

/* Close from inside a read_until callback whose record was copied out of
 * several buffers; buffered bytes behind it are released. */
struct closer {
	struct got g;
	int closed;
};

static void close_in_until_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct closer *c = ud;

	got_cb(s, res, d, &c->g);
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &c->closed), 0);
}

START_TEST(close_from_read_until_callback)
{
	iou_loop *loop = small_loop(64, 64);
	struct closer c = { 0 };
	unsigned char msg[700];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	memset(msg, 'z', sizeof(msg));
	memcpy(msg + 300, "abababababababab!", 17);
	ck_assert_int_eq(send(peer, msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
	ck_assert_int_eq(iou_read_until(s, "abababababababab!", 17, 1000,
					close_in_until_cb, &c), 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.closed, 5000), 0);
	ck_assert_int_eq(c.g.calls, 1);
	ck_assert_int_eq(c.g.res, 317);
	ck_assert_int_eq(memcmp(c.g.data, msg, 317), 0);
	tsp_run_for(loop, 10);
	ck_assert_int_eq(c.closed, 1);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* buffer pool starvation (ENOBUFS)                                         */
/* ======================================================================== */

#define NSTREAMS 10

struct pool_rd {
	uint64_t seed;
	size_t got, want;
	int use_exactly, err, done, bad;
};

static void pool_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct pool_rd *r = ud;
	size_t left;
	int ret;

	if (res <= 0) {
		r->err = res < 0 ? (int)res : -1;
		r->done = 1;
		return;
	}
	if (tsp_mismatch(d, (size_t)res, r->seed, r->got) != (size_t)res)
		r->bad++;
	r->got += (size_t)res;
	left = r->want - r->got;
	if (!left) {
		r->done = 1;
		return;
	}
	if (r->use_exactly)
		ret = iou_read_exactly(s, left < 1000 ? left : 1000, pool_cb, r);
	else
		ret = iou_read(s, 4096, pool_cb, r);
	if (ret < 0) {
		r->err = ret;
		r->done = 1;
	}
}

/* Calls made from inside a read callback on the same stream must leave the
 * bytes the callback is looking at alone (nothing touches a stream's
 * receive queue until the callback returned; see rxq.c): the callback
 * checks them, calls what an application might, and checks them again.
 * The pool is small and an idle stream holds buffers, so reads span
 * buffers (spill) and the pool starves (the holders are spilled). */
struct reentry {
	iou_loop *loop;
	uint64_t seed;
	size_t consumed, want;
	int iter, bad, err, done;
};

static void discard_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	(void)s; (void)res; (void)ud;
}

static void noop_timer_cb(iou_timer *t, void *ud)
{
	(void)t; (void)ud;
}

static void reentry_cb(iou_stream *s, ssize_t res, const void *d, void *ud);

static void reentry_next(iou_stream *s, struct reentry *r)
{
	size_t left = r->want - r->consumed, n = 50 + (size_t)r->iter * 37 % 300;
	int ret;

	if (n > left)
		n = left;
	switch (r->iter % 3) {
	case 0:
		ret = iou_read_exactly(s, n, reentry_cb, r);
		break;
	case 1:
		ret = iou_peek(s, n, reentry_cb, r);
		break;
	default:
		ret = iou_read(s, n, reentry_cb, r);
		break;
	}
	if (ret < 0) {
		r->err = ret;
		r->done = 1;
	}
}

static void reentry_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct reentry *r = ud;
	unsigned char tmp[8];
	iou_timer *t;

	if (res <= 0) {
		r->err = res < 0 ? (int)res : -1;
		r->done = 1;
		return;
	}
	if (tsp_mismatch(d, (size_t)res, r->seed, r->consumed) != (size_t)res)
		r->bad++;
	ck_assert_int_eq(iou_take_buffer(s, tmp, sizeof(tmp)), -EBUSY);
	ck_assert_int_eq(iou_loop_run_once(r->loop, 0), -EBUSY);
	ck_assert_int_eq(iou_write(s, "w", 1, discard_write_cb, NULL), 0);
	ck_assert_int_eq(iou_feed(s, "f", 1), 0);
	ck_assert_int_eq(iou_drain(s, discard_write_cb, NULL), 0);
	ck_assert_int_eq(iou_timer_start(r->loop, 0, 0, noop_timer_cb, NULL, &t),
			 0);
	if (tsp_mismatch(d, (size_t)res, r->seed, r->consumed) != (size_t)res)
		r->bad++;
	if (r->iter++ % 3 != 1) /* a peek consumes nothing */
		r->consumed += (size_t)res;
	if (r->consumed == r->want)
		r->done = 1;
	else
		reentry_next(s, r);
}

START_TEST(calls_inside_read_callbacks_keep_the_bytes)
{
	iou_loop *loop = small_loop(64, 16);
	struct reentry r = { .loop = loop, .seed = 31, .want = 40000 };
	struct tsp_peer tx, sink;
	struct got g = { 0 };
	iou_stream *s, *idle;
	int peer = tsp_open_pair(loop, NULL, &s);
	int idle_peer = tsp_open_pair(loop, NULL, &idle);
	unsigned char fill[3000];

	/* the idle stream takes buffers and keeps them */
	memset(fill, 'z', sizeof(fill));
	ck_assert_int_eq(send(idle_peer, fill, sizeof(fill), 0),
			 (ssize_t)sizeof(fill));
	ck_assert_int_eq(iou_peek(idle, 1, got_cb, &g), 0);
	tsp_recv_start(&sink, peer, SIZE_MAX, 0, 0, NULL, 0, TSP_KEEP);
	tsp_send_start(&tx, peer, r.seed, r.want, 777, 0, TSP_KEEP);
	reentry_next(s, &r);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 20000), 0);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq(r.bad, 0);
	ck_assert_uint_eq(r.consumed, r.want);
	ck_assert_int_ge(r.iter, 100);
	/* the starved pool made the idle stream copy its bytes out */
	ck_assert_ptr_nonnull(idle->rxq.spill);
	ck_assert_uint_eq(iou_buffered(idle), sizeof(fill));
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	tsp_close_and_wait(loop, s);
	tsp_close_and_wait(loop, idle);
	tsp_join(&sink, JOIN_MS);
	close(peer);
	close(idle_peer);
	t_loop_destroy(loop);
}
END_TEST

/* Two 64-byte buffers shared by ten streams whose peers each send 64 KiB:
 * every byte still reaches every stream. */
static void tiny_pool(int use_exactly)
{
	iou_loop *loop = small_loop(64, 2);
	struct tsp_peer p[NSTREAMS];
	struct pool_rd r[NSTREAMS];
	iou_stream *s[NSTREAMS];
	int peer[NSTREAMS], done = 0;
	size_t len = 64 * KiB;
	uint64_t end;

	for (int i = 0; i < NSTREAMS; i++) {
		peer[i] = tsp_open_pair(loop, NULL, &s[i]);
		memset(&r[i], 0, sizeof(r[i]));
		r[i].seed = 200 + (uint64_t)i;
		r[i].want = len;
		r[i].use_exactly = use_exactly;
		tsp_send_start(&p[i], peer[i], r[i].seed, len, 0, 0, TSP_KEEP);
		if (use_exactly)
			ck_assert_int_eq(iou_read_exactly(s[i], 1000, pool_cb, &r[i]), 0);
		else
			ck_assert_int_eq(iou_read(s[i], 4096, pool_cb, &r[i]), 0);
	}
	end = t_now_ms() + 30000;
	while (done < NSTREAMS && t_now_ms() < end) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		done = 0;
		for (int i = 0; i < NSTREAMS; i++)
			done += r[i].done;
	}
	for (int i = 0; i < NSTREAMS; i++) {
		ck_assert_msg(r[i].done && !r[i].err && r[i].got == len,
			      "stream %d: done %d err %d got %zu", i, r[i].done,
			      r[i].err, r[i].got);
		ck_assert_int_eq(r[i].bad, 0);
		ck_assert_int_eq(tsp_join(&p[i], JOIN_MS), 0);
	}
	for (int i = 0; i < NSTREAMS; i++) {
		tsp_close_and_wait(loop, s[i]);
		close(peer[i]);
	}
	t_loop_destroy(loop);
}

START_TEST(tiny_pool_read_delivers_every_byte)
{
	tiny_pool(0);
}
END_TEST

START_TEST(tiny_pool_read_exactly_delivers_every_byte)
{
	tiny_pool(1);
}
END_TEST

/* ======================================================================== */
/* backpressure                                                             */
/* ======================================================================== */

struct bp_rd {
	uint64_t seed;
	size_t got, want;
	int err, done, bad, eof;
};

static void bp_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct bp_rd *r = ud;
	int ret;

	if (res <= 0) {
		if (res == 0)
			r->eof = 1;
		else
			r->err = (int)res;
		r->done = 1;
		return;
	}
	if (tsp_mismatch(d, (size_t)res, r->seed, r->got) != (size_t)res)
		r->bad++;
	r->got += (size_t)res;
	if (r->got == r->want) {
		r->done = 1;
		return;
	}
	ret = iou_read(s, 64 * KiB, bp_cb, r);
	if (ret < 0) {
		r->err = ret;
		r->done = 1;
	}
}

/* max_buffered 64 KiB and a peer flooding 64 MiB while the application
 * reads nothing: the stream holds at most max_buffered plus one pool's
 * worth, the peer is held back, and reading later gets all 64 MiB. */
START_TEST(backpressure_bounds_buffered_bytes)
{
	const unsigned bsize = 4096, bcount = 64;
	iou_loop *loop = small_loop(bsize, bcount);
	struct iou_stream_opts o;
	struct bp_rd r = { 0 };
	struct tsp_peer p;
	size_t len = 64 * MiB, peak = 0, limit;
	iou_stream *s;
	int peer;
	uint64_t end;

	iou_stream_opts_init(&o);
	o.max_buffered = 64 * KiB;
	limit = o.max_buffered + (size_t)bsize * bcount;
	peer = tsp_open_pair(loop, &o, &s);
	r.seed = 300;
	r.want = len;
	tsp_send_start(&p, peer, r.seed, len, 0, 0, TSP_KEEP);
	/* one read of one byte starts receiving; then nothing for a while */
	ck_assert_int_eq(iou_read(s, 1, bp_cb, &r), 0);
	r.want = 1;
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_uint_eq(r.got, 1);
	r.done = 0;
	r.want = len;
	end = t_now_ms() + 400;
	for (int i = 0; i < 100000 && t_now_ms() < end; i++) {
		size_t b;

		ck_assert_int_ge(tsp_turn(loop), 0);
		b = iou_buffered(s);
		if (b > peak)
			peak = b;
	}
	ck_assert_msg(peak <= limit, "buffered %zu > %zu", peak, limit);
	ck_assert_uint_ge(peak, o.max_buffered); /* it did fill up */
	ck_assert_uint_lt(__atomic_load_n(&p.done, __ATOMIC_RELAXED), len);
	/* now read everything */
	ck_assert_int_eq(iou_read(s, 64 * KiB, bp_cb, &r), 0);
	end = t_now_ms() + 40000;
	for (long i = 0; i < 10000000 && !r.done && t_now_ms() < end; i++) {
		size_t b;

		ck_assert_int_ge(tsp_turn(loop), 0);
		b = iou_buffered(s);
		if (b > peak)
			peak = b;
	}
	ck_assert_msg(r.done && !r.err, "got %zu of %zu, err %d", r.got, len, r.err);
	ck_assert_uint_eq(r.got, len);
	ck_assert_int_eq(r.bad, 0);
	ck_assert_msg(peak <= limit, "buffered %zu > %zu", peak, limit);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, len);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* With the default pool (16 MiB) and socket buffers that hold megabytes, a
 * flood into streams that read nothing takes no more than max_buffered plus
 * one buffer per stream: the receive's byte limit stops the kernel, not a
 * cancel that comes after the socket's whole queue was copied. */
START_TEST(backpressure_holds_with_a_big_pool)
{
	enum { N = 4 };
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts o;
	struct bp_rd r[N];
	struct tsp_peer p[N];
	size_t len = 16 * MiB, peak = 0, limit;
	iou_stream *s[N];
	int peer[N], done = 0;
	uint64_t end;

	iou_stream_opts_init(&o);
	o.max_buffered = 64 * KiB;
	o.rcvbuf = 4 * MiB;
	limit = o.max_buffered + loop->pool.buf_size;
	memset(r, 0, sizeof(r));
	for (int i = 0; i < N; i++) {
		peer[i] = tsp_open_pair(loop, &o, &s[i]);
		r[i].seed = 310 + (uint64_t)i;
		r[i].want = 1;
		tsp_send_start(&p[i], peer[i], r[i].seed, len, 0, 0, TSP_KEEP);
		ck_assert_int_eq(iou_read(s[i], 1, bp_cb, &r[i]), 0);
	}
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(tsp_run_until(loop, &r[i].done, 5000), 0);
	end = t_now_ms() + 400;
	for (int k = 0; k < 100000 && t_now_ms() < end; k++) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		for (int i = 0; i < N; i++) {
			size_t b = iou_buffered(s[i]);

			if (b > peak)
				peak = b;
		}
	}
	if (!loop->bufs.recv_limit) {
		fprintf(stderr, "backpressure_holds_with_a_big_pool: kernel "
				"without the recv byte limit (6.16+), peak %zu\n",
			peak);
	} else {
		ck_assert_msg(peak <= limit, "buffered %zu > %zu", peak, limit);
		ck_assert_uint_ge(peak, o.max_buffered);
	}
	/* then everything arrives, byte-exact */
	for (int i = 0; i < N; i++) {
		r[i].done = 0;
		r[i].want = len;
		ck_assert_int_eq(iou_read(s[i], 64 * KiB, bp_cb, &r[i]), 0);
	}
	end = t_now_ms() + 40000;
	for (long k = 0; k < 10000000 && done < N && t_now_ms() < end; k++) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		done = 0;
		for (int i = 0; i < N; i++)
			done += r[i].done;
	}
	for (int i = 0; i < N; i++) {
		ck_assert_msg(r[i].done && !r[i].err && r[i].got == len,
			      "stream %d: got %zu of %zu, err %d", i, r[i].got,
			      len, r[i].err);
		ck_assert_int_eq(r[i].bad, 0);
		ck_assert_int_eq(tsp_join(&p[i], JOIN_MS), 0);
		tsp_close_and_wait(loop, s[i]);
		close(peer[i]);
	}
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */

static Suite *bufstream_suite(void)
{
	Suite *s = suite_create("bufstream");
	TCase *tc;

	tc = tcase_create("exactly");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_exactly_across_boundaries_bursts);
	tcase_add_test(tc, read_exactly_across_boundaries_one_byte_peer);
	tcase_add_test(tc, peek_then_read_exactly_same_bytes);
	tcase_add_test(tc, peek_then_read_one_byte_peer);
	tcase_add_test(tc, read_exactly_within_one_buffer_is_zero_copy);
	tcase_add_test(tc, read_exactly_larger_than_pool);
	suite_add_tcase(s, tc);

	tc = tcase_create("until");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_until_sep1_across_boundaries);
	tcase_add_test(tc, read_until_sep2_across_boundaries);
	tcase_add_test(tc, read_until_sep16_across_boundaries);
	tcase_add_test(tc, read_until_sep17_across_boundaries);
	tcase_add_test(tc, read_until_sep17_one_byte_peer);
	tcase_add_test(tc, read_until_sep1_one_byte_peer);
	tcase_add_test(tc, read_until_sep_longer_than_buffer);
	tcase_add_test(tc, read_until_record_of_exactly_max);
	tcase_add_test(tc, read_until_overflow_loses_nothing);
	tcase_add_test(tc, read_until_sep_split_between_arrivals);
	suite_add_tcase(s, tc);

	tc = tcase_create("eof");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, read_exactly_incomplete_keeps_data);
	tcase_add_test(tc, read_until_incomplete_keeps_data);
	tcase_add_test(tc, peek_incomplete_keeps_data);
	tcase_add_test(tc, records_before_eof_still_delivered);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, invalid_arguments_are_einval);
	tcase_add_test(tc, busy_while_a_read_is_pending);
	tcase_add_test(tc, shutdown_rd_keeps_buffered_for_take_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("close");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, close_cancels_pending_read_exactly);
	tcase_add_test(tc, close_cancels_pending_peek);
	tcase_add_test(tc, close_cancels_pending_read_until_long_sep);
	tcase_add_test(tc, close_from_read_until_callback);
	suite_add_tcase(s, tc);

	tc = tcase_create("pool");
	tcase_set_timeout(tc, 45);
	tcase_add_test(tc, tiny_pool_read_delivers_every_byte);
	tcase_add_test(tc, tiny_pool_read_exactly_delivers_every_byte);
	tcase_add_test(tc, calls_inside_read_callbacks_keep_the_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("backpressure");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, backpressure_bounds_buffered_bytes);
	tcase_add_test(tc, backpressure_holds_with_a_big_pool);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(bufstream_suite());
}
