/* SPDX-License-Identifier: MIT */
/*
 * check_stream: raw stream operations (open, read, write, write_all,
 * feed/drain, forward, shutdown, close) and client connect, against real
 * TCP connections on loopback whose far end is a plain blocking socket
 * driven by a helper thread (tests/t_stream_peer.h).
 *
 * SIGPIPE keeps its default action on purpose: a write that raised it would
 * kill the test.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connect.h" /* iou__connect_addrs(): several addresses */
#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)
#define JOIN_MS 20000

/* ---- small helpers ------------------------------------------------------ */

/* Run turns until the peer thread finished (bounded), then join it. */
static int run_join(iou_loop *loop, struct tsp_peer *p, int timeout_ms)
{
	uint64_t end = t_now_ms() + (uint64_t)timeout_ms;

	for (long i = 0; i < (long)timeout_ms * 100 + 100 && t_now_ms() < end &&
			 !__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	return tsp_join(p, 1000);
}

static unsigned char *pattern(size_t len, uint64_t seed)
{
	unsigned char *p = malloc(len ? len : 1);

	ck_assert_ptr_nonnull(p);
	tsp_fill(p, len, seed, 0);
	return p;
}

/* Reads with iou_read(max) until `want` bytes, end of file or an error,
 * checking every byte against the stream `seed`. */
struct reader {
	uint64_t seed;
	size_t max, want, got, bad_at, over_max;
	int eof, err, done, calls;
};

static void reader_init(struct reader *r, uint64_t seed, size_t max,
			size_t want)
{
	memset(r, 0, sizeof(*r));
	r->seed = seed;
	r->max = max;
	r->want = want;
	r->bad_at = SIZE_MAX;
}

static void reader_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct reader *r = ud;
	int ret;

	r->calls++;
	if (res <= 0) {
		if (res == 0)
			r->eof = 1;
		else
			r->err = (int)res;
		if (data)
			r->bad_at = r->got; /* errors carry no data */
		r->done = 1;
		return;
	}
	if ((size_t)res > r->max)
		r->over_max++;
	if (!data) {
		r->bad_at = r->got;
	} else if (r->bad_at == SIZE_MAX) {
		size_t m = tsp_mismatch(data, (size_t)res, r->seed, r->got);

		if (m < (size_t)res)
			r->bad_at = r->got + m;
	}
	r->got += (size_t)res;
	if (r->got >= r->want) {
		r->done = 1;
		return;
	}
	ret = iou_read(s, r->max, reader_cb, r);
	if (ret < 0) {
		r->err = ret;
		r->done = 1;
	}
}

/* Write callbacks that record their order and result. */
struct wlog {
	int n;
	int order[64];
	ssize_t res[64];
};

struct wtag {
	struct wlog *log;
	int id;
};

static void wlog_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct wtag *t = ud;

	(void)s;
	ck_assert_int_lt(t->log->n, 64);
	t->log->order[t->log->n] = t->id;
	t->log->res[t->log->n] = res;
	t->log->n++;
}

static iou_loop *new_loop(void)
{
	return t_loop_create_or_skip(NULL);
}

/* ======================================================================== */
/* open and accessors                                                       */
/* ======================================================================== */

