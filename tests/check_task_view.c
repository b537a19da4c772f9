/* SPDX-License-Identifier: MIT */
/*
 * check_task_view: the tasks' zero-copy read view (iou_task_read_view,
 * iou_task_release), half-close (iou_task_shutdown) and two-way forward
 * (iou_task_proxy), against real TCP
 * connections on loopback.  The view's hard cases: its bytes must outlive
 * the stream they came from while the task still sends them elsewhere, and
 * must never be reused by new receives.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

/* A small pool, so that buffers given back are reused at once. */
#define BUF_SIZE 1024
#define BUF_COUNT 16

static iou_loop *small_loop(void)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	o.buf_size = BUF_SIZE;
	o.buf_count = BUF_COUNT;
	return t_loop_create_or_skip(&o);
}

/* Send len bytes of the stream `seed` from offset off, blocking. */
static void send_seed(int fd, uint64_t seed, size_t off, size_t len)
{
	unsigned char buf[4096];

	while (len) {
		size_t k = len < sizeof(buf) ? len : sizeof(buf);
		ssize_t n;

		tsp_fill(buf, k, seed, off);
		n = send(fd, buf, k, 0);
		ck_assert_int_eq(n, (ssize_t)k);
		off += k;
		len -= k;
	}
}

/* Small socket buffers: a few MB queued on the stream fill them. */
static void small_bufs(int peer_fd, iou_stream *s)
{
	int v = 64 * 1024;

	ck_assert_int_eq(setsockopt(peer_fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)), 0);
	ck_assert_int_eq(setsockopt(iou_stream_fd(s), SOL_SOCKET, SO_SNDBUF, &v,
				    sizeof(v)), 0);
}

/* ---- read view: happy path ---------------------------------------------- */

struct vecho {
	iou_stream *s;
	iou_loop *loop;
	size_t bytes;
	int zero_copy;
	ssize_t last;
	unsigned held_after;
	int done;
};

/* Echo through views: the kernel sends straight from the receive buffer. */
static void vecho_main(void *arg)
{
	struct vecho *e = arg;
	const void *p;
	ssize_t n;

	while ((n = iou_task_read_view(e->s, 1 << 20, 5000, &p)) > 0) {
		if (e->loop->bufs.fwd_held)
			e->zero_copy++;
		ck_assert_int_eq(iou_task_write_all(e->s, p, (size_t)n, 5000), n);
		e->bytes += (size_t)n;
	}
	e->last = n;
	e->held_after = e->loop->bufs.fwd_held; /* the next read released it */
	e->done = 1;
}

START_TEST(test_view_echo)
{
	iou_loop *loop = small_loop();
	struct vecho e = { .loop = loop };
	struct tsp_peer tx = { 0 }, rx = { 0 };
	size_t len = 300 * 1000;
	int fd = tsp_open_pair(loop, NULL, &e.s);

	tsp_set_timeouts(fd);
	ck_assert_int_eq(iou_task_spawn(loop, vecho_main, &e, NULL, NULL), 0);
	tsp_recv_start(&rx, fd, len, 1, 7, NULL, 0, TSP_KEEP);
	tsp_send_start(&tx, fd, 7, len, 3000, 0, TSP_SHUT_WR);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 10000), 0);
	ck_assert_int_eq(tsp_join(&tx, 5000), 0);
	ck_assert_int_eq(tsp_join(&rx, 5000), 0);
	ck_assert_uint_eq(e.bytes, len);
	ck_assert_int_eq(e.last, 0);
	ck_assert_uint_eq(rx.done, len);
	ck_assert_uint_eq(rx.bad_at, SIZE_MAX);
	ck_assert_int_gt(e.zero_copy, 0);
	ck_assert_uint_eq(e.held_after, 0);
	tsp_close_and_wait(loop, e.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- read view: its bytes outlive the stream ---------------------------- */

enum { END_CLOSE, END_CUT };

struct holder {
	iou_loop *loop;
	iou_stream *a, *b;
	ssize_t n, wres;
	unsigned held;
	int viewed, done;
	int recheck, churned, intact; /* check the view after the write */
};

static void hold_and_write(struct holder *h, iou_stream *a)
{
	const void *p;

	h->n = iou_task_read_view(a, 4096, 5000, &p);
	if (h->n <= 0) {
		h->done = 1;
		return;
	}
	h->held = h->loop->bufs.fwd_held;
	h->viewed = 1;
	/* Queued behind megabytes B's peer does not read yet: blocked. */
	h->wres = iou_task_write_all(h->b, p, (size_t)h->n, -1);
	if (h->recheck) {
		h->done = 1;
		while (!h->churned)
			ck_assert_int_eq(iou_task_yield(), 0);
		h->intact = tsp_mismatch(p, (size_t)h->n, 1, 0) == (size_t)h->n;
	}
	h->done = 2;
}

static void holder_main(void *arg)
{
	struct holder *h = arg;

	hold_and_write(h, h->a);
}

static void holder_handler(iou_stream *s, void *ud)
{
	hold_and_write(ud, s);
}

static void post_close(void *ud)
{
	struct holder *h = ud;

	ck_assert_int_eq(iou_close(h->a, NULL, NULL), 0);
}

struct churn {
	size_t got;
	int err;
};

static void churn_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct churn *c = ud;

	(void)data;
	if (res <= 0) {
		c->err = res ? (int)res : -1;
		return;
	}
	c->got += (size_t)res;
	ck_assert_int_eq(iou_read(s, 1 << 20, churn_cb, c), 0);
}

