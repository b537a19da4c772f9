/* SPDX-License-Identifier: MIT */
/*
 * check_alloc: no malloc/free per request in the steady state, an idle
 * stream holds no request-sized heap block, and a read whose copy cannot be
 * allocated fails with -ENOMEM and loses no byte.
 *
 * The program counts the heap calls of its own (loop) thread by defining
 * malloc, calloc, realloc and free on top of glibc's __libc_* functions.
 * Request/response patterns that each need a heap block (a long read_until
 * separator, pipelined feed/drain, reads that span receive buffers, several
 * writes gathered into one sendmsg, forwards of parts of a buffer) run 200 warm-up requests, then 2000
 * counted ones.  Skipped (exit 77) in sanitizer builds, which own malloc.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Under --enable-fault-injection internal.h would rename malloc and friends
 * to the library's fault wrappers, and the definitions below with them. */
#define IOU__FAULT_NO_WRAP
#include "internal.h" /* the stream's heap blocks (idle check) */
#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#if defined(__SANITIZE_ADDRESS__)
#define ALLOC_COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ALLOC_COUNTING 0
#endif
#endif
#ifndef ALLOC_COUNTING
#define ALLOC_COUNTING 1
#endif

/* malloc returns NULL once fail_after more calls succeeded (not under
 * ASan) */
static _Thread_local int failing, fail_after;

#if ALLOC_COUNTING
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);

static _Thread_local int counting;
static _Thread_local long heap_calls;

void *malloc(size_t n)
{
	if (failing && fail_after-- <= 0)
		return NULL;
	heap_calls += counting;
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	heap_calls += counting;
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	heap_calls += counting;
	return __libc_realloc(p, n);
}

void free(void *p)
{
	heap_calls += counting && p;
	__libc_free(p);
}
#endif

enum { WARMUP = 200, COUNTED = 2000 };

/* ---- the server side: one pattern per test ------------------------------ */

enum pattern {
	P_LONG_SEPARATOR, /* read_until a 17-byte separator, write_all reply */
	P_FEED_PIPELINED, /* 8 requests at once, a feed per request, a drain
			     when no whole request is left */
	P_SPANNING_READ,  /* read_exactly 40 KiB: spans 16 KiB buffers */
	P_GATHERED_WRITES,/* three writes per reply, gathered in one sendmsg */
	P_FORWARD_PARTS   /* 8 requests at once, each forwarded alone: a part
			     of a receive buffer, sent from a copy */
};

static const char SEP[] = "--end-of-record--"; /* 17 bytes */
#define REQ_LEN 64
#define BIG_LEN (40 * 1024)
#define REPLY_LEN 8

struct srv {
	enum pattern pat;
	int served, err;
};

static const char reply[REPLY_LEN] = "reply-ok";

static void on_request(iou_stream *s, ssize_t res, const void *d, void *ud);

static void on_forwarded(iou_stream *s, ssize_t res, void *ud);

static int next_read(iou_stream *s, struct srv *v)
{
	switch (v->pat) {
	case P_FORWARD_PARTS:
		return iou_forward(s, s, REQ_LEN, on_forwarded, v);
	case P_LONG_SEPARATOR:
		return iou_read_until(s, SEP, strlen(SEP), 4096, on_request, v);
	case P_SPANNING_READ:
		return iou_read_exactly(s, BIG_LEN, on_request, v);
	default:
		return iou_read_exactly(s, REQ_LEN, on_request, v);
	}
}

static void on_request(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct srv *v = ud;
	int ret = 0;

	(void)d;
	if (res <= 0) {
		v->err = res ? (int)res : -EPIPE;
		return;
	}
	switch (v->pat) {
	case P_FEED_PIPELINED:
		/* the bytes of this request are consumed after we return */
		ret = iou_feed(s, reply, REPLY_LEN);
		if (!ret && iou_buffered(s) < 2 * REQ_LEN)
			ret = iou_drain(s, NULL, NULL);
		break;
	case P_GATHERED_WRITES:
		ret = iou_write(s, reply, 2, NULL, NULL);
		if (!ret)
			ret = iou_write(s, reply + 2, 4, NULL, NULL);
		if (!ret)
			ret = iou_write_all(s, reply + 6, 2, NULL, NULL);
		break;
	default:
		ret = iou_write_all(s, reply, REPLY_LEN, NULL, NULL);
		break;
	}
	v->served++;
	if (!ret)
		ret = next_read(s, v);
	if (ret)
		v->err = ret;
}