START_TEST(open_rejects_bad_arguments)
{
	iou_loop *loop = new_loop();
	struct iou_stream_opts o;
	iou_stream *s = NULL;
	int fds[2], pfd[2], u;

	t_tcp_pair(fds);
	ck_assert_int_eq(iou_stream_open(NULL, fds[0], NULL, &s), -EINVAL);
	ck_assert_int_eq(iou_stream_open(loop, -1, NULL, &s), -EINVAL);
	ck_assert_int_eq(iou_stream_open(loop, fds[0], NULL, NULL), -EINVAL);
	iou_stream_opts_init(&o);
	o.max_buffered = 0;
	ck_assert_int_eq(iou_stream_open(loop, fds[0], &o, &s), -EINVAL);
	iou_stream_opts_init(&o);
	o.sndbuf = -1;
	ck_assert_int_eq(iou_stream_open(loop, fds[0], &o, &s), -EINVAL);
	ck_assert_ptr_null(s);
	/* not a socket, not a stream socket */
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(iou_stream_open(loop, pfd[0], NULL, &s), -ENOTSOCK);
	u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(u, 0);
	ck_assert_int_eq(iou_stream_open(loop, u, NULL, &s), -EINVAL);
	ck_assert_ptr_null(s);
	close(u);
	close(pfd[0]);
	close(pfd[1]);
	close(fds[0]);
	close(fds[1]);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(open_clears_nonblocking_and_accessors)
{
	iou_loop *loop = new_loop();
	iou_stream *s;
	int marker, peer = tsp_open_pair(loop, NULL, &s);
	int fd = iou_stream_fd(s);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	ck_assert_ptr_eq(iou_stream_loop(s), loop);
	ck_assert_ptr_null(iou_stream_data(s));
	iou_stream_set_data(s, &marker);
	ck_assert_ptr_eq(iou_stream_data(s), &marker);
	ck_assert_uint_eq(iou_buffered(s), 0);
	ck_assert_uint_eq(iou_fed(s), 0);
	ck_assert_int_eq(iou_stream_fd(NULL), -EINVAL);
	ck_assert_ptr_null(iou_stream_loop(NULL));
	ck_assert_ptr_null(iou_stream_data(NULL));
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* The header: iou_loop_alive() counts open streams, and iou_loop_destroy()
 * is -EBUSY while one remains. */
START_TEST(loop_stays_alive_while_stream_open)
{
	iou_loop *loop = new_loop();
	iou_stream *s;
	int peer;

	ck_assert_int_eq(t_loop_drain(loop, 1000), 0);
	peer = tsp_open_pair(loop, NULL, &s);
	ck_assert_int_eq(iou_loop_alive(loop), 1);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	tsp_close_and_wait(loop, s);
	ck_assert_int_eq(t_loop_drain(loop, 1000), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* happy path: read, write, write_all, feed/drain, forward                  */
/* ======================================================================== */

static const size_t sizes[] = { 1, 2, 63, 64, 65, 4095, 4096, 4097,
				65536, 100001, 1 * MiB, 8 * MiB };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Every size read byte-exact from a peer that sends it in 64 KiB bursts
 * and then shuts down: the reader sees all bytes, then 0. */
START_TEST(read_sizes_byte_exact_then_eof)
{
	iou_loop *loop = new_loop();

	for (size_t i = 0; i < NSIZES; i++) {
		struct tsp_peer p;
		struct reader r;
		iou_stream *s;
		int peer = tsp_open_pair(loop, NULL, &s);

		tsp_send_start(&p, peer, 100 + i, sizes[i], 0, 0, TSP_SHUT_WR);
		reader_init(&r, 100 + i, 256 * KiB, SIZE_MAX);
		ck_assert_int_eq(iou_read(s, r.max, reader_cb, &r), 0);
		ck_assert_int_eq(tsp_run_until(loop, &r.done, 15000), 0);
		ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
		ck_assert_int_eq(p.err, 0);
		ck_assert_msg(r.got == sizes[i] && r.eof && !r.err,
			      "size %zu: got %zu eof %d err %d", sizes[i], r.got,
			      r.eof, r.err);
		ck_assert_uint_eq(r.bad_at, SIZE_MAX);
		tsp_close_and_wait(loop, s);
		close(peer);
	}
	t_loop_destroy(loop);
}
END_TEST

/* A peer that sends one byte per send() with pauses: every byte arrives in
 * order; read(max) never returns more than max. */
START_TEST(read_one_byte_chunks_byte_exact)
{
	iou_loop *loop = new_loop();
	struct tsp_peer p;
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_send_start(&p, peer, 7, 1500, 1, 50, TSP_SHUT_WR);
	reader_init(&r, 7, 3, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, 3, reader_cb, &r), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 15000), 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(r.got, 1500);
	ck_assert(r.eof && !r.err);
	ck_assert_uint_eq(r.bad_at, SIZE_MAX);
	ck_assert_uint_eq(r.over_max, 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* write_all of every size, all queued at once: callbacks run in issue
 * order with the full length, and the peer receives the concatenation
 * byte-exact. */
START_TEST(write_all_sizes_queued_in_order)
{
	iou_loop *loop = new_loop();
	struct tsp_peer p;
	struct wlog log = { 0 };
	struct wtag tags[NSIZES];
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	size_t total = 0, off = 0;
	unsigned char *buf;

	for (size_t i = 0; i < NSIZES; i++)
		total += sizes[i];
	buf = pattern(total, 21);
	tsp_recv_start(&p, peer, total, 1, 21, NULL, 0, TSP_KEEP);
	for (size_t i = 0; i < NSIZES; i++) {
		tags[i].log = &log;
		tags[i].id = (int)i;
		ck_assert_int_eq(iou_write_all(s, buf + off, sizes[i], wlog_cb,
					       &tags[i]), 0);
		off += sizes[i];
	}
	ck_assert_int_eq(log.n, 0); /* never synchronously */
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, (int)NSIZES, 15000), 0);
	for (size_t i = 0; i < NSIZES; i++) {
		ck_assert_int_eq(log.order[i], (int)i);
		ck_assert_int_eq(log.res[i], (ssize_t)sizes[i]);
	}
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, total);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* iou_write may send less than asked: re-issuing the rest from the
 * callback delivers everything byte-exact. */
struct short_writer {
	const unsigned char *buf;
	size_t len, done;
	int calls, err, finished;
};

static void short_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct short_writer *w = ud;
	int ret;

	w->calls++;
	if (res <= 0 || (size_t)res > w->len - w->done) {
		w->err = res < 0 ? (int)res : -1;
		w->finished = 1;
		return;
	}
	w->done += (size_t)res;
	if (w->done == w->len) {
		w->finished = 1;
		return;
	}
	ret = iou_write(s, w->buf + w->done, w->len - w->done, short_write_cb, w);
	if (ret < 0) {
		w->err = ret;
		w->finished = 1;
	}
}

START_TEST(write_short_counts_resume_byte_exact)
{
	iou_loop *loop = new_loop();
	struct iou_stream_opts o;
	struct short_writer w = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer;

	iou_stream_opts_init(&o);
	o.sndbuf = 32 * KiB;
	peer = tsp_open_pair(loop, &o, &s);
	w.len = 8 * MiB;
	w.buf = pattern(w.len, 22);
	tsp_recv_start(&p, peer, w.len, 1, 22, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(iou_write(s, w.buf, w.len, short_write_cb, &w), 0);
	ck_assert_int_eq(tsp_run_until(loop, &w.finished, 15000), 0);
	ck_assert_int_eq(w.err, 0);
	ck_assert_uint_eq(w.done, w.len);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, w.len);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	free((void *)w.buf);
	t_loop_destroy(loop);
}
END_TEST

/* Hundreds of writes of every kind queued at once and from callbacks, on
 * a small send buffer with a slow reader, so that the sends (gathered or
 * not) end short in the middle of writes: the wire carries, in issue
 * order, the first res bytes of each write (res = its callback's count;
 * the full length for write_all and drain), and callbacks run in issue
 * order. */
enum { MW_ALL, MW_SOME, MW_DRAIN, MW_EMPTY_DRAIN };

struct mw_op {
	const unsigned char *buf;
	size_t len;
	ssize_t res;
	int kind, done;
};

struct mixed {
	iou_stream *s;
	const unsigned char *src;
	size_t src_len, src_off;
	struct mw_op ops[400];
	int nops, ncb, order_bad, res_bad, err;
	uint64_t x;
};

static void mw_cb(iou_stream *s, ssize_t res, void *ud);

static void mw_issue(struct mixed *m, int kind)
{
	struct mw_op *op;
	size_t len;
	int ret;

	if (m->nops == 400)
		return;
	m->x = m->x * 6364136223846793005ull + 1442695040888963407ull;
	len = kind == MW_EMPTY_DRAIN ? 0 : (size_t)(m->x >> 33) % 20000 + 1;
	if (m->src_off + len > m->src_len)
		return;
	op = &m->ops[m->nops];
	op->buf = m->src + m->src_off;
	op->len = len;
	op->kind = kind;
	m->src_off += len;
	switch (kind) {
	case MW_ALL:
		ret = iou_write_all(m->s, op->buf, len, mw_cb, m);
		break;
	case MW_SOME:
		ret = iou_write(m->s, op->buf, len, mw_cb, m);
		break;
	case MW_DRAIN:
		ret = iou_feed(m->s, op->buf, len / 3);
		if (ret == 0)
			ret = iou_feed(m->s, op->buf + len / 3, len - len / 3);
		if (ret == 0)
			ret = iou_drain(m->s, mw_cb, m);
		break;
	default:
		ret = iou_drain(m->s, mw_cb, m);
		break;
	}
	if (ret < 0)
		m->err = ret;
	else
		m->nops++;
}

static void mw_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct mixed *m = ud;
	struct mw_op *op;

	(void)s;
	/* callbacks come in issue order: this one is for ops[ncb] */
	if (m->ncb >= m->nops) {
		m->order_bad++;
		return;
	}
	op = &m->ops[m->ncb++];
	op->res = res;
	op->done = 1;
	if (res < 0 || (size_t)res > op->len ||
	    (op->kind != MW_SOME && (size_t)res != op->len) ||
	    (op->kind == MW_SOME && res == 0))
		m->res_bad++;
	/* now and then queue more from inside the callback */
	if (m->ncb % 7 == 0)
		mw_issue(m, MW_ALL);
	if (m->ncb % 11 == 0)
		mw_issue(m, MW_SOME);
}

START_TEST(mixed_writes_short_sends_issue_order)
{
	iou_loop *loop = new_loop();
	struct iou_stream_opts o;
	struct mixed *m = calloc(1, sizeof(*m));
	size_t cap = 8 * MiB, wire_len = 0, off = 0;
	unsigned char *store = malloc(cap);
	struct tsp_peer p;
	iou_stream *s;
	int peer, rcv = 16 * 1024;

	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_nonnull(store);
	iou_stream_opts_init(&o);
	o.sndbuf = 16 * KiB;
	peer = tsp_open_pair(loop, &o, &s);
	setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	m->s = s;
	m->src_len = 6 * MiB;
	m->src = pattern(m->src_len, 25);
	m->x = 99;
	tsp_recv_start(&p, peer, SIZE_MAX, 0, 0, store, cap, TSP_KEEP);
	for (int i = 0; i < 250; i++)
		mw_issue(m, i % 4);
	ck_assert_int_eq(m->err, 0);
	ck_assert_int_eq(m->ncb, 0); /* never synchronously */
	for (int i = 0; i < 200000 && m->ncb < m->nops; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(m->err, 0);
	ck_assert_int_eq(m->ncb, m->nops);
	ck_assert_int_eq(m->order_bad, 0);
	ck_assert_int_eq(m->res_bad, 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0);
	ck_assert_int_eq(run_join(loop, &p, JOIN_MS), 0);
	ck_assert_int_eq(p.eof, 1);
	for (int i = 0; i < m->nops; i++)
		wire_len += (size_t)m->ops[i].res;
	ck_assert_uint_eq(p.done, wire_len);
	for (int i = 0; i < m->nops; i++) {
		size_t n = (size_t)m->ops[i].res;

		ck_assert_msg(memcmp(store + off, m->ops[i].buf, n) == 0,
			      "write %d (kind %d, %zu of %zu bytes) differs on the wire",
			      i, m->ops[i].kind, n, m->ops[i].len);
		off += n;
	}
	tsp_close_and_wait(loop, s);
	close(peer);
	free((void *)m->src);
	free(m);
	free(store);
	t_loop_destroy(loop);
}
END_TEST

/* feed A, write B, feed C, drain: the write was issued first, the drain
 * (A then C) second, so the wire carries B A C and the callbacks run write
 * then drain. */
START_TEST(feed_write_feed_drain_issue_order)
{
	iou_loop *loop = new_loop();
	struct wlog log = { 0 };
	struct wtag tw = { &log, 1 }, td = { &log, 2 }, td2 = { &log, 3 };
	unsigned char got[64] = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_recv_start(&p, peer, 10, 0, 0, got, sizeof(got), TSP_KEEP);
	ck_assert_int_eq(iou_feed(s, "AA", 2), 0);
	ck_assert_uint_eq(iou_fed(s), 2);
	ck_assert_int_eq(iou_write(s, "BBB", 3, wlog_cb, &tw), 0);
	ck_assert_int_eq(iou_feed(s, "C", 1), 0);
	ck_assert_uint_eq(iou_fed(s), 3);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &td), 0);
	ck_assert_uint_eq(iou_fed(s), 0);
	/* the fed buffer is reused after the drain completes */
	ck_assert_int_eq(iou_feed(s, "DDDD", 4), 0);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &td2), 0);
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, 3, 5000), 0);
	ck_assert_int_eq(log.order[0], 1);
	ck_assert_int_eq(log.res[0], 3);
	ck_assert_int_eq(log.order[1], 2);
	ck_assert_int_eq(log.res[1], 3);
	ck_assert_int_eq(log.order[2], 3);
	ck_assert_int_eq(log.res[2], 4);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, 10);
	ck_assert_int_eq(memcmp(got, "BBBAACDDDD", 10), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* A drain with nothing fed completes with 0, in order behind the writes
 * queued before it. */
START_TEST(drain_nothing_fed_gives_zero_in_order)
{
	iou_loop *loop = new_loop();
	struct wlog log = { 0 };
	struct wtag tw = { &log, 1 }, td = { &log, 2 }, td2 = { &log, 3 };
	size_t len = 4 * MiB;
	unsigned char *buf = pattern(len, 23);
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_recv_start(&p, peer, len, 1, 23, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &td), 0);
	ck_assert_int_eq(iou_write_all(s, buf, len, wlog_cb, &tw), 0);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &td2), 0);
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, 3, 10000), 0);
	ck_assert_int_eq(log.order[0], 2);
	ck_assert_int_eq(log.res[0], 0);
	ck_assert_int_eq(log.order[1], 1);
	ck_assert_int_eq(log.res[1], (ssize_t)len);
	ck_assert_int_eq(log.order[2], 3);
	ck_assert_int_eq(log.res[2], 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* Many feed/drain rounds of assorted sizes, interleaved with writes:
 * byte-exact on the wire. */
struct fd_round {
	iou_stream *s;
	const unsigned char *buf;
	size_t len, off;
	int round, rounds, err, finished;
};

static void fd_round_cb(iou_stream *s, ssize_t res, void *ud);

static void fd_round_next(struct fd_round *r)
{
	size_t n = (size_t)(r->round * 37 % 1500) + 1, m;
	int ret;

	if (r->round == r->rounds || r->off == r->len) {
		r->finished = 1;
		return;
	}
	if (n > r->len - r->off)
		n = r->len - r->off;
	m = n / 2;
	/* two feeds, then one drain of both */
	ret = iou_feed(r->s, r->buf + r->off, m);
	if (ret == 0)
		ret = iou_feed(r->s, r->buf + r->off + m, n - m);
	if (ret == 0)
		ret = iou_drain(r->s, fd_round_cb, r);
	if (ret < 0) {
		r->err = ret;
		r->finished = 1;
		return;
	}
	r->off += n;
	r->round++;
}

static void fd_round_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct fd_round *r = ud;

	(void)s;
	if (res <= 0) {
		r->err = res < 0 ? (int)res : -1;
		r->finished = 1;
		return;
	}
	fd_round_next(r);
}