/* Many receives on another stream: every pool buffer goes round. */
static void churn_pool(iou_loop *loop)
{
	struct churn c = { 0 };
	size_t len = 64 * BUF_SIZE * 2;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read(s, 1 << 20, churn_cb, &c), 0);
	for (size_t off = 0; off < len; off += BUF_SIZE) {
		send_seed(fd, 3, off, BUF_SIZE);
		for (int i = 0; i < 200 && c.got < off + BUF_SIZE; i++)
			ck_assert_int_ge(tsp_turn(loop), 0);
	}
	ck_assert_uint_eq(c.got, len);
	tsp_close_and_wait(loop, s);
	close(fd);
}

struct closer {
	iou_stream *s;
	int closed;
};

static void post_close_stream(void *ud)
{
	struct closer *c = ud;

	ck_assert_int_eq(iou_close(c->s, tsp_count_close_cb, &c->closed), 0);
}

static void srv_done(iou_server *srv, uint64_t finished, uint64_t cut,
		     void *ud)
{
	(void)srv;
	(void)finished;
	(void)cut;
	*(int *)ud = 1;
}

/* A task views bytes of A and writes them to B, blocked behind 4 MB that
 * B's peer does not read yet; meanwhile A is closed by a callback and every
 * pool buffer is reused by another stream.  B's peer then gets the view's
 * bytes intact, after the 4 MB.  (Cut by its server's shutdown instead,
 * the task is cancelled, and so is its write.) */
static void view_outlives(int how)
{
	iou_loop *loop = small_loop();
	struct holder h = { .loop = loop };
	struct tsp_peer rx = { 0 };
	size_t fill = 4u << 20, vlen = 1000;
	unsigned char *big = malloc(fill), *got = malloc(fill + vlen);
	iou_server *srv = NULL;
	int fb = tsp_open_pair(loop, NULL, &h.b), fa, srv_ended = 0;

	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(got);
	small_bufs(fb, h.b);
	tsp_fill(big, fill, 2, 0);
	ck_assert_int_eq(iou_write_all(h.b, big, fill, NULL, NULL), 0);
	if (how == END_CLOSE) {
		fa = tsp_open_pair(loop, NULL, &h.a);
		ck_assert_int_eq(iou_task_spawn(loop, holder_main, &h, NULL, NULL), 0);
	} else {
		ck_assert_int_eq(iou_task_server_start(loop, NULL, holder_handler,
						       &h, NULL, &srv), 0);
		fa = t_connect_loopback(iou_server_port(srv));
	}
	tsp_set_timeouts(fa);
	send_seed(fa, 1, 0, vlen);
	ck_assert_int_eq(tsp_run_until(loop, &h.viewed, 5000), 0);
	ck_assert_int_eq(h.n, (ssize_t)vlen);
	ck_assert_uint_eq(h.held, 1); /* the pool buffer itself, no copy */
	tsp_run_for(loop, 30);
	ck_assert_int_eq(h.done, 0);

	if (how == END_CLOSE) {
		ck_assert_int_eq(iou_loop_post(loop, post_close, &h), 0);
		tsp_run_for(loop, 50);
	} else {
		/* The grace passes: A is cut and the task cancelled, which
		 * breaks B's sending side; its write fails once the kernel let
		 * go of the send, and the view goes back when the task ends. */
		ck_assert_int_eq(iou_server_shutdown(srv, 20, srv_done,
						     &srv_ended), 0);
		ck_assert_int_eq(tsp_run_until(loop, &h.done, 5000), 0);
		ck_assert_int_eq(h.wres, -ECANCELED);
		ck_assert_int_eq(tsp_run_until(loop, &srv_ended, 5000), 0);
		churn_pool(loop);
		ck_assert_uint_eq(loop->bufs.fwd_held, 0);
		tsp_close_and_wait(loop, h.b);
		close(fa);
		close(fb);
		free(big);
		free(got);
		t_loop_destroy(loop);
		return;
	}
	churn_pool(loop);
	ck_assert_int_eq(h.done, 0);
	ck_assert_uint_eq(loop->bufs.fwd_held, 1);

	tsp_recv_start(&rx, fb, fill + vlen, 0, 0, got, fill + vlen, TSP_KEEP);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 10000), 0);
	ck_assert_int_eq(h.wres, (ssize_t)vlen);
	ck_assert_int_eq(tsp_join(&rx, 5000), 0);
	ck_assert_uint_eq(rx.done, fill + vlen);
	ck_assert_uint_eq(tsp_mismatch(got, fill, 2, 0), fill);
	ck_assert_uint_eq(tsp_mismatch(got + fill, vlen, 1, 0), vlen);
	if (srv)
		ck_assert_int_eq(tsp_run_until(loop, &srv_ended, 5000), 0);
	/* the task ended without releasing: the library did */
	ck_assert_uint_eq(loop->bufs.fwd_held, 0);
	tsp_close_and_wait(loop, h.b);
	close(fa);
	close(fb);
	free(big);
	free(got);
	t_loop_destroy(loop);
}

