/* SPDX-License-Identifier: MIT */
/*
 * check_pool: the loop's pool of provided receive buffers as a whole: a
 * stalled forward cannot take the pool from other streams, bundle buffer ids
 * across the ring's wrap-around, and pool memory that follows the load
 * rather than the configured size.  Includes lib/internal.h to look at the
 * pool (its address range, the ring, write queues).
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uring.h"
#include "internal.h" /* the streams on it */
#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#define KiB (1024u)
#define JOIN_MS 20000

static iou_loop *pool_loop(unsigned size, unsigned count)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	o.buf_size = size;
	o.buf_count = count;
	return t_loop_create_or_skip(&o);
}

/* Which pool buffer a read view points into. */
static unsigned bid_of(iou_loop *loop, const void *p)
{
	const unsigned char *base = loop->pool.base;

	ck_assert((const unsigned char *)p >= base &&
		  (const unsigned char *)p < base + (size_t)loop->pool.buf_size *
							loop->bufs.buf_count);
	return (unsigned)(((const unsigned char *)p - base) /
			  loop->pool.buf_size);
}

/* Reads every byte of the stream `seed` and checks it, noting which pool
 * buffers the views pointed into. */
struct reader {
	iou_loop *loop;
	uint64_t seed;
	size_t got, want, chunk;
	int err, done, bad;
	uint8_t *seen;             /* per buffer id, or NULL */
};

static void reader_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct reader *r = ud;
	int ret;

	if (res <= 0) {
		r->err = res < 0 ? (int)res : -1;
		r->done = 1;
		return;
	}
	if (r->seen)
		r->seen[bid_of(r->loop, d)] = 1;
	if (tsp_mismatch(d, (size_t)res, r->seed, r->got) != (size_t)res)
		r->bad++;
	r->got += (size_t)res;
	if (r->got == r->want) {
		r->done = 1;
		return;
	}
	if (r->chunk)
		ret = iou_read_exactly(s, r->want - r->got < r->chunk ?
					       r->want - r->got : r->chunk,
				       reader_cb, r);
	else
		ret = iou_read(s, 64 * KiB, reader_cb, r);
	if (ret < 0) {
		r->err = ret;
		r->done = 1;
	}
}

static void reader_start(iou_stream *s, struct reader *r)
{
	r->got = 0;
	if (r->chunk)
		ck_assert_int_eq(iou_read_exactly(s, r->chunk, reader_cb, r), 0);
	else
		ck_assert_int_eq(iou_read(s, 64 * KiB, reader_cb, r), 0);
}

static unsigned count_set(const uint8_t *seen, unsigned n)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++)
		k += seen[i] != 0;
	return k;
}

/* ======================================================================== */
/* forwards through peers that stopped reading                              */
/* ======================================================================== */

#define NPAIRS 72           /* more than the pool's 64 buffers */
#define PAIR_BYTES (128 * KiB)

struct pair {
	iou_stream *src, *dst;
	int src_peer, dst_peer;
	size_t forwarded;
	int calls, err;
};

static void pair_fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct pair *p = ud;

	p->calls++;
	if (res <= 0) {
		p->err = res < 0 ? (int)res : -1;
		return;
	}
	p->forwarded += (size_t)res;
	if (iou_forward(s, p->dst, SIZE_MAX, pair_fwd_cb, p) < 0)
		p->err = -1;
}

/* Queue as much of PAIR_BYTES as the socket takes without blocking. */
static void send_what_fits(int fd, const unsigned char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(fd, buf + off, len - off, MSG_DONTWAIT);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

struct got {
	ssize_t res;
	int calls;
	unsigned char data[64];
};

static void got_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct got *g = ud;

	(void)s;
	g->res = res;
	g->calls++;
	if (res > 0)
		memcpy(g->data, d, (size_t)res < sizeof(g->data) ?
					   (size_t)res : sizeof(g->data));
}