START_TEST(feed_drain_rounds_byte_exact)
{
	iou_loop *loop = new_loop();
	struct fd_round r = { 0 };
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	r.s = s;
	r.len = 512 * KiB;
	r.buf = pattern(r.len, 24);
	r.rounds = 1 << 20;
	tsp_recv_start(&p, peer, r.len, 1, 24, NULL, 0, TSP_KEEP);
	fd_round_next(&r);
	ck_assert_int_eq(tsp_run_until(loop, &r.finished, 15000), 0);
	ck_assert_int_eq(r.err, 0);
	ck_assert_uint_eq(r.off, r.len);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.done, r.len);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	free((void *)r.buf);
	t_loop_destroy(loop);
}
END_TEST

/* Echo and proxy on iou_forward: re-issued from its callback until 0 (end
 * of file on `from`), which then shuts down `to`. */
struct fwd {
	iou_stream *from, *to;
	size_t total, max, over_max;
	int calls, eof, err, done;
};

static void fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct fwd *f = ud;
	int ret;

	ck_assert_ptr_eq(s, f->from);
	f->calls++;
	if (res < 0) {
		f->err = (int)res;
		f->done = 1;
		return;
	}
	if (res == 0) {
		f->eof = 1;
		ret = iou_shutdown(f->to, SHUT_WR);
		if (ret < 0)
			f->err = ret;
		f->done = 1;
		return;
	}
	f->total += (size_t)res;
	if ((size_t)res > f->max)
		f->over_max++;
	ret = iou_forward(f->from, f->to, f->max, fwd_cb, f);
	if (ret < 0) {
		f->err = ret;
		f->done = 1;
	}
}