START_TEST(test_view_outlives_close)
{
	view_outlives(END_CLOSE);
}
END_TEST

START_TEST(test_view_outlives_cut)
{
	view_outlives(END_CUT);
}
END_TEST

/* The target of the view's write is closed under it: the write fails
 * (once the kernel let go of the bytes), the view is still the task's. */
START_TEST(test_view_survives_target_close)
{
	iou_loop *loop = small_loop();
	struct holder h = { .loop = loop, .recheck = 1 };
	struct closer c = { 0 };
	size_t fill = 4u << 20;
	unsigned char *big = malloc(fill);
	int fb = tsp_open_pair(loop, NULL, &h.b);
	int fa = tsp_open_pair(loop, NULL, &h.a);
	ck_assert_ptr_nonnull(big);
	small_bufs(fb, h.b);
	tsp_fill(big, fill, 2, 0);
	ck_assert_int_eq(iou_write_all(h.b, big, fill, NULL, NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, holder_main, &h, NULL, NULL), 0);
	send_seed(fa, 1, 0, 1000);
	ck_assert_int_eq(tsp_run_until(loop, &h.viewed, 5000), 0);
	ck_assert_uint_eq(h.held, 1);
	tsp_run_for(loop, 30);
	c.s = h.b;
	ck_assert_int_eq(iou_loop_post(loop, post_close_stream, &c), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 5000), 0);
	ck_assert_int_lt(h.wres, 0);
	ck_assert_int_eq(tsp_run_until(loop, &c.closed, 3000), 0);
	churn_pool(loop);
	h.churned = 1;
	for (int i = 0; i < 200 && h.done != 2; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(h.done, 2);
	ck_assert_int_eq(h.intact, 1);
	ck_assert_uint_eq(loop->bufs.fwd_held, 0);
	tsp_close_and_wait(loop, h.a);
	close(fa);
	close(fb);
	free(big);
	t_loop_destroy(loop);
}
END_TEST

/* ---- read view: cancel, release, end ------------------------------------ */

struct sleeper {
	iou_loop *loop;
	iou_stream *s;
	unsigned held, held_released;
	int sleep_res, release_res, viewed, done;
	int release; /* release before sleeping */
};

static void view_sleep_main(void *arg)
{
	struct sleeper *z = arg;
	const void *p;

	ck_assert_int_gt(iou_task_read_view(z->s, 4096, 5000, &p), 0);
	z->held = z->loop->bufs.fwd_held;
	if (z->release) {
		z->release_res = iou_task_release(z->s);
		z->held_released = z->loop->bufs.fwd_held;
		ck_assert_int_eq(iou_task_release(z->s), 0); /* none left */
	}
	z->viewed = 1;
	z->sleep_res = iou_task_sleep(10000);
	z->done = 1;
}

/* Cancelled while holding a view; it returns without releasing: the
 * task's end gives the buffer back. */