static int total_calls(const struct pair *pairs)
{
	int n = 0;

	for (int i = 0; i < NPAIRS; i++)
		n += pairs[i].calls;
	return n;
}

/* A proxy's forwards hand whole receive buffers to the target's writer;
 * when the target's peer stops reading they stay there.  With more stalled
 * pairs than the pool has buffers, a stream of nobody's pair must still be
 * served: forwards take at most their budget of the pool and copy past it. */
START_TEST(stalled_forwards_leave_the_pool_to_others)
{
	iou_loop *loop = pool_loop(4 * KiB, 64);
	struct iou_stream_opts so, dopt;
	struct pair *pairs = calloc(NPAIRS, sizeof(*pairs));
	unsigned char *data = malloc(PAIR_BYTES);
	int small = 4096, stalled = 0, last_calls = -1;
	uint64_t quiet_since = t_now_ms(), end = t_now_ms() + 10000;
	struct got g = { 0 };
	iou_stream *u;
	int u_peer;

	ck_assert_ptr_nonnull(pairs);
	ck_assert_ptr_nonnull(data);
	tsp_fill(data, PAIR_BYTES, 7, 0);
	iou_stream_opts_init(&so);
	so.max_buffered = 32 * KiB;
	iou_stream_opts_init(&dopt);
	dopt.sndbuf = small;
	for (int i = 0; i < NPAIRS; i++) {
		struct pair *p = &pairs[i];

		p->src_peer = tsp_open_pair(loop, &so, &p->src);
		p->dst_peer = tsp_open_pair(loop, &dopt, &p->dst);
		ck_assert_int_eq(setsockopt(p->dst_peer, SOL_SOCKET, SO_RCVBUF,
					    &small, sizeof(small)), 0);
		ck_assert_int_eq(iou_forward(p->src, p->dst, SIZE_MAX,
					     pair_fwd_cb, p), 0);
		send_what_fits(p->src_peer, data, PAIR_BYTES);
	}
	/* Run until the forwards made no progress for a while: stalled. */
	while (t_now_ms() < end && t_now_ms() - quiet_since < 300) {
		int calls;

		ck_assert_int_ge(tsp_turn(loop), 0);
		calls = total_calls(pairs);
		if (calls != last_calls) {
			last_calls = calls;
			quiet_since = t_now_ms();
		}
	}
	for (int i = 0; i < NPAIRS; i++) {
		ck_assert_int_eq(pairs[i].err, 0);
		stalled += pairs[i].src->read_kind == IOU__RD_FORWARDING;
	}
	ck_assert_int_ge(stalled, 16);

	u_peer = tsp_open_pair(loop, NULL, &u);
	ck_assert_int_eq(send(u_peer, "hello", 5, 0), 5);
	ck_assert_int_eq(iou_read(u, sizeof(g.data), got_cb, &g), 0);
	ck_assert_msg(tsp_run_until(loop, &g.calls, 5000) == 0,
		      "a read of an unrelated stream was not served: %d "
		      "stalled forwards hold the pool (%u of %u buffers out)",
		      stalled, loop->bufs.out, loop->bufs.buf_count);
	ck_assert_int_eq(g.res, 5);
	ck_assert_mem_eq(g.data, "hello", 5);

	tsp_close_and_wait(loop, u);
	close(u_peer);
	for (int i = 0; i < NPAIRS; i++) {
		iou_close(pairs[i].src, NULL, NULL);
		iou_close(pairs[i].dst, NULL, NULL);
	}
	t_loop_destroy(loop);
	for (int i = 0; i < NPAIRS; i++) {
		close(pairs[i].src_peer);
		close(pairs[i].dst_peer);
	}
	free(pairs);
	free(data);
}
END_TEST

#define HEALTHY_PAIRS 8
#define HEALTHY_BYTES (4u * 1024 * KiB)

/* Proxies whose peers read stay zero copy: every piece a forward queues
 * is a whole receive buffer (the budget is not reached). */