static void on_forwarded(iou_stream *s, ssize_t res, void *ud)
{
	struct srv *v = ud;
	int ret;

	if (res <= 0) {
		v->err = res ? (int)res : -EPIPE;
		return;
	}
	v->served++;
	ret = next_read(s, v);
	if (ret)
		v->err = ret;
}

/* ---- the client side: a plain socket driven from this thread ------------ */

/* No Check assertion in here: Check's assertions allocate when they pass.
 * Returns NULL, or what went wrong. */
static const char *send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k <= 0)
			return "send failed";
		p = (const char *)p + k;
		n -= (size_t)k;
	}
	return NULL;
}

/* Send `batch` requests, run the loop until all their replies are back. */
static const char *round_trip(iou_loop *loop, int peer, struct srv *v,
			      const unsigned char *req, size_t req_len,
			      int batch)
{
	/* a forward echoes the whole request */
	size_t each = v->pat == P_FORWARD_PARTS ? req_len : REPLY_LEN;
	size_t want = (size_t)batch * each, got = 0;
	unsigned char in[256];
	uint64_t end = t_now_ms() + 10000;
	const char *err;

	for (int i = 0; i < batch; i++)
		if ((err = send_all(peer, req, req_len)))
			return err;
	while (got < want) {
		ssize_t k;

		if (v->err)
			return "the server side failed";
		if (t_now_ms() >= end)
			return "reply timed out";
		if (iou_loop_run_once(loop, 1) < 0)
			return "loop turn failed";
		while ((k = recv(peer, in, sizeof(in), MSG_DONTWAIT)) > 0) {
			for (ssize_t i = 0; i < k; i++)
				if (in[i] != (unsigned char)
					     reply[(got + (size_t)i) % REPLY_LEN])
					return "wrong reply byte";
			got += (size_t)k;
		}
	}
	return NULL;
}

static void run_pattern(enum pattern pat)
{
	iou_loop *loop;
	iou_stream *s;
	struct srv v = { .pat = pat };
	unsigned char *req;
	size_t req_len;
	int peer, batch = pat == P_FEED_PIPELINED || pat == P_FORWARD_PARTS ? 8 : 1;
	const char *err = NULL;

	loop = t_loop_create_or_skip(NULL);
	peer = tsp_open_pair(loop, NULL, &s);
	tsp_set_timeouts(peer);
	req_len = pat == P_SPANNING_READ ? BIG_LEN : REQ_LEN;
	req = malloc(req_len);
	ck_assert_ptr_nonnull(req);
	memset(req, 'q', req_len);
	if (pat == P_FORWARD_PARTS) /* echoed as is: looks like replies */
		for (size_t i = 0; i < req_len; i++)
			req[i] = (unsigned char)reply[i % REPLY_LEN];
	if (pat == P_LONG_SEPARATOR)
		memcpy(req + req_len - strlen(SEP), SEP, strlen(SEP));
	ck_assert_int_eq(next_read(s, &v), 0);

	for (int i = 0; i < WARMUP && !err; i++)
		err = round_trip(loop, peer, &v, req, req_len, batch);
	ck_assert_msg(!err, "warm-up: %s (%s)", err, iou_strerror(v.err));
#if ALLOC_COUNTING
	counting = 1;
	for (int i = 0; i < COUNTED && !err; i++)
		err = round_trip(loop, peer, &v, req, req_len, batch);
	counting = 0;
	ck_assert_msg(!err, "%s (%s)", err, iou_strerror(v.err));
	ck_assert_msg(heap_calls == 0, "%ld heap calls in %d requests",
		      heap_calls, COUNTED * batch);
#endif
	ck_assert_int_eq(v.served, (WARMUP + COUNTED) * batch);
	/* idle now: the request-sized blocks went back to the loop */
	ck_assert_ptr_null(s->rxq.spill);
	ck_assert_ptr_null(s->feed);
	ck_assert_ptr_null(s->gather);
	free(req);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}

START_TEST(no_heap_calls_long_separator)
{
	run_pattern(P_LONG_SEPARATOR);
}
END_TEST

START_TEST(no_heap_calls_feed_pipelined)
{
	run_pattern(P_FEED_PIPELINED);
}
END_TEST