START_TEST(test_view_cancel_releases_at_end)
{
	iou_loop *loop = small_loop();
	struct sleeper z = { .loop = loop };
	iou_task *t;
	int fd = tsp_open_pair(loop, NULL, &z.s);

	ck_assert_int_eq(iou_task_spawn(loop, view_sleep_main, &z, NULL, &t), 0);
	send_seed(fd, 1, 0, 500);
	ck_assert_int_eq(tsp_run_until(loop, &z.viewed, 5000), 0);
	ck_assert_uint_eq(z.held, 1);
	ck_assert_uint_eq(loop->bufs.fwd_held, 1);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &z.done, 5000), 0);
	ck_assert_int_eq(z.sleep_res, -ECANCELED);
	tsp_run_for(loop, 5);
	ck_assert_uint_eq(loop->bufs.fwd_held, 0);
	ck_assert_int_eq(iou_task_detach(t), 0);
	tsp_close_and_wait(loop, z.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* iou_task_release() gives the buffer back at once. */
START_TEST(test_view_release)
{
	iou_loop *loop = small_loop();
	struct sleeper z = { .loop = loop, .release = 1 };
	iou_task *t;
	int fd = tsp_open_pair(loop, NULL, &z.s);

	ck_assert_int_eq(iou_task_spawn(loop, view_sleep_main, &z, NULL, &t), 0);
	send_seed(fd, 1, 0, 500);
	ck_assert_int_eq(tsp_run_until(loop, &z.viewed, 5000), 0);
	ck_assert_uint_eq(z.held, 1);
	ck_assert_int_eq(z.release_res, 0);
	ck_assert_uint_eq(z.held_released, 0);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(iou_task_detach(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &z.done, 5000), 0);
	tsp_close_and_wait(loop, z.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- read view: spilled bytes, callback reads meanwhile ----------------- */

struct spill {
	iou_loop *loop;
	iou_stream *s;
	int stage, done;
	size_t off;     /* stream offset of the next byte the task reads */
	size_t cb_got;
	ssize_t last;
	unsigned held;
};

static void spill_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct spill *x = ud;

	(void)s;
	ck_assert_int_eq(res, 2500);
	/* after the view's 100 bytes: the view took them out of the stream */
	ck_assert_uint_eq(tsp_mismatch(data, 2500, 5, 100), 2500);
	x->cb_got = (size_t)res;
}

static void spill_main(void *arg)
{
	struct spill *x = arg;
	unsigned char buf[3000];
	const void *p;
	ssize_t n;

	/* A peek that spans buffers: the bytes move into the spill. */
	ck_assert_int_eq(iou_task_peek(x->s, buf, 3000, 5000), 3000);
	ck_assert_uint_gt(x->s->rxq.spill_len, 0);
	n = iou_task_read_view(x->s, 100, 5000, &p);
	ck_assert_int_eq(n, 100);
	x->held = x->loop->bufs.fwd_held;
	x->stage = 1;
	/* Meanwhile a callback read consumes (and more bytes arrive, which
	 * the spill takes in and may move): the view stays put. */
	while (x->stage < 2)
		ck_assert_int_eq(iou_task_yield(), 0);
	ck_assert_uint_eq(tsp_mismatch(p, 100, 5, 0), 100);
	x->off = 2600;
	while ((n = iou_task_read_view(x->s, 1 << 20, 5000, &p)) > 0) {
		ck_assert_uint_eq(tsp_mismatch(p, (size_t)n, 5, x->off),
				  (size_t)n);
		x->off += (size_t)n;
	}
	x->last = n;
	x->done = 1;
}

START_TEST(test_view_spill_and_callback_reads)
{
	iou_loop *loop = small_loop();
	struct spill x = { .loop = loop };
	int fd = tsp_open_pair(loop, NULL, &x.s);

	ck_assert_int_eq(iou_task_spawn(loop, spill_main, &x, NULL, NULL), 0);
	send_seed(fd, 5, 0, 3000);
	ck_assert_int_eq(tsp_run_until(loop, &x.stage, 5000), 0);
	ck_assert_uint_eq(x.held, 0); /* part of the spill: a copy */
	send_seed(fd, 5, 3000, 2000);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_read_exactly(x.s, 2500, spill_cb, &x), 0);
	for (int i = 0; i < 2000 && !x.cb_got; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(x.cb_got, 2500);
	x.stage = 2;
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 5000), 0);
	ck_assert_int_eq(x.last, 0);
	ck_assert_uint_eq(x.off, 5000);
	ck_assert_uint_eq(loop->bufs.fwd_held, 0);
	tsp_close_and_wait(loop, x.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- read view: deadline, peer close and reset, cancel ------------------ */

struct edge {
	iou_stream *s;
	ssize_t r[4];
	char data[4][16];
	int n, done;
	int timeout_ms;
};

static void edge_main(void *arg)
{
	struct edge *e = arg;

	for (e->n = 0; e->n < 3; e->n++) {
		const void *p = NULL;

		e->r[e->n] = iou_task_read_view(e->s, 16, e->n ? 3000 :
						e->timeout_ms, &p);
		if (e->r[e->n] > 0)
			memcpy(e->data[e->n], p, (size_t)e->r[e->n]);
		if (e->r[e->n] <= 0 && e->r[e->n] != -ETIMEDOUT)
			break;
	}
	e->done = 1;
}

/* A deadline passes (nothing lost), bytes, then the peer's end of file. */
START_TEST(test_view_deadline_and_eof)
{
	iou_loop *loop = small_loop();
	struct edge e = { .timeout_ms = 50 };
	int fd = tsp_open_pair(loop, NULL, &e.s);

	ck_assert_int_eq(iou_task_spawn(loop, edge_main, &e, NULL, NULL), 0);
	tsp_run_for(loop, 120);
	ck_assert_int_eq(e.r[0], -ETIMEDOUT);
	ck_assert_int_eq(send(fd, "abc", 3, 0), 3);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 3000), 0);
	ck_assert_int_eq(e.r[1], 3);
	ck_assert_mem_eq(e.data[1], "abc", 3);
	ck_assert_int_eq(e.r[2], 0);
	tsp_close_and_wait(loop, e.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(test_view_peer_reset)
{
	iou_loop *loop = small_loop();
	struct edge e = { .timeout_ms = 3000 };
	int fd = tsp_open_pair(loop, NULL, &e.s);

	ck_assert_int_eq(iou_task_spawn(loop, edge_main, &e, NULL, NULL), 0);
	tsp_run_for(loop, 20);
	tsp_rst(fd);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 3000), 0);
	ck_assert_int_eq(e.r[0], -ECONNRESET);
	tsp_close_and_wait(loop, e.s);
	t_loop_destroy(loop);
}
END_TEST