START_TEST(healthy_forwards_stay_zero_copy)
{
	iou_loop *loop = pool_loop(16 * KiB, 1024);
	struct pair pairs[HEALTHY_PAIRS] = { { 0 } };
	struct tsp_peer tx[HEALTHY_PAIRS], rx[HEALTHY_PAIRS];
	unsigned long zero_copy = 0, copies = 0;
	uint64_t end = t_now_ms() + 30000;
	int done = 0;

	for (int i = 0; i < HEALTHY_PAIRS; i++) {
		struct pair *p = &pairs[i];

		p->src_peer = tsp_open_pair(loop, NULL, &p->src);
		p->dst_peer = tsp_open_pair(loop, NULL, &p->dst);
		ck_assert_int_eq(iou_forward(p->src, p->dst, SIZE_MAX,
					     pair_fwd_cb, p), 0);
		tsp_send_start(&tx[i], p->src_peer, 100 + (uint64_t)i,
			       HEALTHY_BYTES, 0, 0, TSP_KEEP);
		tsp_recv_start(&rx[i], p->dst_peer, HEALTHY_BYTES, 1,
			       100 + (uint64_t)i, NULL, 0, TSP_KEEP);
	}
	while (done < HEALTHY_PAIRS && t_now_ms() < end) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		done = 0;
		for (int i = 0; i < HEALTHY_PAIRS; i++) {
			struct iou__write *w;

			ck_assert_int_eq(pairs[i].err, 0);
			done += pairs[i].forwarded == HEALTHY_BYTES;
			for (w = pairs[i].dst->wq_head; w; w = w->next) {
				if (w->bid == IOU__SEG_NONE)
					copies++;
				else
					zero_copy++;
			}
		}
	}
	ck_assert_int_eq(done, HEALTHY_PAIRS);
	ck_assert_uint_gt(zero_copy, 0);
	ck_assert_msg(copies == 0, "healthy forwards copied %lu pieces (%lu "
		      "zero copy)", copies, zero_copy);
	for (int i = 0; i < HEALTHY_PAIRS; i++) {
		ck_assert_int_eq(tsp_join(&tx[i], JOIN_MS), 0);
		ck_assert_int_eq(tsp_join(&rx[i], JOIN_MS), 0);
		ck_assert_uint_eq(rx[i].done, HEALTHY_BYTES);
		ck_assert_uint_eq(rx[i].bad_at, SIZE_MAX);
		iou_close(pairs[i].src, NULL, NULL);
		iou_close(pairs[i].dst, NULL, NULL);
	}
	t_loop_destroy(loop);
	for (int i = 0; i < HEALTHY_PAIRS; i++) {
		close(pairs[i].src_peer);
		close(pairs[i].dst_peer);
	}
}
END_TEST

/* ======================================================================== */
/* bundles across the ring's wrap-around                                    */
/* ======================================================================== */

#ifndef IORING_REGISTER_PBUF_STATUS
#define IORING_REGISTER_PBUF_STATUS 26
#endif

struct pbuf_status {
	uint32_t buf_group;
	uint32_t head;
	uint32_t resv[8];
};

/* The kernel's head of the buffer ring (6.8+), or -1. */
static int ring_head(iou_loop *loop)
{
	struct pbuf_status st = { .buf_group = (uint32_t)loop->bufs.bgid };

	if (syscall(__NR_io_uring_register, iou__uring(loop)->ring.ring_fd,
		    IORING_REGISTER_PBUF_STATUS, &st, 1) < 0)
		return -1;
	return (int)(uint16_t)st.head;
}

/* Write a wrong buffer id into every ring slot the kernel took a buffer
 * from: after it took one, the slot is memory it may write (it does rewrite
 * a slot's length when it truncates a buffer) and that the library must not
 * read the ids of a bundle's buffers from. */
static void scribble_taken_slots(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	int head = ring_head(loop);
	uint16_t end, avail;

	ck_assert_int_ge(head, 0);
	end = (uint16_t)(b->br->tail + b->pending);
	avail = (uint16_t)(end - (uint16_t)head);
	ck_assert_uint_le(avail, b->buf_count);
	for (unsigned k = 0; k < b->buf_count - avail; k++) {
		struct io_uring_buf *e = &b->br->bufs[(uint16_t)(end + k) & b->mask];

		e->bid ^= 1;
	}
}