static void forward_echo(size_t len, size_t chunk, unsigned pause_us,
			 unsigned buf_size, size_t max)
{
	struct iou_loop_opts lo;
	iou_loop *loop;
	struct tsp_peer tx, rx;
	struct fwd f = { 0 };
	iou_stream *s;
	int peer;

	iou_loop_opts_init(&lo);
	lo.buf_size = buf_size;
	loop = t_loop_create_or_skip(&lo);
	peer = tsp_open_pair(loop, NULL, &s);
	f.from = f.to = s;
	f.max = max;
	tsp_recv_start(&rx, peer, SIZE_MAX, 1, 31, NULL, 0, TSP_KEEP);
	tsp_send_start(&tx, peer, 31, len, chunk, pause_us, TSP_SHUT_WR);
	ck_assert_int_eq(iou_forward(s, s, max, fwd_cb, &f), 0);
	ck_assert_int_eq(tsp_run_until(loop, &f.done, 20000), 0);
	ck_assert_int_eq(f.err, 0);
	ck_assert_int_eq(f.eof, 1);
	ck_assert_uint_eq(f.total, len);
	ck_assert_uint_eq(f.over_max, 0);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	ck_assert_int_eq(run_join(loop, &rx, JOIN_MS), 0); /* saw our FIN */
	ck_assert_int_eq(rx.eof, 1);
	ck_assert_uint_eq(rx.done, len);
	ck_assert_uint_eq(rx.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}

START_TEST(forward_echo_to_self_byte_exact_with_eof)
{
	forward_echo(4 * MiB, 0, 0, 4096, 64 * KiB);
}
END_TEST

/* 64-byte receive buffers and a forward limit that is not a multiple of
 * them: pieces of buffers are copied, whole ones handed over. */
START_TEST(forward_echo_small_max_across_buffers)
{
	forward_echo(512 * KiB + 5, 0, 0, 64, 100);
}
END_TEST

START_TEST(forward_echo_one_byte_chunks)
{
	forward_echo(1200, 1, 50, 4096, 64 * KiB);
}
END_TEST

START_TEST(forward_to_other_stream_byte_exact_with_eof)
{
	iou_loop *loop = new_loop();
	struct tsp_peer tx, rx;
	struct fwd f = { 0 };
	iou_stream *a, *b;
	int pa = tsp_open_pair(loop, NULL, &a), pb = tsp_open_pair(loop, NULL, &b);
	size_t len = 6 * MiB + 123;

	f.from = a;
	f.to = b;
	f.max = 64 * KiB;
	tsp_send_start(&tx, pa, 32, len, 0, 0, TSP_SHUT_WR);
	tsp_recv_start(&rx, pb, SIZE_MAX, 1, 32, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(iou_forward(a, b, 64 * KiB, fwd_cb, &f), 0);
	ck_assert_int_eq(tsp_run_until(loop, &f.done, 20000), 0);
	ck_assert_int_eq(f.err, 0);
	ck_assert_int_eq(f.eof, 1);
	ck_assert_uint_eq(f.total, len);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	ck_assert_int_eq(run_join(loop, &rx, JOIN_MS), 0);
	ck_assert_int_eq(rx.eof, 1);
	ck_assert_uint_eq(rx.done, len);
	ck_assert_uint_eq(rx.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, a);
	tsp_close_and_wait(loop, b);
	close(pa);
	close(pb);
	t_loop_destroy(loop);
}
END_TEST

/* ---- addresses ---------------------------------------------------------- */

START_TEST(peer_and_local_address_ipv4)
{
	iou_loop *loop = new_loop();
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char host[64];
	uint16_t port = 0;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_peer_address(s, host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_int_eq(getsockname(peer, (struct sockaddr *)&sa, &sl), 0);
	ck_assert_uint_eq(port, ntohs(sa.sin_port));
	ck_assert_int_eq(iou_local_address(s, host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	sl = sizeof(sa);
	ck_assert_int_eq(getpeername(peer, (struct sockaddr *)&sa, &sl), 0);
	ck_assert_uint_eq(port, ntohs(sa.sin_port));
	/* port may be NULL; too small a buffer is -ENOSPC */
	ck_assert_int_eq(iou_peer_address(s, host, sizeof(host), NULL), 0);
	ck_assert_int_eq(iou_peer_address(s, host, 4, &port), -ENOSPC);
	ck_assert_int_eq(iou_peer_address(NULL, host, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(iou_local_address(s, NULL, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(iou_local_address(s, host, 0, &port), -EINVAL);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

struct conn_res {
	iou_stream *s;
	int res, calls;
	uint64_t at;
};

static void conn_cb(iou_stream *s, int res, void *ud)
{
	struct conn_res *c = ud;

	c->s = s;
	c->res = res;
	c->calls++;
	c->at = t_now_ms();
	ck_assert_ptr_nonnull(s); /* failed too: released after the call */
}

/* A listener on ::1, port 0; -1 if IPv6 loopback is unavailable. */
static int listen_ipv6(uint16_t *port)
{
	struct sockaddr_in6 sa = { 0 };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	sa.sin6_family = AF_INET6;
	sa.sin6_addr = in6addr_loopback;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(sa.sin6_port);
	return fd;
}

START_TEST(peer_and_local_address_ipv6)
{
	iou_loop *loop = new_loop();
	struct conn_res c = { 0 };
	struct sockaddr_in6 sa;
	socklen_t sl = sizeof(sa);
	char host[64];
	uint16_t port, got_port = 0;
	int lfd = listen_ipv6(&port), afd;

	if (lfd < 0) {
		fprintf(stderr, "peer_and_local_address_ipv6: no ::1, skipped\n");
		t_loop_destroy(loop);
		return;
	}
	ck_assert_int_eq(iou_tcp_connect(loop, "::1", port, NULL, conn_cb, &c, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, 0);
	afd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
	ck_assert_int_ge(afd, 0);
	ck_assert_int_eq(iou_peer_address(c.s, host, sizeof(host), &got_port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_uint_eq(got_port, port);
	ck_assert_int_eq(iou_local_address(c.s, host, sizeof(host), &got_port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_uint_eq(got_port, ntohs(sa.sin6_port));
	ck_assert_int_eq(iou_sockaddr_text((struct sockaddr *)&sa, host,
					   sizeof(host), &got_port), 0);
	ck_assert_str_eq(host, "::1");
	tsp_close_and_wait(loop, c.s);
	close(afd);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* end of file and shutdown                                                 */
/* ======================================================================== */

START_TEST(read_eof_gives_zero_and_again)
{
	iou_loop *loop = new_loop();
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	reader_init(&r, 0, 100, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), 0);
	ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert(r.eof && r.got == 0 && !r.err);
	/* end of file is sticky */
	reader_init(&r, 0, 100, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), 0);
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert(r.eof && r.calls == 1);
	/* our write side still works after the peer's FIN */
	{
		struct wlog log = { 0 };
		struct wtag t = { &log, 1 };
		char got[4];

		ck_assert_int_eq(iou_write_all(s, "ping", 4, wlog_cb, &t), 0);
		ck_assert_int_eq(tsp_run_until(loop, &log.n, 5000), 0);
		ck_assert_int_eq(log.res[0], 4);
		ck_assert_int_eq(recv(peer, got, 4, MSG_WAITALL), 4);
		ck_assert_int_eq(memcmp(got, "ping", 4), 0);
	}
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* shutdown(SHUT_WR) right after queueing a large write: the FIN goes out
 * after every queued byte; the peer reads them all, then end of file. */
START_TEST(shutdown_wr_after_writes_peer_sees_all_then_eof)
{
	iou_loop *loop = new_loop();
	struct wlog log = { 0 };
	struct wtag t1 = { &log, 1 }, t2 = { &log, 2 };
	size_t len = 3 * MiB;
	unsigned char *buf = pattern(len, 41);
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	tsp_recv_start(&p, peer, SIZE_MAX, 1, 41, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(iou_write_all(s, buf, len / 2, wlog_cb, &t1), 0);
	ck_assert_int_eq(iou_write_all(s, buf + len / 2, len - len / 2, wlog_cb,
				       &t2), 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0); /* idempotent */
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, 2, 10000), 0);
	ck_assert_int_eq(log.res[0], (ssize_t)(len / 2));
	ck_assert_int_eq(log.res[1], (ssize_t)(len - len / 2));
	/* the peer's reader ends only at our FIN */
	ck_assert_int_eq(run_join(loop, &p, JOIN_MS), 0);
	ck_assert_int_eq(p.eof, 1);
	ck_assert_uint_eq(p.done, len);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(writes_after_shutdown_wr_are_eclosed)
{
	iou_loop *loop = new_loop();
	struct wlog log = { 0 };
	struct wtag t = { &log, 1 };
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	char c;

	ck_assert_int_eq(iou_feed(s, "x", 1), 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0);
	ck_assert_int_eq(iou_write(s, "a", 1, wlog_cb, &t), -IOU_ECLOSED);
	ck_assert_int_eq(iou_write_all(s, "a", 1, wlog_cb, &t), -IOU_ECLOSED);
	ck_assert_int_eq(iou_feed(s, "a", 1), -IOU_ECLOSED);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &t), -IOU_ECLOSED);
	ck_assert_int_eq(iou_forward(s, s, 10, wlog_cb, &t), -IOU_ECLOSED);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0);
	/* the peer gets the fed byte, then end of file */
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, 1, 200), -ETIMEDOUT);
	tsp_set_timeouts(peer);
	ck_assert_int_eq(recv(peer, &c, 1, 0), 1);
	ck_assert_int_eq(c, 'x');
	ck_assert_int_eq(recv(peer, &c, 1, 0), 0);
	/* the read side still works */
	reader_init(&r, 5, 100, 10);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), 0);
	{
		unsigned char b[10];

		tsp_fill(b, 10, 5, 0);
		ck_assert_int_eq(send(peer, b, 10, 0), 10);
	}
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_uint_eq(r.got, 10);
	ck_assert_uint_eq(r.bad_at, SIZE_MAX);
	ck_assert_int_eq(log.n, 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(shutdown_rd_fails_pending_read_eclosed)
{
	iou_loop *loop = new_loop();
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	reader_init(&r, 0, 100, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), 0);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_shutdown(s, SHUT_RD), 0);
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_int_eq(r.err, -IOU_ECLOSED);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), -IOU_ECLOSED);
	ck_assert_int_eq(iou_shutdown(s, SHUT_RD), 0); /* idempotent */
	ck_assert_int_eq(iou_shutdown(s, SHUT_RDWR), 0);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* errors                                                                   */
/* ======================================================================== */

static void never_read_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	(void)s; (void)res; (void)d; (void)ud;
	ck_abort_msg("read callback must not run");
}

static void never_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	(void)s; (void)res; (void)ud;
	ck_abort_msg("write callback must not run");
}

static void never_conn_cb(iou_stream *s, int res, void *ud)
{
	(void)s; (void)res; (void)ud;
	ck_abort_msg("connect callback must not run");
}

START_TEST(invalid_arguments_are_einval)
{
	iou_loop *loop = new_loop();
	struct iou_connect_opts co;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	char host[64];

	ck_assert_int_eq(iou_read(NULL, 1, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read(s, 0, never_read_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_read(s, 1, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_write(NULL, "a", 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_write(s, NULL, 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_write(s, "a", 0, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_write_all(NULL, "a", 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_write_all(s, NULL, 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_write_all(s, "a", 0, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_feed(NULL, "a", 1), -EINVAL);
	ck_assert_int_eq(iou_feed(s, NULL, 1), -EINVAL);
	ck_assert_int_eq(iou_drain(NULL, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_forward(NULL, s, 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_forward(s, NULL, 1, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_forward(s, s, 0, never_write_cb, NULL), -EINVAL);
	ck_assert_int_eq(iou_forward(s, s, 1, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_shutdown(NULL, SHUT_WR), -EINVAL);
	ck_assert_int_eq(iou_shutdown(s, 42), -EINVAL);
	ck_assert_int_eq(iou_close(NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_take_buffer(NULL, host, 1), -EINVAL);
	ck_assert_int_eq(iou_take_buffer(s, NULL, 1), -EINVAL);
	ck_assert_int_eq(iou_sockaddr_text(NULL, host, sizeof(host), NULL), -EINVAL);
	ck_assert_uint_eq(iou_buffered(NULL), 0);
	ck_assert_uint_eq(iou_fed(NULL), 0);
	/* connect */
	ck_assert_int_eq(iou_tcp_connect(NULL, "127.0.0.1", 1, NULL, never_conn_cb,
					 NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_tcp_connect(loop, NULL, 1, NULL, never_conn_cb, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(iou_tcp_connect(loop, "", 1, NULL, never_conn_cb, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", 1, NULL, NULL, NULL, NULL),
			 -EINVAL);
	iou_connect_opts_init(&co);
	co.stream.max_buffered = 0;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", 1, &co, never_conn_cb,
					 NULL, NULL), -EINVAL);
	/* over the 1 GiB limit: refused by the call, not after connecting */
	iou_connect_opts_init(&co);
	co.stream.max_buffered = (1ul << 30) + 1;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", 1, &co, never_conn_cb,
					 NULL, NULL), -EINVAL);
	iou_connect_opts_init(&co);
	co.bind_host = "not-an-address";
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", 1, &co, never_conn_cb,
					 NULL, NULL), -EINVAL);
	/* nothing was changed: the stream still works */
	ck_assert_uint_eq(iou_fed(s), 0);
	tsp_run_for(loop, 20);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* One read at a time: a second read, of any kind, is -EBUSY and must not
 * disturb the pending one, which still gets the bytes. */
START_TEST(second_read_while_pending_is_ebusy)
{
	iou_loop *loop = new_loop();
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	unsigned char b[5];

	reader_init(&r, 9, 100, 5);
	ck_assert_int_eq(iou_read(s, 100, reader_cb, &r), 0);
	ck_assert_int_eq(iou_read(s, 100, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_read_exactly(s, 1, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_peek(s, 1, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 10, never_read_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_forward(s, s, 10, never_write_cb, NULL), -EBUSY);
	ck_assert_int_eq(iou_take_buffer(s, b, sizeof(b)), -EBUSY);
	tsp_fill(b, sizeof(b), 9, 0);
	ck_assert_int_eq(send(peer, b, sizeof(b), 0), 5);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_uint_eq(r.got, 5);
	ck_assert_uint_eq(r.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* The peer resets the connection while we read: the read gets an error
 * (after any bytes that did arrive), never a crash. */
START_TEST(peer_rst_mid_read_gives_error)
{
	iou_loop *loop = new_loop();
	struct tsp_peer p;
	struct reader r;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	reader_init(&r, 51, 4096, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, r.max, reader_cb, &r), 0);
	tsp_send_start(&p, peer, 51, 100 * KiB, 1000, 100, TSP_RST);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 10000), 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_msg(r.err == -ECONNRESET || r.err == -EPIPE,
		      "read ended with %d (%s), eof %d", r.err,
		      iou_strerror(r.err), r.eof);
	ck_assert_uint_le(r.got, 100 * KiB);
	ck_assert_uint_eq(r.bad_at, SIZE_MAX);
	/* the error is sticky for later reads */
	reader_init(&r, 51, 4096, SIZE_MAX);
	ck_assert_int_eq(iou_read(s, r.max, reader_cb, &r), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_msg(r.err < 0 || r.eof, "read after reset: %d", r.err);
	tsp_close_and_wait(loop, s);
	t_loop_destroy(loop);
}
END_TEST

/* The peer resets the connection while we write: the write in progress
 * and the ones queued behind it fail with the same error, later writes
 * are refused with it, and SIGPIPE is never raised. */
START_TEST(peer_rst_mid_write_gives_error_no_sigpipe)
{
	iou_loop *loop = new_loop();
	struct wlog log = { 0 };
	struct wtag t1 = { &log, 1 }, t2 = { &log, 2 }, t3 = { &log, 3 };
	size_t len = 32 * MiB;
	unsigned char *buf = pattern(len, 52);
	struct tsp_peer p;
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), ret;

	tsp_recv_start(&p, peer, 256 * KiB, 1, 52, NULL, 0, TSP_RST);
	ck_assert_int_eq(iou_write_all(s, buf, len, wlog_cb, &t1), 0);
	ck_assert_int_eq(iou_write(s, "abc", 3, wlog_cb, &t2), 0);
	ck_assert_int_eq(iou_feed(s, "def", 3), 0);
	ck_assert_int_eq(iou_drain(s, wlog_cb, &t3), 0);
	ck_assert_int_eq(tsp_run_until_count(loop, &log.n, 3, 15000), 0);
	ck_assert_int_eq(tsp_join(&p, JOIN_MS), 0);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	ck_assert_msg(log.res[0] == -ECONNRESET || log.res[0] == -EPIPE,
		      "write_all ended with %zd", log.res[0]);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(log.order[i], i + 1);
		ck_assert_int_eq(log.res[i], log.res[0]);
	}
	ret = iou_write(s, "x", 1, never_write_cb, NULL);
	ck_assert_msg(ret == -ECONNRESET || ret == -EPIPE, "later write: %d", ret);
	tsp_close_and_wait(loop, s);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* close and cancel                                                         */
/* ======================================================================== */

START_TEST(close_idle_stream_runs_cb_once)
{
	iou_loop *loop = new_loop();
	iou_stream *s;
	int fds = t_fd_count(), peer = tsp_open_pair(loop, NULL, &s), closed = 0;
	char c;

	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), -IOU_ECLOSED);
	ck_assert_int_eq(closed, 0); /* never synchronously */
	ck_assert_int_eq(tsp_run_until(loop, &closed, 5000), 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	ck_assert_int_eq(closed, 1);
	/* the fd is closed: the peer sees end of file */
	tsp_set_timeouts(peer);
	ck_assert_int_eq(recv(peer, &c, 1, 0), 0);
	close(peer);
	ck_assert_int_eq(t_fd_count(), fds);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(calls_after_close_began_are_eclosed)
{
	iou_loop *loop = new_loop();
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s), closed = 0;

	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(iou_read(s, 1, never_read_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_read_exactly(s, 1, never_read_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_write(s, "a", 1, never_write_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_write_all(s, "a", 1, never_write_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_feed(s, "a", 1), -IOU_ECLOSED);
	ck_assert_int_eq(iou_drain(s, never_write_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_forward(s, s, 1, never_write_cb, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), -IOU_ECLOSED);
	ck_assert_int_eq(tsp_run_until(loop, &closed, 5000), 0);
	ck_assert_int_eq(closed, 1);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* Order of events at close: pending read and every queued write end with
 * -ECANCELED (each exactly once), then the close callback, once. */
struct close_log {
	int n;
	char ev[80];
	ssize_t res[80];
};

static void cl_read_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct close_log *l = ud;

	(void)s;
	ck_assert_ptr_null(d);
	l->res[l->n] = res;
	l->ev[l->n++] = 'r';
}

static void cl_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct close_log *l = ud;

	(void)s;
	l->res[l->n] = res;
	l->ev[l->n++] = 'w';
}

static void cl_close_cb(iou_stream *s, void *ud)
{
	struct close_log *l = ud;

	(void)s;
	l->res[l->n] = 0;
	l->ev[l->n++] = 'c';
}

START_TEST(close_cancels_pending_read_and_queued_writes)
{
	iou_loop *loop = new_loop();
	struct iou_stream_opts o;
	struct close_log l = { 0 };
	size_t len = 16 * MiB;
	unsigned char *buf = pattern(len, 61);
	iou_stream *s;
	int peer;

	iou_stream_opts_init(&o);
	o.sndbuf = 64 * KiB;
	peer = tsp_open_pair(loop, &o, &s);
	ck_assert_int_eq(iou_read(s, 100, cl_read_cb, &l), 0);
	ck_assert_int_eq(iou_write_all(s, buf, len, cl_write_cb, &l), 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(iou_write(s, buf, 1000, cl_write_cb, &l), 0);
	ck_assert_int_eq(iou_feed(s, "xyz", 3), 0);
	ck_assert_int_eq(iou_drain(s, cl_write_cb, &l), 0);
	tsp_run_for(loop, 50); /* the peer reads nothing: the send blocks */
	ck_assert_int_eq(l.n, 0);
	ck_assert_int_eq(iou_close(s, cl_close_cb, &l), 0);
	ck_assert_int_eq(l.n, 0);
	for (int i = 0; i < 1000 && (l.n == 0 || l.ev[l.n - 1] != 'c'); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(l.n, 1 + 1 + 5 + 1 + 1);
	ck_assert_int_eq(l.ev[0], 'r');
	for (int i = 0; i < l.n - 1; i++)
		ck_assert_int_eq(l.res[i], -ECANCELED);
	for (int i = 1; i < l.n - 1; i++)
		ck_assert_int_eq(l.ev[i], 'w');
	ck_assert_int_eq(l.ev[l.n - 1], 'c');
	tsp_run_for(loop, 20);
	ck_assert_int_eq(l.n, 9); /* nothing ran twice */
	close(peer);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* Close from inside callbacks: the stream stays valid for the rest of the
 * callback and the close callback runs once, after it. */
struct cb_closer {
	struct close_log l;
	int closed_ret;
};

static void closer_read_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct cb_closer *c = ud;

	(void)d;
	c->l.res[c->l.n] = res;
	c->l.ev[c->l.n++] = 'r';
	c->closed_ret = iou_close(s, cl_close_cb, &c->l);
	/* still usable as a pointer until the close callback */
	ck_assert_int_eq(iou_read(s, 1, never_read_cb, NULL), -IOU_ECLOSED);
}

static void closer_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct cb_closer *c = ud;

	c->l.res[c->l.n] = res;
	c->l.ev[c->l.n++] = 'w';
	c->closed_ret = iou_close(s, cl_close_cb, &c->l);
}

START_TEST(close_from_read_callback)
{
	iou_loop *loop = new_loop();
	struct cb_closer c = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read(s, 100, closer_read_cb, &c), 0);
	ck_assert_int_eq(send(peer, "hello", 5, 0), 5);
	for (int i = 0; i < 1000 && (c.l.n == 0 || c.l.ev[c.l.n - 1] != 'c'); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(c.closed_ret, 0);
	ck_assert_int_eq(c.l.n, 2);
	ck_assert_int_eq(c.l.ev[0], 'r');
	ck_assert_int_eq(c.l.res[0], 5);
	ck_assert_int_eq(c.l.ev[1], 'c');
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(close_from_write_callback_cancels_the_rest)
{
	iou_loop *loop = new_loop();
	struct cb_closer c = { 0 };
	struct wlog log = { 0 };
	struct wtag t = { &log, 2 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_write(s, "one", 3, closer_write_cb, &c), 0);
	ck_assert_int_eq(iou_write(s, "two", 3, wlog_cb, &t), 0);
	for (int i = 0; i < 1000 && (c.l.n == 0 || c.l.ev[c.l.n - 1] != 'c'); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(c.closed_ret, 0);
	ck_assert_int_eq(c.l.ev[0], 'w');
	ck_assert_int_eq(c.l.res[0], 3);
	ck_assert_int_eq(c.l.ev[c.l.n - 1], 'c');
	/* the second write either went out before the close or was cancelled */
	ck_assert_int_eq(log.n, 1);
	ck_assert_msg(log.res[0] == 3 || log.res[0] == -ECANCELED, "%zd",
		      log.res[0]);
	close(peer);
	t_loop_destroy(loop);
}
END_TEST

/* A forward from a to b is pending (a idle) and b is closed: the forward
 * must fail instead of touching the freed b when bytes arrive on a. */
START_TEST(forward_target_closed_while_pending)
{
	iou_loop *loop = new_loop();
	struct fwd f = { 0 };
	iou_stream *a, *b;
	int pa = tsp_open_pair(loop, NULL, &a), pb = tsp_open_pair(loop, NULL, &b);

	f.from = a;
	f.to = b;
	f.max = 1024;
	ck_assert_int_eq(iou_forward(a, b, 1024, fwd_cb, &f), 0);
	tsp_run_for(loop, 20);
	tsp_close_and_wait(loop, b);
	ck_assert_int_eq(send(pa, "late", 4, 0), 4);
	ck_assert_int_eq(tsp_run_until(loop, &f.done, 5000), 0);
	ck_assert_int_eq(f.calls, 1);
	ck_assert_msg(f.err == -ECANCELED || f.err == -IOU_ECLOSED,
		      "forward ended with %d", f.err);
	/* a is still usable and lost nothing */
	{
		struct reader r;

		reader_init(&r, 0, 100, 4);
		ck_assert_int_eq(iou_read_exactly(a, 4, reader_cb, &r), 0);
		ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
		ck_assert_uint_eq(r.got, 4);
	}
	tsp_run_for(loop, 10);
	ck_assert_int_eq(f.calls, 1);
	tsp_close_and_wait(loop, a);
	close(pa);
	close(pb);
	t_loop_destroy(loop);
}
END_TEST

/* The source of a forward is closed while its bytes wait in b's write
 * queue: a's callback runs once (-ECANCELED), b's write still completes
 * (or is cancelled with b) without calling into the freed a. */
START_TEST(forward_source_closed_while_forwarding)
{
	iou_loop *loop = new_loop();
	struct iou_stream_opts o;
	struct wlog log = { 0 };
	struct wtag t = { &log, 1 };
	struct fwd f = { 0 };
	size_t len = 16 * MiB;
	unsigned char *buf = pattern(len, 62);
	iou_stream *a, *b;
	int pa, pb;

	iou_stream_opts_init(&o);
	o.sndbuf = 64 * KiB;
	pa = tsp_open_pair(loop, NULL, &a);
	pb = tsp_open_pair(loop, &o, &b);
	/* fill b's queue so the forwarded bytes wait behind it */
	ck_assert_int_eq(iou_write_all(b, buf, len, wlog_cb, &t), 0);
	f.from = a;
	f.to = b;
	f.max = 1024;
	ck_assert_int_eq(iou_forward(a, b, 1024, fwd_cb, &f), 0);
	ck_assert_int_eq(send(pa, "data", 4, 0), 4);
	tsp_run_for(loop, 50);
	ck_assert_int_eq(f.calls, 0);
	tsp_close_and_wait(loop, a);
	ck_assert_int_eq(f.calls, 1);
	ck_assert_int_eq(f.err, -ECANCELED);
	tsp_run_for(loop, 20);
	tsp_close_and_wait(loop, b);
	ck_assert_int_eq(log.n, 1);
	ck_assert_int_eq(log.res[0], -ECANCELED);
	ck_assert_int_eq(f.calls, 1);
	close(pa);
	close(pb);
	free(buf);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* connect                                                                  */
/* ======================================================================== */

/* A bound, non-listening socket: connects to its port are refused. */
static int refusing_port(uint16_t *port)
{
	struct sockaddr_in sa = { 0 };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

START_TEST(connect_closed_port_is_refused)
{
	iou_loop *loop = new_loop();
	struct conn_res c = { 0 };
	uint16_t port;
	int fd = refusing_port(&port);

	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &c, NULL), 0);
	ck_assert_int_eq(c.calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, -ECONNREFUSED);
	tsp_run_for(loop, 10);
	ck_assert_int_eq(c.calls, 1);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* Connect, then a round trip both ways on the new stream. */
static void exchange(iou_loop *loop, iou_stream *s, int afd)
{
	struct wlog log = { 0 };
	struct wtag t = { &log, 1 };
	struct reader r;
	unsigned char b[300];
	char got[5];

	ck_assert_int_eq(iou_write_all(s, "hello", 5, wlog_cb, &t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &log.n, 5000), 0);
	ck_assert_int_eq(log.res[0], 5);
	tsp_set_timeouts(afd);
	ck_assert_int_eq(recv(afd, got, 5, MSG_WAITALL), 5);
	ck_assert_int_eq(memcmp(got, "hello", 5), 0);
	tsp_fill(b, sizeof(b), 3, 0);
	ck_assert_int_eq(send(afd, b, sizeof(b), 0), (ssize_t)sizeof(b));
	reader_init(&r, 3, 1000, sizeof(b));
	ck_assert_int_eq(iou_read(s, 1000, reader_cb, &r), 0);
	ck_assert_int_eq(tsp_run_until(loop, &r.done, 5000), 0);
	ck_assert_uint_eq(r.got, sizeof(b));
	ck_assert_uint_eq(r.bad_at, SIZE_MAX);
}

START_TEST(connect_numeric_ipv4_and_exchange)
{
	iou_loop *loop = new_loop();
	struct conn_res c = { 0 };
	uint16_t port;
	int lfd = t_listen_ephemeral(&port), afd;

	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &c, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, 0);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(afd, 0);
	exchange(loop, c.s, afd);
	tsp_close_and_wait(loop, c.s);
	close(afd);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(connect_localhost_by_name)
{
	iou_loop *loop = new_loop();
	struct conn_res c = { 0 };
	char host[64];
	uint16_t port, pport;
	int lfd = t_listen_ephemeral(&port), afd;

	/* localhost may resolve to ::1 first: the next address is tried */
	ck_assert_int_eq(iou_tcp_connect(loop, "localhost", port, NULL, conn_cb,
					 &c, NULL), 0);
	ck_assert_int_eq(c.calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 10000), 0);
	ck_assert_msg(c.res == 0, "connect localhost: %s", iou_strerror(c.res));
	ck_assert_int_eq(iou_peer_address(c.s, host, sizeof(host), &pport), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(pport, port);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(afd, 0);
	exchange(loop, c.s, afd);
	tsp_close_and_wait(loop, c.s);
	close(afd);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* A name that cannot resolve ends with IOU_ERESOLVE, and the look-up never
 * stalls an echo running on the same loop.  Its first label is 64 bytes,
 * over DNS's 63: glibc rejects it without a query, and tests send nothing
 * off the host. */
START_TEST(connect_unresolvable_name_does_not_stall_loop)
{
	iou_loop *loop = new_loop();
	struct conn_res c = { 0 };
	struct tsp_peer tx, rx;
	struct fwd f = { 0 };
	iou_stream *s;
	int peer = tsp_open_pair(loop, NULL, &s);
	size_t len = 512 * KiB;
	char name[80];

	memset(name, 'a', 64);
	strcpy(name + 64, ".invalid");
	ck_assert_int_eq(iou_tcp_connect(loop, name, 80, NULL, conn_cb, &c, NULL), 0);
	ck_assert_int_eq(c.calls, 0);
	f.from = f.to = s;
	f.max = 64 * KiB;
	tsp_recv_start(&rx, peer, SIZE_MAX, 1, 71, NULL, 0, TSP_KEEP);
	tsp_send_start(&tx, peer, 71, len, 4096, 0, TSP_SHUT_WR);
	ck_assert_int_eq(iou_forward(s, s, 64 * KiB, fwd_cb, &f), 0);
	ck_assert_int_eq(tsp_run_until(loop, &f.done, 10000), 0);
	ck_assert_int_eq(f.err, 0);
	ck_assert_uint_eq(f.total, len);
	ck_assert_int_eq(tsp_join(&tx, JOIN_MS), 0);
	ck_assert_int_eq(run_join(loop, &rx, JOIN_MS), 0);
	ck_assert_uint_eq(rx.done, len);
	ck_assert_uint_eq(rx.bad_at, SIZE_MAX);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 6000), 0);
	ck_assert_msg(c.res == -IOU_ERESOLVE, "connect ended with %d (%s)",
		      c.res, iou_strerror(c.res));
	tsp_run_for(loop, 10);
	ck_assert_int_eq(c.calls, 1);
	tsp_close_and_wait(loop, s);
	close(peer);
	ck_assert_int_eq(t_loop_drain(loop, 30000), 0);
	t_loop_destroy(loop);
}
END_TEST

/* A listener with backlog 0 whose accept queue is full drops new SYNs:
 * a connect with a timeout ends with -ETIMEDOUT in time. */
START_TEST(connect_timeout_to_black_hole)
{
	iou_loop *loop = new_loop();
	struct iou_connect_opts co;
	struct conn_res c = { 0 };
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int fill[16], nfill = 0, hole = 0;
	uint64_t t0;

	ck_assert_int_ge(lfd, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 0), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	/* fill the accept queue until a connect hangs */
	while (nfill < 16 && !hole) {
		struct pollfd pfd;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		ck_assert_int_ge(fd, 0);
		fill[nfill++] = fd;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			continue;
		ck_assert_int_eq(errno, EINPROGRESS);
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 200) == 0)
			hole = 1;
	}
	ck_assert_msg(hole, "could not fill the accept queue");
	iou_connect_opts_init(&co);
	co.timeout_ms = 300;
	t0 = t_now_ms();
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", ntohs(sa.sin_port),
					 &co, conn_cb, &c, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, -ETIMEDOUT);
	ck_assert_uint_ge(c.at - t0, 290);
	ck_assert_uint_le(c.at - t0, 300 + 1000);
	t_loop_destroy(loop);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
}
END_TEST

START_TEST(connect_with_bind_host)
{
	iou_loop *loop = new_loop();
	struct iou_connect_opts co;
	struct conn_res c = { 0 };
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char host[64];
	uint16_t port, lport;
	int lfd = t_listen_ephemeral(&port), afd;

	iou_connect_opts_init(&co);
	co.bind_host = "127.0.0.1";
	co.timeout_ms = 5000;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, &co, conn_cb,
					 &c, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, 0);
	ck_assert_int_eq(iou_local_address(c.s, host, sizeof(host), &lport), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	afd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
	ck_assert_int_ge(afd, 0);
	ck_assert_uint_eq(ntohs(sa.sin_port), lport);
	exchange(loop, c.s, afd);
	tsp_close_and_wait(loop, c.s);
	close(afd);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* Whether a plain bind() to addr succeeds here (a host may own any
 * address, and net.ipv4.ip_nonlocal_bind allows them all). */
static int bind_works(const char *addr)
{
	struct sockaddr_in in = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(inet_pton(AF_INET, addr, &in.sin_addr), 1);
	ok = bind(fd, (struct sockaddr *)&in, sizeof(in)) == 0;
	close(fd);
	return ok;
}

/* A bind_host that is not ours: -EADDRNOTAVAIL through the callback, on a
 * later turn. */
START_TEST(connect_bind_host_not_local_is_eaddrnotavail)
{
	static const char addr[] = "198.51.100.1"; /* TEST-NET-2 */
	iou_loop *loop;
	struct iou_connect_opts co;
	struct conn_res c = { 0 };
	uint16_t port;
	int lfd;

	if (bind_works(addr)) {
		fprintf(stderr, "skip: %s can be bound here\n", addr);
		return;
	}
	loop = new_loop();
	lfd = t_listen_ephemeral(&port);
	iou_connect_opts_init(&co);
	co.bind_host = addr;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, &co, conn_cb,
					 &c, NULL), 0);
	ck_assert_int_eq(c.calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.calls, 5000), 0);
	ck_assert_int_eq(c.res, -EADDRNOTAVAIL);
	tsp_run_for(loop, 10);
	ck_assert_int_eq(c.calls, 1);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* Several addresses, tried in turn (what a name resolving to several
 * addresses gives iou_tcp_connect), supplied through iou__connect_addrs(). */

static struct sockaddr_storage loopback4(uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	in->sin_port = htons(port);
	return ss;
}

static struct sockaddr_storage loopback6(uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	in6->sin6_family = AF_INET6;
	in6->sin6_addr = in6addr_loopback;
	in6->sin6_port = htons(port);
	return ss;
}

/* iou__connect_addrs(), then wait for its one callback. */
static void connect_addrs(iou_loop *loop, const struct sockaddr_storage *a,
			  size_t n, const struct iou_connect_opts *co,
			  struct conn_res *c)
{
	memset(c, 0, sizeof(*c));
	ck_assert_int_eq(iou__connect_addrs(loop, a, n, co, conn_cb, c, NULL), 0);
	ck_assert_int_eq(c->calls, 0);
	ck_assert_int_eq(tsp_run_until(loop, &c->calls, 5000), 0);
	tsp_run_for(loop, 10);
	ck_assert_int_eq(c->calls, 1);
}

/* The stream is connected to 127.0.0.1:port, whose listener `lfd` accepts
 * it; bytes go both ways. */
static void check_connected_to(iou_loop *loop, struct conn_res *c,
			       int lfd, uint16_t port)
{
	char host[64];
	uint16_t pport;
	int afd;

	ck_assert_msg(c->res == 0, "connect: %s", iou_strerror(c->res));
	ck_assert_int_eq(iou_peer_address(c->s, host, sizeof(host), &pport), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(pport, port);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(afd, 0);
	exchange(loop, c->s, afd);
	tsp_close_and_wait(loop, c->s);
	close(afd);
}

/* Nobody connected to this listener. */
static void check_no_connection(int lfd)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };

	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
}

START_TEST(connect_addrs_refused_then_live_connects_to_second)
{
	iou_loop *loop = new_loop();
	struct conn_res c;
	uint16_t rport, lport;
	int rfd = refusing_port(&rport), lfd = t_listen_ephemeral(&lport);
	struct sockaddr_storage a[2] = { loopback4(rport), loopback4(lport) };

	connect_addrs(loop, a, 2, NULL, &c);
	check_connected_to(loop, &c, lfd, lport);
	close(lfd);
	close(rfd);
	t_loop_destroy(loop);
}
END_TEST

/* localhost as ::1 then 127.0.0.1 with an IPv4-only listener: each address
 * gets a socket of its own family. */
START_TEST(connect_addrs_ipv6_refused_then_ipv4)
{
	iou_loop *loop = new_loop();
	struct conn_res c;
	struct sockaddr_in6 sa = { 0 };
	socklen_t sl = sizeof(sa);
	uint16_t lport;
	int rfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int lfd = t_listen_ephemeral(&lport);
	struct sockaddr_storage a[2];

	sa.sin6_family = AF_INET6;
	sa.sin6_addr = in6addr_loopback;
	if (rfd < 0 || bind(rfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "connect_addrs_ipv6_refused_then_ipv4: no ::1, "
			"skipped\n");
		if (rfd >= 0)
			close(rfd);
		close(lfd);
		t_loop_destroy(loop);
		return;
	}
	ck_assert_int_eq(getsockname(rfd, (struct sockaddr *)&sa, &sl), 0);
	a[0] = loopback6(ntohs(sa.sin6_port));
	a[1] = loopback4(lport);
	connect_addrs(loop, a, 2, NULL, &c);
	check_connected_to(loop, &c, lfd, lport);
	close(lfd);
	close(rfd);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(connect_addrs_all_refused_is_econnrefused)
{
	iou_loop *loop = new_loop();
	struct conn_res c;
	uint16_t p1, p2;
	int fd1 = refusing_port(&p1), fd2 = refusing_port(&p2);
	struct sockaddr_storage a[2] = { loopback4(p1), loopback4(p2) };

	ck_assert_int_eq(iou__connect_addrs(loop, a, 0, NULL, never_conn_cb,
					    NULL, NULL), -EINVAL);
	connect_addrs(loop, a, 2, NULL, &c);
	ck_assert_int_eq(c.res, -ECONNREFUSED);
	close(fd1);
	close(fd2);
	t_loop_destroy(loop);
}
END_TEST

/* The first address that connects wins; the later ones are not tried. */
START_TEST(connect_addrs_order_is_respected)
{
	iou_loop *loop = new_loop();
	struct conn_res c;
	uint16_t pa, pb;
	int la = t_listen_ephemeral(&pa), lb = t_listen_ephemeral(&pb);
	struct sockaddr_storage ab[2] = { loopback4(pa), loopback4(pb) };
	struct sockaddr_storage ba[2] = { loopback4(pb), loopback4(pa) };

	connect_addrs(loop, ab, 2, NULL, &c);
	check_connected_to(loop, &c, la, pa);
	check_no_connection(lb);
	connect_addrs(loop, ba, 2, NULL, &c);
	check_connected_to(loop, &c, lb, pb);
	check_no_connection(la);
	close(la);
	close(lb);
	t_loop_destroy(loop);
}
END_TEST

/* When every address fails, the last one's error is reported.  Binding to
 * 127.0.0.1 fails for an IPv6 address before any packet. */
START_TEST(connect_addrs_last_error_is_reported)
{
	iou_loop *loop = new_loop();
	struct iou_connect_opts co;
	struct conn_res c;
	uint16_t port;
	int fd = refusing_port(&port);
	struct sockaddr_storage a6_4[2] = { loopback6(port), loopback4(port) };
	struct sockaddr_storage a4_6[2] = { loopback4(port), loopback6(port) };

	iou_connect_opts_init(&co);
	co.bind_host = "127.0.0.1";
	connect_addrs(loop, a6_4, 2, &co, &c);
	ck_assert_int_eq(c.res, -ECONNREFUSED);
	connect_addrs(loop, a4_6, 2, &co, &c);
	/* -EAFNOSUPPORT: no IPv6 at all */
	ck_assert_msg(c.res == -EINVAL || c.res == -EAFNOSUPPORT,
		      "connect ended with %d (%s)", c.res, iou_strerror(c.res));
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */

static Suite *stream_suite(void)
{
	Suite *s = suite_create("stream");
	TCase *tc;

	tc = tcase_create("open");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, open_rejects_bad_arguments);
	tcase_add_test(tc, open_clears_nonblocking_and_accessors);
	tcase_add_test(tc, loop_stays_alive_while_stream_open);
	suite_add_tcase(s, tc);

	tc = tcase_create("happy");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_sizes_byte_exact_then_eof);
	tcase_add_test(tc, read_one_byte_chunks_byte_exact);
	tcase_add_test(tc, write_all_sizes_queued_in_order);
	tcase_add_test(tc, write_short_counts_resume_byte_exact);
	tcase_add_test(tc, feed_write_feed_drain_issue_order);
	tcase_add_test(tc, drain_nothing_fed_gives_zero_in_order);
	tcase_add_test(tc, feed_drain_rounds_byte_exact);
	tcase_add_test(tc, forward_echo_to_self_byte_exact_with_eof);
	tcase_add_test(tc, forward_echo_one_byte_chunks);
	tcase_add_test(tc, forward_echo_small_max_across_buffers);
	tcase_add_test(tc, mixed_writes_short_sends_issue_order);
	tcase_add_test(tc, forward_to_other_stream_byte_exact_with_eof);
	tcase_add_test(tc, peer_and_local_address_ipv4);
	tcase_add_test(tc, peer_and_local_address_ipv6);
	suite_add_tcase(s, tc);

	tc = tcase_create("eof");
	tcase_set_timeout(tc, 15);
	tcase_add_test(tc, read_eof_gives_zero_and_again);
	tcase_add_test(tc, shutdown_wr_after_writes_peer_sees_all_then_eof);
	tcase_add_test(tc, writes_after_shutdown_wr_are_eclosed);
	tcase_add_test(tc, shutdown_rd_fails_pending_read_eclosed);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, invalid_arguments_are_einval);
	tcase_add_test(tc, second_read_while_pending_is_ebusy);
	tcase_add_test(tc, peer_rst_mid_read_gives_error);
	tcase_add_test(tc, peer_rst_mid_write_gives_error_no_sigpipe);
	suite_add_tcase(s, tc);

	tc = tcase_create("close");
	tcase_set_timeout(tc, 15);
	tcase_add_test(tc, close_idle_stream_runs_cb_once);
	tcase_add_test(tc, calls_after_close_began_are_eclosed);
	tcase_add_test(tc, close_cancels_pending_read_and_queued_writes);
	tcase_add_test(tc, close_from_read_callback);
	tcase_add_test(tc, close_from_write_callback_cancels_the_rest);
	tcase_add_test(tc, forward_target_closed_while_pending);
	tcase_add_test(tc, forward_source_closed_while_forwarding);
	suite_add_tcase(s, tc);

	tc = tcase_create("connect");
	tcase_set_timeout(tc, 40);
	tcase_add_test(tc, connect_closed_port_is_refused);
	tcase_add_test(tc, connect_numeric_ipv4_and_exchange);
	tcase_add_test(tc, connect_localhost_by_name);
	tcase_add_test(tc, connect_unresolvable_name_does_not_stall_loop);
	tcase_add_test(tc, connect_timeout_to_black_hole);
	tcase_add_test(tc, connect_with_bind_host);
	tcase_add_test(tc, connect_bind_host_not_local_is_eaddrnotavail);
	tcase_add_test(tc, connect_addrs_refused_then_live_connects_to_second);
	tcase_add_test(tc, connect_addrs_ipv6_refused_then_ipv4);
	tcase_add_test(tc, connect_addrs_all_refused_is_econnrefused);
	tcase_add_test(tc, connect_addrs_order_is_respected);
	tcase_add_test(tc, connect_addrs_last_error_is_reported);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(stream_suite());
}