/* Cancelled while waiting: -ECANCELED, and the bytes that come later stay
 * in the stream. */
START_TEST(test_view_cancel_blocked)
{
	iou_loop *loop = small_loop();
	struct edge e = { .timeout_ms = -1 };
	iou_task *t;
	int fd = tsp_open_pair(loop, NULL, &e.s);

	ck_assert_int_eq(iou_task_spawn(loop, edge_main, &e, NULL, &t), 0);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &e.done, 3000), 0);
	ck_assert_int_eq(e.r[0], -ECANCELED);
	ck_assert_int_eq(iou_task_detach(t), 0);
	ck_assert_int_eq(send(fd, "xyz", 3, 0), 3);
	for (int i = 0; i < 2000 && iou_buffered(e.s) < 3; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(iou_buffered(e.s), 3);
	tsp_close_and_wait(loop, e.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- misuse -------------------------------------------------------------- */

struct misuse {
	iou_stream *s;
	int done;
};

static void misuse_main(void *arg)
{
	struct misuse *m = arg;
	const void *p;

	ck_assert_int_eq(iou_task_read_view(NULL, 16, -1, &p), -EINVAL);
	ck_assert_int_eq(iou_task_read_view(m->s, 16, -1, NULL), -EINVAL);
	ck_assert_int_eq(iou_task_read_view(m->s, 0, -1, &p), -EINVAL);
	ck_assert_int_eq(iou_task_release(NULL), -EINVAL);
	ck_assert_int_eq(iou_task_release(m->s), 0); /* nothing held */
	ck_assert_int_eq(iou_task_shutdown(NULL, -1), -EINVAL);
	ck_assert_int_eq(iou_task_shutdown(m->s, -1), 0);
	ck_assert_int_eq(iou_task_shutdown(m->s, -1), -IOU_ECLOSED); /* twice */
	m->done = 1;
}

START_TEST(test_misuse)
{
	iou_loop *loop = small_loop();
	struct misuse m = { 0 };
	const void *p;
	char buf[4];
	int fd = tsp_open_pair(loop, NULL, &m.s);

	ck_assert_int_eq(iou_task_read_view(m.s, 16, -1, &p), -EPERM);
	ck_assert_int_eq(iou_task_release(m.s), -EPERM);
	ck_assert_int_eq(iou_task_shutdown(m.s, -1), -EPERM);
	ck_assert_int_eq(iou_task_spawn(loop, misuse_main, &m, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &m.done, 3000), 0);
	tsp_set_timeouts(fd);
	ck_assert_int_eq(recv(fd, buf, sizeof(buf), 0), 0); /* the FIN */
	tsp_close_and_wait(loop, m.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- shutdown ------------------------------------------------------------ */

struct half {
	iou_stream *s;
	size_t fed;
	int timeout_ms;
	int res, started, done;
	ssize_t after;  /* a read after the shutdown */
	char buf[8];
	int read_after;
};

static void half_main(void *arg)
{
	struct half *h = arg;
	unsigned char chunk[4096];

	for (size_t off = 0; off < h->fed; off += sizeof(chunk)) {
		size_t k = h->fed - off < sizeof(chunk) ? h->fed - off : sizeof(chunk);

		tsp_fill(chunk, k, 9, off);
		ck_assert_int_eq(iou_feed(h->s, chunk, k), 0);
	}
	h->started = 1;
	h->res = iou_task_shutdown(h->s, h->timeout_ms);
	if (h->read_after)
		h->after = iou_task_read_exactly(h->s, h->buf, 3, 3000);
	h->done = 1;
}

/* Everything fed goes out, then the FIN; the task reads on. */
START_TEST(test_shutdown_sends_all_then_fin)
{
	iou_loop *loop = small_loop();
	struct half h = { .fed = 1u << 20, .timeout_ms = 5000, .read_after = 1 };
	struct tsp_peer rx = { 0 };
	int fd = tsp_open_pair(loop, NULL, &h.s);

	tsp_recv_start(&rx, fd, SIZE_MAX, 1, 9, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, NULL), 0);
	for (int i = 0; i < 20000 && !rx.finished; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(tsp_join(&rx, 5000), 0);
	ck_assert_int_eq(h.res, 0);
	ck_assert_uint_eq(rx.done, h.fed);
	ck_assert_uint_eq(rx.bad_at, SIZE_MAX);
	ck_assert_int_eq(rx.eof, 1);
	ck_assert_int_eq(send(fd, "bye", 3, 0), 3);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_int_eq(h.after, 3);
	ck_assert_mem_eq(h.buf, "bye", 3);
	tsp_close_and_wait(loop, h.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* The peer does not read: the deadline passes, no FIN goes out, and the
 * close that follows resets (the peer cannot take it for the end). */
START_TEST(test_shutdown_deadline)
{
	iou_loop *loop = small_loop();
	struct half h = { .fed = 8u << 20, .timeout_ms = 100 };
	unsigned char buf[65536];
	size_t got = 0;
	ssize_t n;
	int closed = 0;
	int fd = tsp_open_pair(loop, NULL, &h.s);

	small_bufs(fd, h.s);
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_int_eq(h.res, -ETIMEDOUT);
	ck_assert_int_eq(iou_close_graceful(h.s, 1000, tsp_count_close_cb,
					    &closed), 0);
	ck_assert_int_eq(tsp_run_until(loop, &closed, 3000), 0);
	tsp_set_timeouts(fd);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, -1);
	ck_assert_int_eq(errno, ECONNRESET);
	ck_assert_uint_lt(got, h.fed);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* The peer closed: our FIN still goes out (0). */
START_TEST(test_shutdown_peer_closed)
{
	iou_loop *loop = small_loop();
	struct half h = { .timeout_ms = 3000 };
	int fd = tsp_open_pair(loop, NULL, &h.s);

	close(fd);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_int_eq(h.res, 0);
	tsp_close_and_wait(loop, h.s);
	t_loop_destroy(loop);
}
END_TEST

/* The peer reset: the fed bytes cannot go, the error says so. */
START_TEST(test_shutdown_peer_reset)
{
	iou_loop *loop = small_loop();
	struct half h = { .fed = 65536, .timeout_ms = 3000 };
	int fd = tsp_open_pair(loop, NULL, &h.s);

	tsp_rst(fd);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_msg(h.res == -ECONNRESET || h.res == -EPIPE,
		      "res %d", h.res);
	tsp_close_and_wait(loop, h.s);
	t_loop_destroy(loop);
}
END_TEST

/* Cancelled while the bytes go out: the send in flight is cancelled (the
 * sending side broken, as by a write deadline), -ECANCELED comes without
 * the peer reading, and no FIN follows what went out before. */
START_TEST(test_shutdown_cancel)
{
	iou_loop *loop = small_loop();
	struct half h = { .fed = 4u << 20, .timeout_ms = -1 };
	unsigned char buf[65536];
	size_t got = 0;
	ssize_t n;
	iou_task *t;
	int fd = tsp_open_pair(loop, NULL, &h.s);

	small_bufs(fd, h.s);
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, &t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.started, 3000), 0);
	tsp_run_for(loop, 30);
	ck_assert_int_eq(h.done, 0);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(iou_task_detach(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_int_eq(h.res, -ECANCELED);
	tsp_run_for(loop, 20);
	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, -1);
	ck_assert_int_eq(errno, EAGAIN); /* no FIN */
	ck_assert_uint_lt(got, h.fed);
	tsp_close_and_wait(loop, h.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- proxy --------------------------------------------------------------- */

struct px {
	iou_stream *a, *b;
	int timeout_ms;
	ssize_t res;
	int done;
};

static void px_main(void *arg)
{
	struct px *x = arg;

	x->res = iou_task_proxy(x->a, x->b, x->timeout_ms);
	x->done = 1;
}

/* Both ways at once, each end of file passed on as a half-close (each
 * receiver sees all its bytes, then the end of file). */
START_TEST(test_proxy_both_ways)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = 5000 };
	struct tsp_peer atx = { 0 }, arx = { 0 }, btx = { 0 }, brx = { 0 };
	size_t alen = 200 * 1000, blen = 100 * 1000;
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, NULL), 0);
	tsp_recv_start(&arx, fa, SIZE_MAX, 1, 12, NULL, 0, TSP_KEEP);
	tsp_recv_start(&brx, fb, SIZE_MAX, 1, 11, NULL, 0, TSP_KEEP);
	tsp_send_start(&atx, fa, 11, alen, 3000, 0, TSP_SHUT_WR);
	tsp_send_start(&btx, fb, 12, blen, 5000, 0, TSP_SHUT_WR);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 10000), 0);
	ck_assert_int_eq(x.res, (ssize_t)(alen + blen));
	for (int i = 0; i < 2000 && !(arx.finished && brx.finished); i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(tsp_join(&atx, 5000), 0);
	ck_assert_int_eq(tsp_join(&btx, 5000), 0);
	ck_assert_int_eq(tsp_join(&arx, 5000), 0);
	ck_assert_int_eq(tsp_join(&brx, 5000), 0);
	ck_assert_uint_eq(brx.done, alen);
	ck_assert_uint_eq(brx.bad_at, SIZE_MAX);
	ck_assert_int_eq(brx.eof, 1);
	ck_assert_uint_eq(arx.done, blen);
	ck_assert_uint_eq(arx.bad_at, SIZE_MAX);
	ck_assert_int_eq(arx.eof, 1);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* Idle past the deadline: -ETIMEDOUT; bytes that come later stay in the
 * stream. */
START_TEST(test_proxy_deadline)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = 50 };
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 3000), 0);
	ck_assert_int_eq(x.res, -ETIMEDOUT);
	ck_assert_int_eq(send(fa, "abc", 3, 0), 3);
	for (int i = 0; i < 2000 && iou_buffered(x.a) < 3; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_uint_eq(iou_buffered(x.a), 3);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* The deadline is the proxy's idleness, not one direction's: a -> b
 * carries bytes every 30 ms for about 600 ms while b -> a is silent, past
 * a 300 ms deadline; the proxy times out only once a -> b stops too. */
START_TEST(test_proxy_idle_is_either_way)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = 300 };
	struct tsp_peer atx = { 0 }, brx = { 0 };
	size_t len = 20 * 100;
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, NULL), 0);
	tsp_recv_start(&brx, fb, len, 1, 11, NULL, 0, TSP_KEEP);
	tsp_send_start(&atx, fa, 11, len, 100, 30000, TSP_KEEP);
	for (int i = 0; i < 100000 && !brx.finished && !x.done; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_msg(!x.done, "the proxy ended (%zd) while a -> b still went on",
		      x.res);
	ck_assert_int_eq(tsp_join(&brx, 5000), 0);
	ck_assert_uint_eq(brx.done, len);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 3000), 0);
	ck_assert_int_eq(x.res, -ETIMEDOUT);
	ck_assert_int_eq(tsp_join(&atx, 5000), 0);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* Cancelled while a forward's bytes wait on a target that does not read:
 * the target's sending side breaks and the proxy ends. */