static void bundles_across_the_wrap(int scribble)
{
	iou_loop *loop = pool_loop(256, 16);
	struct reader r = { .loop = loop, .seed = 23, .want = 512 * KiB,
			    .chunk = 1000 };
	struct tsp_peer tx;
	uint64_t end = t_now_ms() + 20000;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), early = 0;

	if (!loop->bufs.bundle) {
		/* receive bundles came with 6.10 */
		tsp_close_and_wait(loop, s);
		close(peer);
		t_loop_destroy(loop);
		return;
	}
	if (scribble && ring_head(loop) < 0) {
		/* the ring's head is visible from 6.8 on */
		tsp_close_and_wait(loop, s);
		close(peer);
		t_loop_destroy(loop);
		return;
	}
	/* bursts of many buffers' worth: receives take bundles of up to the
	 * whole ring, from wherever its head is */
	tsp_send_start(&tx, peer, r.seed, r.want, 3000, 100, TSP_KEEP);
	reader_start(s, &r);
	while (!r.done && t_now_ms() < end) {
		if (scribble) {
			/* Bytes arrive meanwhile; with the buffers given back
			 * in the last turn published (as the turn would) and
			 * the re-armed receive submitted, the kernel takes
			 * buffers for them and posts the CQEs here, and the
			 * library handles them in the next turn. */
			struct io_uring *ring = &iou__uring(loop)->ring;
			struct timespec ts = { 0, 300000 };

			nanosleep(&ts, NULL);
			iou__bufring_publish(loop);
			ck_assert_int_ge(io_uring_submit_and_get_events(ring), 0);
			early += io_uring_cq_ready(ring) > 0;
			scribble_taken_slots(loop);
		}
		ck_assert_int_ge(tsp_turn(loop), 0);
	}
	ck_assert_msg(r.done, "read %zu of %zu bytes", r.got, r.want);
	ck_assert_int_eq(r.err, 0);
	ck_assert_msg(r.bad == 0, "%d reads delivered wrong bytes", r.bad);
	ck_assert_uint_eq(r.got, r.want);
	/* completions were handled after their slots were overwritten */
	if (scribble)
		ck_assert_int_ge(early, 10);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}

/* 512 KiB through a ring of 16 buffers of 256 bytes: the ring wraps about
 * 128 times, receives fill several buffers, every byte arrives in order. */
START_TEST(bundles_across_the_ring_wrap_keep_every_byte)
{
	bundles_across_the_wrap(0);
}
END_TEST

/* The same, with the slots the kernel took buffers from overwritten before
 * the library sees the receives' completions: their ids come from the
 * library's own records of what it put where. */
START_TEST(bundle_ids_do_not_come_from_the_shared_ring)
{
	T_URING_ONLY("the kernel's side of the buffer ring");
	bundles_across_the_wrap(1);
}
END_TEST

/* ======================================================================== */
/* memory that follows the load                                             */
/* ======================================================================== */

/* Bytes of the pool's memory that are resident. */
static size_t pool_resident(iou_loop *loop)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (size_t)loop->pool.buf_size * loop->bufs.buf_count;
	size_t pages = (len + page - 1) / page, n = 0;
	unsigned char *vec = malloc(pages);

	ck_assert_ptr_nonnull(vec);
	ck_assert_int_eq(mincore(loop->pool.base, len, vec), 0);
	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	free(vec);
	return n * page;
}

/* One connection of small messages, one at a time: a handful of buffers
 * serve it, the rest of the default pool (1024 x 16 KiB) is never touched
 * and never resident. */