START_TEST(no_heap_calls_spanning_read)
{
	run_pattern(P_SPANNING_READ);
}
END_TEST

START_TEST(no_heap_calls_gathered_writes)
{
	run_pattern(P_GATHERED_WRITES);
}
END_TEST

START_TEST(no_heap_calls_forward_parts)
{
	run_pattern(P_FORWARD_PARTS);
}
END_TEST

/* ---- out of memory ------------------------------------------------------ */

struct got {
	ssize_t res;
	unsigned char data[512];
};

static void got_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct got *g = ud;

	(void)s;
	g->res = res;
	if (res > 0)
		memcpy(g->data, d, (size_t)res < sizeof(g->data) ? (size_t)res
								  : sizeof(g->data));
}

static ssize_t run_until_got(iou_loop *loop, struct got *g)
{
	for (int i = 0; i < 100 && !g->res; i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	return g->res;
}

/* 300 bytes (a pattern, a newline at sep_at or none) in 64-byte receive
 * buffers, all received; then read_until(max) while malloc fails after
 * `allow` successful calls: -ENOMEM and every byte still buffered, in
 * order.  Then the same read with memory: `want`; then the rest. */
static void until_without_memory(size_t max, int sep_at, int allow,
				 ssize_t want)
{
	iou_loop *loop;
	iou_stream *s;
	struct iou_loop_opts o;
	unsigned char msg[300], rest[300];
	struct got g = { 0 };
	int peer, ret = 0;
	ssize_t n;

	iou_loop_opts_init(&o);
	o.buf_size = 64; /* the record spans buffers: its read copies */
	loop = t_loop_create_or_skip(&o);
	peer = tsp_open_pair(loop, NULL, &s);
	tsp_fill(msg, sizeof(msg), 5, 0);
	for (size_t i = 0; i < sizeof(msg); i++)
		if (msg[i] == '\n')
			msg[i] = 'x';
	if (sep_at >= 0)
		msg[sep_at] = '\n';
	ck_assert_int_eq(send(peer, msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
	/* receive everything: a peek of one byte starts receiving */
	ck_assert_int_eq(iou_peek(s, 1, got_cb, &g), 0);
	for (int i = 0; i < 500 && iou_buffered(s) < sizeof(msg); i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	ck_assert_uint_eq(iou_buffered(s), sizeof(msg));

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, max, got_cb, &g), 0);
	fail_after = allow;
	failing = 1; /* no Check assertion until it is 0 again: they allocate */
	for (int i = 0; i < 100 && !g.res && ret >= 0; i++)
		ret = iou_loop_run_once(loop, 10);
	failing = 0;
	ck_assert_int_ge(ret, 0);
	ck_assert_msg(g.res == -ENOMEM, "read_until without memory: %zd (%s)",
		      g.res, iou_strerror((int)g.res));
	ck_assert_uint_eq(iou_buffered(s), sizeof(msg));

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read_until(s, "\n", 1, max, got_cb, &g), 0);
	n = run_until_got(loop, &g);
	ck_assert_int_eq(n, want);
	if (n < 0)
		n = 0;
	else
		ck_assert_int_eq(memcmp(g.data, msg, (size_t)n), 0);
	/* the rest, in order */
	ck_assert_int_eq(iou_take_buffer(s, rest, sizeof(rest)),
			 (ssize_t)sizeof(msg) - n);
	ck_assert_int_eq(memcmp(rest, msg + n, sizeof(msg) - (size_t)n), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}

/* The separator is there: -ENOMEM at the first copy, then the record. */
START_TEST(read_until_without_memory_is_enomem)
{
	until_without_memory(200, 150, 0, 151);
}
END_TEST

/* The copy got its first block and holds 4 buffers' bytes when growing it
 * fails: still -ENOMEM, and nothing lost or reordered. */
START_TEST(read_until_enomem_while_growing_the_copy)
{
	until_without_memory(300, 280, 1, 281);
}
END_TEST

/* No separator within max: -ENOMEM (not IOU_EOVERFLOW, which would claim
 * the bytes were searched), then IOU_EOVERFLOW. */
START_TEST(read_until_without_memory_is_not_overflow)
{
	until_without_memory(100, -1, 0, -IOU_EOVERFLOW);
}
END_TEST

/* iou_read of 300 bytes in 64-byte buffers copies them together: without
 * memory -ENOMEM and every byte still buffered; with memory all 300. */
START_TEST(read_without_memory_is_enomem)
{
	iou_loop *loop;
	iou_stream *s;
	struct iou_loop_opts o;
	unsigned char msg[300];
	struct got g = { 0 };
	int peer, ret = 0;

	if (!ALLOC_COUNTING) {
		fprintf(stderr, "sanitizer build: malloc not interposed\n");
		return;
	}
	iou_loop_opts_init(&o);
	o.buf_size = 64;
	loop = t_loop_create_or_skip(&o);
	peer = tsp_open_pair(loop, NULL, &s);
	tsp_fill(msg, sizeof(msg), 6, 0);
	ck_assert_int_eq(send(peer, msg, sizeof(msg), 0), (ssize_t)sizeof(msg));
	ck_assert_int_eq(iou_peek(s, 1, got_cb, &g), 0);
	for (int i = 0; i < 500 && iou_buffered(s) < sizeof(msg); i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	ck_assert_uint_eq(iou_buffered(s), sizeof(msg));

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 512, got_cb, &g), 0);
	fail_after = 0;
	failing = 1; /* no Check assertion until it is 0 again: they allocate */
	for (int i = 0; i < 100 && !g.res && ret >= 0; i++)
		ret = iou_loop_run_once(loop, 10);
	failing = 0;
	ck_assert_int_ge(ret, 0);
	ck_assert_msg(g.res == -ENOMEM, "iou_read without memory: %zd (%s)",
		      g.res, iou_strerror((int)g.res));
	ck_assert_uint_eq(iou_buffered(s), sizeof(msg));

	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(iou_read(s, 512, got_cb, &g), 0);
	ck_assert_int_eq(run_until_got(loop, &g), (ssize_t)sizeof(msg));
	ck_assert_int_eq(memcmp(g.data, msg, sizeof(msg)), 0);
	ck_assert_uint_eq(iou_buffered(s), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* Growing a block to a size past SIZE_MAX / 2 cannot double its way
 * there: -ENOMEM at once (malloc refuses), the block unchanged. */
START_TEST(blk_grow_huge_is_enomem)
{
	struct iou__blkcache c = { 0 };
	unsigned char *p = NULL;
	size_t cap = 0;

	if (!ALLOC_COUNTING) {
		fprintf(stderr, "sanitizer build: its malloc aborts on huge sizes\n");
		return;
	}
	ck_assert_int_eq(iou__blk_grow(&c, &p, &cap, 0, 100), 0);
	ck_assert_uint_eq(cap, 256);
	memcpy(p, "kept", 4);
	ck_assert_int_eq(iou__blk_grow(&c, &p, &cap, 4, SIZE_MAX), -ENOMEM);
	ck_assert_int_eq(iou__blk_grow(&c, &p, &cap, 4, SIZE_MAX / 2 + 2), -ENOMEM);
	ck_assert_uint_eq(cap, 256);
	ck_assert_int_eq(memcmp(p, "kept", 4), 0);
	iou__blk_put(&c, p, cap);
	iou__blk_cache_free(&c);
}
END_TEST

static Suite *alloc_suite(void)
{
	Suite *s = suite_create("alloc");
	TCase *tc = tcase_create("steady state");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, no_heap_calls_long_separator);
	tcase_add_test(tc, no_heap_calls_feed_pipelined);
	tcase_add_test(tc, no_heap_calls_spanning_read);
	tcase_add_test(tc, no_heap_calls_gathered_writes);
	tcase_add_test(tc, no_heap_calls_forward_parts);
	suite_add_tcase(s, tc);

	tc = tcase_create("out of memory");
	tcase_add_test(tc, read_until_without_memory_is_enomem);
	tcase_add_test(tc, read_until_enomem_while_growing_the_copy);
	tcase_add_test(tc, read_until_without_memory_is_not_overflow);
	tcase_add_test(tc, read_without_memory_is_enomem);
	tcase_add_test(tc, blk_grow_huge_is_enomem);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (!ALLOC_COUNTING) {
		printf("SKIP: sanitizer build: malloc is the sanitizer's, not counted here\n");
		return T_EXIT_SKIP;
	}
	return t_run_suite(alloc_suite());
}