START_TEST(test_proxy_cancel_stuck_on_target)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = -1 };
	struct tsp_peer atx = { 0 };
	iou_task *t;
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	small_bufs(fb, x.b);
	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, &t), 0);
	tsp_send_start(&atx, fa, 11, 8u << 20, 65536, 0, TSP_KEEP);
	tsp_run_for(loop, 300); /* b's peer reads nothing: a forward waits */
	ck_assert_int_eq(x.done, 0);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(iou_task_detach(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 3000), 0);
	ck_assert_int_eq(x.res, -ECANCELED);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fa);
	tsp_join(&atx, 5000);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* A reset on one side ends both directions with its error. */
START_TEST(test_proxy_peer_reset)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = -1 };
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, NULL), 0);
	tsp_run_for(loop, 20);
	tsp_rst(fa);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 3000), 0);
	ck_assert_int_eq(x.res, -ECONNRESET);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* A peer's end of file is passed on while the other way goes on; then a
 * cancel ends the proxy. */
START_TEST(test_proxy_half_close_then_cancel)
{
	iou_loop *loop = small_loop();
	struct px x = { .timeout_ms = -1 };
	char buf[8];
	iou_task *t;
	int fa = tsp_open_pair(loop, NULL, &x.a);
	int fb = tsp_open_pair(loop, NULL, &x.b);

	tsp_set_timeouts(fa);
	tsp_set_timeouts(fb);
	ck_assert_int_eq(iou_task_spawn(loop, px_main, &x, NULL, &t), 0);
	ck_assert_int_eq(send(fa, "hi", 2, 0), 2);
	ck_assert_int_eq(shutdown(fa, SHUT_WR), 0);
	while (recv(fb, buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK) < 2)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(recv(fb, buf, sizeof(buf), 0), 2);
	for (int i = 0; i < 2000 && recv(fb, buf, sizeof(buf), MSG_DONTWAIT) < 0; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(recv(fb, buf, sizeof(buf), MSG_DONTWAIT), 0); /* passed on */
	ck_assert_int_eq(send(fb, "yo", 2, 0), 2);
	while (recv(fa, buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK) < 2)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(recv(fa, buf, sizeof(buf), 0), 2);
	ck_assert_int_eq(x.done, 0);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(iou_task_detach(t), 0);
	ck_assert_int_eq(tsp_run_until(loop, &x.done, 3000), 0);
	ck_assert_int_eq(x.res, -ECANCELED);
	tsp_close_and_wait(loop, x.a);
	tsp_close_and_wait(loop, x.b);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

struct px_misuse {
	iou_stream *a;
	int done;
};

static void px_misuse_main(void *arg)
{
	struct px_misuse *m = arg;

	ck_assert_int_eq(iou_task_proxy(NULL, m->a, -1), -EINVAL);
	ck_assert_int_eq(iou_task_proxy(m->a, NULL, -1), -EINVAL);
	ck_assert_int_eq(iou_task_proxy(m->a, m->a, -1), -EINVAL);
	m->done = 1;
}

START_TEST(test_proxy_misuse)
{
	iou_loop *loop = small_loop();
	struct px_misuse m = { 0 };
	int fa = tsp_open_pair(loop, NULL, &m.a);

	ck_assert_int_eq(iou_task_proxy(m.a, m.a, -1), -EPERM);
	ck_assert_int_eq(iou_task_spawn(loop, px_misuse_main, &m, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &m.done, 3000), 0);
	tsp_close_and_wait(loop, m.a);
	close(fa);
	t_loop_destroy(loop);
}
END_TEST

/* Closed by a callback while the bytes go out: the call ends with the
 * close's error. */
START_TEST(test_shutdown_stream_closed)
{
	iou_loop *loop = small_loop();
	struct half h = { .fed = 4u << 20, .timeout_ms = -1 };
	struct closer c = { 0 };
	int fd = tsp_open_pair(loop, NULL, &h.s);

	small_bufs(fd, h.s);
	c.s = h.s;
	ck_assert_int_eq(iou_task_spawn(loop, half_main, &h, NULL, NULL), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.started, 3000), 0);
	tsp_run_for(loop, 30);
	ck_assert_int_eq(h.done, 0);
	ck_assert_int_eq(iou_loop_post(loop, post_close_stream, &c), 0);
	ck_assert_int_eq(tsp_run_until(loop, &h.done, 3000), 0);
	ck_assert_msg(h.res == -ECANCELED || h.res == -IOU_ECLOSED, "res %d",
		      h.res);
	ck_assert_int_eq(tsp_run_until(loop, &c.closed, 3000), 0);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

static Suite *view_suite(void)
{
	Suite *s = suite_create("task_view");
	TCase *tc;

	tc = tcase_create("read_view");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_view_echo);
	tcase_add_test(tc, test_view_outlives_close);
	tcase_add_test(tc, test_view_outlives_cut);
	tcase_add_test(tc, test_view_survives_target_close);
	tcase_add_test(tc, test_view_cancel_releases_at_end);
	tcase_add_test(tc, test_view_release);
	tcase_add_test(tc, test_view_spill_and_callback_reads);
	tcase_add_test(tc, test_view_deadline_and_eof);
	tcase_add_test(tc, test_view_peer_reset);
	tcase_add_test(tc, test_view_cancel_blocked);
	tcase_add_test(tc, test_misuse);
	suite_add_tcase(s, tc);

	tc = tcase_create("shutdown");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_shutdown_sends_all_then_fin);
	tcase_add_test(tc, test_shutdown_deadline);
	tcase_add_test(tc, test_shutdown_peer_closed);
	tcase_add_test(tc, test_shutdown_peer_reset);
	tcase_add_test(tc, test_shutdown_cancel);
	tcase_add_test(tc, test_shutdown_stream_closed);
	suite_add_tcase(s, tc);

	tc = tcase_create("proxy");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_proxy_both_ways);
	tcase_add_test(tc, test_proxy_deadline);
	tcase_add_test(tc, test_proxy_peer_reset);
	tcase_add_test(tc, test_proxy_half_close_then_cancel);
	tcase_add_test(tc, test_proxy_idle_is_either_way);
	tcase_add_test(tc, test_proxy_cancel_stuck_on_target);
	tcase_add_test(tc, test_proxy_misuse);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(view_suite());
}