START_TEST(light_load_touches_few_buffers)
{
	iou_loop *loop = pool_loop(16 * KiB, 1024);
	uint8_t *seen = calloc(1024, 1);
	struct reader r = { .loop = loop, .seed = 5, .want = 1000 * 100,
			    .seen = seen };
	struct tsp_peer tx;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	unsigned distinct;
	size_t resident;

	ck_assert_ptr_nonnull(seen);
	tsp_send_start(&tx, peer, r.seed, r.want, 100, 300, TSP_KEEP);
	reader_start(s, &r);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 30000), 0);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq(r.bad, 0);
	distinct = count_set(seen, 1024);
	resident = pool_resident(loop);
	ck_assert_msg(distinct <= 64, "1000 messages of 100 bytes went through "
		      "%u different buffers", distinct);
	ck_assert_msg(resident <= 64 * 16 * KiB, "%zu KiB of the pool resident",
		      resident / KiB);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
	free(seen);
}
END_TEST

#define BURST_STREAMS 4

static void peek_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	(void)s; (void)d;
	*(ssize_t *)ud = res;
}

/* Streams that keep what they received need the whole pool: it grows to
 * all of it (and no further), the bytes stay intact, and once the pool is
 * all held the starved-stream rescue still copies idle holders out. */
START_TEST(burst_gets_the_whole_pool)
{
	iou_loop *loop = pool_loop(4 * KiB, 64);
	iou_stream *s[BURST_STREAMS + 1];
	int peer[BURST_STREAMS + 1];
	ssize_t peeked[BURST_STREAMS + 1];
	unsigned char *data = malloc(64 * KiB);
	uint64_t end = t_now_ms() + 10000;
	struct reader r = { .loop = loop, .seed = 9, .want = 200 * KiB };
	struct tsp_peer tx;
	int full = 0;

	ck_assert_ptr_nonnull(data);
	for (int i = 0; i < BURST_STREAMS; i++) {
		peer[i] = tsp_open_pair(loop, NULL, &s[i]);
		tsp_fill(data, 64 * KiB, 50 + (uint64_t)i, 0);
		ck_assert_int_eq(send(peer[i], data, 64 * KiB, 0),
				 (ssize_t)(64 * KiB));
		peeked[i] = 0;
		ck_assert_int_eq(iou_peek(s[i], 1, peek_cb, &peeked[i]), 0);
	}
	/* 4 x 64 KiB held: all 64 buffers */
	while (full < BURST_STREAMS && t_now_ms() < end) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		full = 0;
		for (int i = 0; i < BURST_STREAMS; i++)
			full += iou_buffered(s[i]) == 64 * KiB;
	}
	ck_assert_int_eq(full, BURST_STREAMS);
	ck_assert_uint_eq(loop->bufs.out, 64);
	/* a fifth stream: the holders are copied out for it */
	peer[BURST_STREAMS] = tsp_open_pair(loop, NULL, &s[BURST_STREAMS]);
	tsp_send_start(&tx, peer[BURST_STREAMS], r.seed, r.want, 0, 0,
		       TSP_KEEP);
	reader_start(s[BURST_STREAMS], &r);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 20000), 0);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq(r.bad, 0);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	for (int i = 0; i < BURST_STREAMS; i++) {
		unsigned char *back = malloc(64 * KiB);

		ck_assert_ptr_nonnull(back);
		ck_assert_int_eq(peeked[i], 1);
		ck_assert_int_eq(iou_take_buffer(s[i], back, 64 * KiB),
				 (ssize_t)(64 * KiB));
		ck_assert_uint_eq(tsp_mismatch(back, 64 * KiB,
					       50 + (uint64_t)i, 0),
				  64 * KiB);
		free(back);
	}
	for (int i = 0; i <= BURST_STREAMS; i++) {
		tsp_close_and_wait(loop, s[i]);
		close(peer[i]);
	}
	t_loop_destroy(loop);
	free(data);
}
END_TEST

#define AFTER_STREAMS 8
#define AFTER_BYTES (256 * KiB)

/* After a burst that put many buffers in circulation, a light load lets
 * them leave the ring as they come back, and their pages are released: the
 * pool's resident memory goes back down.  (The period the load must stay
 * light is 10 s; shortened here.) */
START_TEST(memory_returns_after_a_burst)
{
	iou_loop *loop = pool_loop(16 * KiB, 1024);
	iou_stream *s[AFTER_STREAMS];
	int peer[AFTER_STREAMS];
	ssize_t peeked[AFTER_STREAMS];
	unsigned char *data = malloc(AFTER_BYTES);
	uint64_t end = t_now_ms() + 10000;
	struct reader r = { .loop = loop, .seed = 77, .want = 2000 * 100 };
	struct tsp_peer tx;
	size_t burst, after;
	int full = 0;

	ck_assert_ptr_nonnull(data);
	loop->bufs.quiet_ms = 200;
	loop->bufs.period_end = 0;
	for (int i = 0; i < AFTER_STREAMS; i++) {
		peer[i] = tsp_open_pair(loop, NULL, &s[i]);
		tsp_fill(data, AFTER_BYTES, 60 + (uint64_t)i, 0);
		ck_assert_int_eq(send(peer[i], data, AFTER_BYTES, 0),
				 (ssize_t)AFTER_BYTES);
		peeked[i] = 0;
		ck_assert_int_eq(iou_peek(s[i], 1, peek_cb, &peeked[i]), 0);
	}
	while (full < AFTER_STREAMS && t_now_ms() < end) {
		ck_assert_int_ge(tsp_turn(loop), 0);
		full = 0;
		for (int i = 0; i < AFTER_STREAMS; i++)
			full += iou_buffered(s[i]) == AFTER_BYTES;
	}
	ck_assert_int_eq(full, AFTER_STREAMS);
	burst = pool_resident(loop);
	ck_assert_uint_ge(burst, AFTER_STREAMS * AFTER_BYTES / 2);
	for (int i = 0; i < AFTER_STREAMS; i++) {
		ck_assert_int_eq(peeked[i], 1);
		ck_assert_int_eq(iou_take_buffer(s[i], data, AFTER_BYTES),
				 (ssize_t)AFTER_BYTES);
		ck_assert_uint_eq(tsp_mismatch(data, AFTER_BYTES,
					       60 + (uint64_t)i, 0),
				  AFTER_BYTES);
		tsp_close_and_wait(loop, s[i]);
		close(peer[i]);
	}
	/* one connection of small messages, then some quiet periods */
	peer[0] = tsp_open_pair(loop, NULL, &s[0]);
	tsp_send_start(&tx, peer[0], r.seed, r.want, 100, 300, TSP_KEEP);
	reader_start(s[0], &r);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 30000), 0);
	ck_assert_int_eq(r.err, 0);
	ck_assert_int_eq(r.bad, 0);
	tsp_run_for(loop, 600);
	after = pool_resident(loop);
	ck_assert_msg(after <= 64 * 16 * KiB, "%zu KiB of the pool resident "
		      "after the burst's %zu KiB and %zu messages of 100 bytes",
		      after / KiB, burst / KiB, r.want / 100);
	ck_assert_uint_le(loop->bufs.live, 64);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	tsp_close_and_wait(loop, s[0]);
	close(peer[0]);
	t_loop_destroy(loop);
	free(data);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc;

	tc = tcase_create("forward");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, stalled_forwards_leave_the_pool_to_others);
	tcase_add_test(tc, healthy_forwards_stay_zero_copy);
	suite_add_tcase(s, tc);

	tc = tcase_create("bundle");
	tcase_set_timeout(tc, 45);
	tcase_add_test(tc, bundles_across_the_ring_wrap_keep_every_byte);
	tcase_add_test(tc, bundle_ids_do_not_come_from_the_shared_ring);
	suite_add_tcase(s, tc);

	tc = tcase_create("memory");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, light_load_touches_few_buffers);
	tcase_add_test(tc, burst_gets_the_whole_pool);
	tcase_add_test(tc, memory_returns_after_a_burst);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(pool_suite());
}
