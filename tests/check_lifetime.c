/* SPDX-License-Identifier: MIT */
/*
 * check_lifetime: the lifetime rules of iou.h.  The library never frees a
 * stream the application has not closed (a server's idle timeout and grace
 * limit cut a connection, they do not free it); a server's done callback
 * comes after the last connection's close callback; a shut-down server
 * refuses connects at once; the idle timeout counts sending progress and a
 * cut with bytes left behind is a reset, never a clean-looking end of file.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connect.h" /* iou__resolve_delay_ms: a slow look-up */
#include "internal.h" /* the pool and a stream's flags */
#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)

/* ---- a server whose application keeps its streams ----------------------- */

struct app {
	iou_loop *loop;
	iou_server *srv;
	iou_stream *conn;       /* the last accepted stream */
	int conns;
	int cuts, cut_err;
	int closed;             /* close callbacks */
	int done;               /* server done callback */
	int done_after_close;   /* the close callback ran before done */
	struct iou_server_stats at_close; /* read in the close callback */
	int write_res, write_calls;
	unsigned char *big;
	size_t big_len;
	int read_pending;       /* on_conn issues a read */
	int read_res, read_calls;
};

static void on_cut(iou_server *srv, iou_stream *s, int err, void *ud)
{
	struct app *a = ud;

	(void)srv;
	ck_assert_ptr_eq(s, a->conn);
	a->cuts++;
	a->cut_err = err;
}

static void on_write(iou_stream *s, ssize_t res, void *ud)
{
	struct app *a = ud;

	(void)s;
	a->write_calls++;
	a->write_res = (int)res;
}

static void on_read(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct app *a = ud;

	(void)s;
	(void)data;
	a->read_calls++;
	a->read_res = (int)res;
}

static void on_conn(iou_server *srv, iou_stream *s, const struct sockaddr *peer,
		    void *ud)
{
	struct app *a = ud;

	(void)srv;
	(void)peer;
	a->conn = s;
	a->conns++;
	if (a->big)
		ck_assert_int_eq(iou_write_all(s, a->big, a->big_len, on_write, a), 0);
	if (a->read_pending)
		ck_assert_int_eq(iou_read(s, 4096, on_read, a), 0);
}

static void on_closed(iou_stream *s, void *ud)
{
	struct app *a = ud;

	(void)s;
	a->closed++;
	/* The server is alive until its done callback: stats still work. */
	iou_server_get_stats(a->srv, &a->at_close);
}

static void on_done(iou_server *srv, uint64_t finished, uint64_t cut, void *ud)
{
	struct app *a = ud;

	(void)srv;
	(void)finished;
	(void)cut;
	a->done++;
	a->done_after_close = a->closed;
}

static void app_start(struct app *a, unsigned idle_ms)
{
	struct iou_server_opts o;

	a->loop = t_loop_create_or_skip(NULL);
	iou_server_opts_init(&o);
	o.idle_timeout_ms = idle_ms;
	o.on_cut = on_cut;
	ck_assert_int_eq(iou_server_start(a->loop, &o, on_conn, a, &a->srv), 0);
}

/* The idle timeout cuts a connection the application holds without a
 * pending operation: the stream stays valid (ASan: no use after free),
 * later calls say IOU_ECLOSED, on_cut told the application, and the memory
 * goes only with the application's iou_close(). */
START_TEST(test_idle_cut_keeps_stream)
{
	struct app a = { 0 };
	char buf[16];
	int fd;

	app_start(&a, 100);
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.cuts, 2000), 0);
	ck_assert_int_eq(a.cut_err, -ETIMEDOUT);
	tsp_run_for(a.loop, 150); /* well past the cut: nothing frees it */
	ck_assert_int_eq(iou_write(a.conn, "late", 4, on_write, &a),
			 -IOU_ECLOSED);
	ck_assert_int_eq(iou_read(a.conn, 16, on_read, &a), -IOU_ECLOSED);
	ck_assert_int_eq(iou_feed(a.conn, "x", 1), -IOU_ECLOSED);
	ck_assert_int_ge(iou_stream_fd(a.conn), 0);
	/* the peer sees the end of the connection */
	ck_assert_int_eq(recv(fd, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(a.closed, 0);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.closed, 2000), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 0, on_done, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST

/* A pending read learns of the cut through its callback, before on_cut. */
START_TEST(test_idle_cut_fails_pending_read)
{
	struct app a = { .read_pending = 1 };
	int fd;

	app_start(&a, 100);
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.cuts, 2000), 0);
	ck_assert_int_eq(a.read_calls, 1);
	ck_assert_int_eq(a.read_res, -ETIMEDOUT);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.closed, 2000), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 0, on_done, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST

/* The grace limit cuts, the application closes, and only then does the
 * server finish: its done callback comes after the close callback, which
 * may still read the server's stats. */
START_TEST(test_grace_cut_then_done_after_close)
{
	struct app a = { 0 };
	int fd;

	app_start(&a, 0);
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 50, on_done, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.cuts, 2000), 0);
	ck_assert_int_eq(a.cut_err, -ECONNABORTED);
	tsp_run_for(a.loop, 100);
	ck_assert_int_eq(a.done, 0); /* the application still holds it */
	ck_assert_int_eq(iou_write(a.conn, "x", 1, NULL, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	ck_assert_int_eq(a.done_after_close, 1);
	ck_assert_uint_eq(a.at_close.open, 1);
	ck_assert_uint_eq(a.at_close.cut, 1);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST

/* A connection the application closes itself during the grace period: its
 * close callback still runs before the done callback. */
START_TEST(test_done_after_close_in_grace)
{
	struct app a = { 0 };
	int fd;

	app_start(&a, 0);
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 5000, on_done, &a), 0);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	ck_assert_int_eq(a.done_after_close, 1);
	ck_assert_int_eq(a.cuts, 0);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST

/* Once iou_server_shutdown() returned, a connect is refused: no accepted
 * connection that is reset on the next turn. */
START_TEST(test_shutdown_refuses_at_once)
{
	struct app a = { 0 };
	uint16_t port;
	int fd, ret;

	app_start(&a, 0);
	port = iou_server_port(a.srv);
	tsp_run_for(a.loop, 20); /* the accept is armed */
	ck_assert_int_eq(iou_server_shutdown(a.srv, 1000, on_done, &a), 0);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	{
		struct sockaddr_in sin = { .sin_family = AF_INET,
					   .sin_port = htons(port) };

		sin.sin_addr.s_addr = htonl(0x7f000001);
		ret = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
	}
	ck_assert_msg(ret < 0 && errno == ECONNREFUSED,
		      "connect after shutdown: %d (%s)", ret,
		      ret < 0 ? strerror(errno) : "accepted");
	close(fd);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	ck_assert_int_eq(a.conns, 0);
	t_loop_destroy(a.loop);
}
END_TEST

/* ---- the idle timeout and sending progress ------------------------------ */

struct slow_reader {
	int fd;
	size_t want, got;
	unsigned pause_us;      /* between reads of 64 KiB */
	size_t stop_after;      /* stop reading for stall_ms after this many */
	unsigned stall_ms;
	int eof, err;
	volatile int finished;
};

static void *slow_reader_main(void *arg)
{
	struct slow_reader *r = arg;
	size_t cap = 64 * 1024;
	unsigned char *buf = malloc(cap);
	int stalled = 0;

	ck_assert_ptr_nonnull(buf);
	tsp_set_timeouts(r->fd);
	while (r->got < r->want) {
		ssize_t n;

		if (!stalled && r->stall_ms && r->got >= r->stop_after) {
			stalled = 1;
			usleep(r->stall_ms * 1000u);
		}
		n = recv(r->fd, buf, cap, 0);
		if (n == 0) {
			r->eof = 1;
			break;
		}
		if (n < 0) {
			r->err = errno;
			break;
		}
		r->got += (size_t)n;
		if (r->pause_us)
			usleep(r->pause_us);
	}
	free(buf);
	__atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* A download to a client that keeps reading, slower than the idle timeout
 * but steadily, is never cut: sending is progress. */
START_TEST(test_idle_counts_sending)
{
	struct app a = { 0 };
	struct slow_reader r = { 0 };
	pthread_t th;

	if (t_under_valgrind()) {
		/* valgrind starves the reader thread for longer than the idle
		 * timeout: the timing is the test */
		fprintf(stderr, "%s: skipped under valgrind\n", __func__);
		return;
	}
	a.big_len = 8 * MiB;
	a.big = malloc(a.big_len);
	ck_assert_ptr_nonnull(a.big);
	memset(a.big, 'd', a.big_len);
	app_start(&a, 300);
	r.fd = t_connect_loopback(iou_server_port(a.srv));
	/* 64 KiB every 8 ms: about 1 s in all, 3 idle periods */
	r.want = a.big_len;
	r.pause_us = 8000;
	ck_assert_int_eq(pthread_create(&th, NULL, slow_reader_main, &r), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.write_calls, 10000), 0);
	ck_assert_int_eq(a.write_res, (int)a.big_len);
	ck_assert_int_eq(a.cuts, 0);
	pthread_join(th, NULL);
	ck_assert_uint_eq(r.got, a.big_len);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 0, on_done, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	close(r.fd);
	free(a.big);
	t_loop_destroy(a.loop);
}
END_TEST

/* A client that stops reading in the middle is cut, and sees a reset, not
 * an end of file that would pass for the end of the download. */
START_TEST(test_idle_cut_resets_with_bytes_left)
{
	struct app a = { 0 };
	struct slow_reader r = { 0 };
	pthread_t th;

	if (t_under_valgrind()) {
		/* valgrind starves the reader thread for longer than the idle
		 * timeout: the timing is the test */
		fprintf(stderr, "%s: skipped under valgrind\n", __func__);
		return;
	}
	a.big_len = 32 * MiB;
	a.big = malloc(a.big_len);
	ck_assert_ptr_nonnull(a.big);
	memset(a.big, 'd', a.big_len);
	app_start(&a, 200);
	r.fd = t_connect_loopback(iou_server_port(a.srv));
	r.want = a.big_len;
	r.stop_after = 1 * MiB;
	r.stall_ms = 1000;
	ck_assert_int_eq(pthread_create(&th, NULL, slow_reader_main, &r), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.write_calls, 10000), 0);
	ck_assert_int_eq(a.write_res, -ETIMEDOUT);
	ck_assert_int_eq(a.cuts, 1);
	while (!__atomic_load_n(&r.finished, __ATOMIC_ACQUIRE))
		tsp_run_for(a.loop, 20);
	pthread_join(th, NULL);
	ck_assert_msg(r.err == ECONNRESET && !r.eof,
		      "client got %zu bytes, then eof %d, error %s", r.got,
		      r.eof, strerror(r.err));
	ck_assert_uint_lt(r.got, a.big_len);
	ck_assert_int_eq(iou_close(a.conn, on_closed, &a), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 0, on_done, &a), 0);
	ck_assert_int_eq(t_run_until(a.loop, &a.done, 2000), 0);
	close(r.fd);
	free(a.big);
	t_loop_destroy(a.loop);
}
END_TEST

/* ---- cancel, deadlines, queued bytes ------------------------------------ */

struct rd {
	int calls;
	ssize_t res;
	char data[64];
	iou_stream *s;
	int close_after_reissue; /* in the first callback: read again, close */
	struct rd *next;         /* the re-issued read's record */
};

static void rd_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct rd *r = ud;

	r->calls++;
	r->res = res;
	if (res > 0)
		memcpy(r->data, data, (size_t)res < sizeof(r->data) ? (size_t)res
								   : sizeof(r->data));
	if (r->close_after_reissue && r->calls == 1) {
		ck_assert_int_eq(iou_read(s, 1, rd_cb, r->next), 0);
		ck_assert_int_eq(iou_close(s, NULL, NULL), 0);
	}
}

struct wr {
	int calls;
	ssize_t res;
	size_t queued_at_cb;
};

static void wr_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct wr *w = ud;

	w->calls++;
	w->res = res;
	w->queued_at_cb = iou_write_queued(s);
}

/* A cancelled read completes with -ECANCELED on a later turn, never inside
 * the call; the bytes it had seen stay buffered for the next read. */
START_TEST(test_read_cancel_keeps_bytes)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd r = { 0 }, r2 = { 0 };
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read_cancel(s), -ENOENT);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1024, rd_cb, &r), 0);
	ck_assert_int_eq(send(fd, "partial", 7, 0), 7);
	while (iou_buffered(s) < 7)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(iou_read_cancel(s), 0);
	ck_assert_int_eq(r.calls, 0); /* never synchronously */
	ck_assert_int_eq(iou_read(s, 64, rd_cb, &r2), -EBUSY);
	ck_assert_int_eq(t_run_until(loop, &r.calls, 2000), 0);
	ck_assert_int_eq(r.res, -ECANCELED);
	ck_assert_uint_eq(iou_buffered(s), 7);
	ck_assert_int_eq(iou_read(s, 64, rd_cb, &r2), 0);
	ck_assert_int_eq(t_run_until(loop, &r2.calls, 2000), 0);
	ck_assert_int_eq(r2.res, 7);
	ck_assert_mem_eq(r2.data, "partial", 7);
	tsp_close_and_wait(loop, s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* A read issued in a read callback just before iou_close() is cancelled by
 * the close, not served from the bytes still buffered. */
START_TEST(test_read_before_close_cancelled)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd second = { 0 };
	struct rd first = { .close_after_reissue = 1, .next = &second };
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(send(fd, "abcd", 4, 0), 4);
	usleep(20000); /* all four bytes arrive in one receive */
	ck_assert_int_eq(iou_read(s, 1, rd_cb, &first), 0);
	ck_assert_int_eq(t_run_until(loop, &second.calls, 2000), 0);
	ck_assert_int_eq(first.res, 1);
	ck_assert_msg(second.res == -ECANCELED,
		      "read issued before close got %zd", second.res);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* A read past its deadline gets -ETIMEDOUT and loses nothing. */
START_TEST(test_read_timeout_loses_nothing)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd r = { 0 }, r2 = { 0 };
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);
	uint64_t t0;

	ck_assert_int_eq(iou_stream_set_read_timeout(NULL, 1), -EINVAL);
	ck_assert_int_eq(iou_stream_set_read_timeout(s, 100), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_read_exactly(s, 10, rd_cb, &r), 0);
	ck_assert_int_eq(send(fd, "01234", 5, 0), 5);
	ck_assert_int_eq(t_run_until(loop, &r.calls, 2000), 0);
	ck_assert_int_eq(r.res, -ETIMEDOUT);
	ck_assert_uint_ge(t_now_ms() - t0, 90);
	ck_assert_uint_eq(iou_buffered(s), 5);
	ck_assert_int_eq(send(fd, "56789", 5, 0), 5);
	ck_assert_int_eq(iou_read_exactly(s, 10, rd_cb, &r2), 0);
	ck_assert_int_eq(t_run_until(loop, &r2.calls, 2000), 0);
	ck_assert_int_eq(r2.res, 10);
	ck_assert_mem_eq(r2.data, "0123456789", 10);
	tsp_close_and_wait(loop, s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* A forward waiting for bytes times out like a read. */
static void fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	(void)s;
	wr_cb(s, res, ud);
}

START_TEST(test_forward_read_timeout)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct wr w = { 0 };
	iou_stream *a, *b;
	int fa = tsp_open_pair(loop, NULL, &a), fb = tsp_open_pair(loop, NULL, &b);

	ck_assert_int_eq(iou_stream_set_read_timeout(a, 50), 0);
	ck_assert_int_eq(iou_forward(a, b, 4096, fwd_cb, &w), 0);
	ck_assert_int_eq(t_run_until(loop, &w.calls, 2000), 0);
	ck_assert_int_eq(w.res, -ETIMEDOUT);
	tsp_close_and_wait(loop, a);
	tsp_close_and_wait(loop, b);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* Writes to a peer that does not read: queued bytes are visible, the
 * deadline fails the stalled write and the ones behind it. */
START_TEST(test_write_timeout_and_queued)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts o;
	struct wr w1 = { 0 }, w2 = { 0 };
	size_t len = 8 * MiB;
	unsigned char *big = malloc(len);
	iou_stream *s;
	int fd, small = 4096;
	uint64_t t0;

	ck_assert_ptr_nonnull(big);
	memset(big, 'w', len);
	iou_stream_opts_init(&o);
	o.sndbuf = 4096;
	fd = tsp_open_pair(loop, &o, &s);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_uint_eq(iou_write_queued(s), 0);
	ck_assert_int_eq(iou_stream_set_write_timeout(s, 200), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_write_all(s, big, len, wr_cb, &w1), 0);
	ck_assert_int_eq(iou_write(s, "tail", 4, wr_cb, &w2), 0);
	ck_assert_uint_eq(iou_write_queued(s), len + 4);
	tsp_run_for(loop, 50);
	ck_assert_uint_gt(iou_write_queued(s), 4);
	ck_assert_uint_lt(iou_write_queued(s), len + 4); /* some went out */
	ck_assert_int_eq(t_run_until(loop, &w2.calls, 3000), 0);
	ck_assert_int_eq(w1.res, -ETIMEDOUT);
	ck_assert_int_eq(w2.res, -ETIMEDOUT);
	ck_assert_uint_ge(t_now_ms() - t0, 190);
	ck_assert_uint_eq(iou_write_queued(s), 0);
	ck_assert_int_eq(iou_write(s, "x", 1, NULL, NULL), -ETIMEDOUT);
	tsp_close_and_wait(loop, s);
	close(fd);
	free(big);
	t_loop_destroy(loop);
}
END_TEST

/* Without a deadline the same writes complete once the peer reads, and the
 * queued count comes back to 0. */
START_TEST(test_write_queued_drains)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct wr w = { 0 };
	struct tsp_peer p = { 0 };
	size_t len = 4 * MiB;
	unsigned char *big = malloc(len);
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_ptr_nonnull(big);
	tsp_fill(big, len, 7, 0);
	ck_assert_int_eq(iou_write_all(s, big, len, wr_cb, &w), 0);
	ck_assert_uint_eq(iou_write_queued(s), len);
	tsp_recv_start(&p, fd, len, 1, 7, NULL, 0, TSP_KEEP);
	ck_assert_int_eq(t_run_until(loop, &w.calls, 10000), 0);
	ck_assert_int_eq(w.res, (int)len);
	ck_assert_uint_eq(w.queued_at_cb, 0);
	ck_assert_int_eq(tsp_join(&p, 5000), 0);
	ck_assert_uint_eq(p.bad_at, SIZE_MAX);
	tsp_close_and_wait(loop, s);
	close(fd);
	free(big);
	t_loop_destroy(loop);
}
END_TEST

/* ---- close that flushes ------------------------------------------------- */

struct http {
	unsigned char *resp;
	size_t resp_len;
	struct wr w;
	struct rd r;
	int closed;
	unsigned timeout_ms;
};

/* The request's callback answers, feeds a trailer and closes gracefully,
 * all in the same turn. */
static void http_req(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct http *h = ud;

	(void)data;
	h->r.calls++;
	h->r.res = res;
	if (res <= 0)
		return;
	ck_assert_int_eq(iou_write_all(s, h->resp, h->resp_len, wr_cb, &h->w), 0);
	ck_assert_int_eq(iou_feed(s, "TRAILER", 7), 0);
	ck_assert_int_eq(iou_close_graceful(s, h->timeout_ms, tsp_count_close_cb,
					    &h->closed), 0);
	ck_assert_int_eq(iou_write(s, "x", 1, NULL, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(iou_read(s, 1, rd_cb, &h->r), -IOU_ECLOSED);
	ck_assert_int_eq(iou_close(s, NULL, NULL), -IOU_ECLOSED);
}

/* A request that arrived with the client's FIN is answered in full before
 * the close: every written and fed byte, then a clean end of file. */
START_TEST(test_close_graceful_sends_everything)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct http h = { .resp_len = 2 * MiB, .timeout_ms = 5000 };
	struct tsp_peer p = { 0 };
	unsigned char *got;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	h.resp = malloc(h.resp_len);
	got = malloc(h.resp_len + 64);
	ck_assert_ptr_nonnull(h.resp);
	ck_assert_ptr_nonnull(got);
	tsp_fill(h.resp, h.resp_len, 3, 0);
	ck_assert_int_eq(send(fd, "GET /\n", 6, 0), 6);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1024, http_req, &h), 0);
	tsp_recv_start(&p, fd, SIZE_MAX, 0, 0, got, h.resp_len + 64, TSP_KEEP);
	ck_assert_int_eq(t_run_until(loop, &h.closed, 10000), 0);
	ck_assert_int_eq(tsp_join(&p, 5000), 0);
	ck_assert_int_eq(h.w.res, (int)h.resp_len);
	ck_assert_msg(p.eof && !p.err, "peer: eof %d, error %d", p.eof, p.err);
	ck_assert_uint_eq(p.done, h.resp_len + 7);
	ck_assert_uint_eq(tsp_mismatch(got, h.resp_len, 3, 0), h.resp_len);
	ck_assert_mem_eq(got + h.resp_len, "TRAILER", 7);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	close(fd);
	free(got);
	free(h.resp);
	t_loop_destroy(loop);
}
END_TEST

/* After its FIN the stream reads until the peer's end of file, discarding:
 * bytes the peer sends after the answer do not reset the connection. */
START_TEST(test_close_graceful_lingers_until_peer_eof)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct http h = { .resp_len = 1000, .timeout_ms = 5000 };
	char buf[2048];
	size_t got = 0;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);
	ssize_t n;

	tsp_set_timeouts(fd);
	h.resp = malloc(h.resp_len);
	ck_assert_ptr_nonnull(h.resp);
	memset(h.resp, 'r', h.resp_len);
	ck_assert_int_eq(send(fd, "GET /\nMORE", 10, 0), 10);
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1024, http_req, &h), 0);
	ck_assert_int_eq(t_run_until(loop, &h.w.calls, 2000), 0);
	tsp_run_for(loop, 50);
	ck_assert_int_eq(h.closed, 0); /* waits for the peer's end */
	ck_assert_int_eq(send(fd, "EVEN MORE", 9, 0), 9);
	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		got += (size_t)n;
	tsp_run_for(loop, 50);
	ck_assert_int_eq(h.closed, 0);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(t_run_until(loop, &h.closed, 2000), 0);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	ck_assert_msg(n == 0, "peer: %s after %zu bytes", strerror(errno), got);
	ck_assert_uint_eq(got, h.resp_len + 7);
	close(fd);
	free(h.resp);
	t_loop_destroy(loop);
}
END_TEST

/* Past the deadline the stream closes at once: the stalled write fails with
 * -ETIMEDOUT and the peer gets a reset, not a clean end of file. */
START_TEST(test_close_graceful_deadline)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts o;
	struct http h = { .resp_len = 8 * MiB, .timeout_ms = 200 };
	char buf[65536];
	iou_stream *s;
	int fd, small = 4096;
	uint64_t t0;
	ssize_t n;

	iou_stream_opts_init(&o);
	o.sndbuf = 4096;
	fd = tsp_open_pair(loop, &o, &s);
	tsp_set_timeouts(fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	h.resp = malloc(h.resp_len);
	ck_assert_ptr_nonnull(h.resp);
	memset(h.resp, 'r', h.resp_len);
	ck_assert_int_eq(send(fd, "GET /\n", 6, 0), 6);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_read_until(s, "\n", 1, 1024, http_req, &h), 0);
	ck_assert_int_eq(t_run_until(loop, &h.closed, 3000), 0);
	ck_assert_uint_ge(t_now_ms() - t0, 190);
	ck_assert_int_eq(h.w.res, -ETIMEDOUT);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		;
	ck_assert_msg(n < 0 && errno == ECONNRESET, "peer: %zd (%s)", n,
		      n < 0 ? strerror(errno) : "end of file");
	close(fd);
	free(h.resp);
	t_loop_destroy(loop);
}
END_TEST

/* A graceful close fails the pending read with -ECANCELED, later. */
START_TEST(test_close_graceful_cancels_read)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd r = { 0 };
	int closed = 0;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read(s, 16, rd_cb, &r), 0);
	ck_assert_int_eq(iou_close_graceful(NULL, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_close_graceful(s, 1000, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(t_run_until(loop, &r.calls, 2000), 0);
	ck_assert_int_eq(r.res, -ECANCELED);
	shutdown(fd, SHUT_WR);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ... also when the peer's end of file is what comes in first: the
 * receive of a flushing stream discards, it serves no read (found by
 * fuzz/fuzz_epoll.c: the read got 0). */
START_TEST(test_close_graceful_read_not_served_by_eof)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd r = { 0 };
	int closed = 0;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read(s, 16, rd_cb, &r), 0);
	ck_assert_int_ge(tsp_turn(loop), 0); /* the receive is armed */
	ck_assert_int_eq(r.calls, 0);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(iou_close_graceful(s, 0, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(t_run_until(loop, &r.calls, 2000), 0);
	ck_assert_int_eq(r.res, -ECANCELED);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	ck_assert_int_eq(r.calls, 1);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* A read cancelled (iou_read_cancel(), a graceful close) whose deadline
 * passes before the cancel took effect gets -ECANCELED, as promised, not
 * -ETIMEDOUT (the same gap as above, for a deadline). */
START_TEST(test_cancelled_read_past_deadline)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rd r = { 0 }, r2 = { 0 };
	int closed = 0;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_stream_set_read_timeout(s, 1), 0);
	ck_assert_int_eq(iou_read(s, 16, rd_cb, &r), 0);
	ck_assert_int_eq(iou_read_cancel(s), 0);
	usleep(20 * 1000); /* the deadline passes before the next turn */
	ck_assert_int_eq(t_run_until(loop, &r.calls, 2000), 0);
	ck_assert_int_eq(r.res, -ECANCELED);
	ck_assert_int_eq(iou_read(s, 16, rd_cb, &r2), 0);
	ck_assert_int_eq(iou_close_graceful(s, 0, tsp_count_close_cb, &closed), 0);
	usleep(20 * 1000);
	ck_assert_int_eq(t_run_until(loop, &r2.calls, 2000), 0);
	ck_assert_int_eq(r2.res, -ECANCELED);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	ck_assert_int_eq(r.calls + r2.calls, 2);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* SHUT_WR sends the fed bytes before the FIN. */
START_TEST(test_shutdown_wr_sends_fed_bytes)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	char buf[64];
	size_t got = 0;
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);
	ssize_t n;

	tsp_set_timeouts(fd);
	ck_assert_int_eq(iou_feed(s, "hello, ", 7), 0);
	ck_assert_int_eq(iou_feed(s, "world", 5), 0);
	ck_assert_int_eq(iou_shutdown(s, SHUT_WR), 0);
	ck_assert_uint_eq(iou_fed(s), 0);
	ck_assert_int_eq(iou_drain(s, NULL, NULL), -IOU_ECLOSED);
	tsp_run_for(loop, 50);
	while ((n = recv(fd, buf + got, sizeof(buf) - got, 0)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(got, 12);
	ck_assert_mem_eq(buf, "hello, world", 12);
	tsp_close_and_wait(loop, s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- connect is cancellable --------------------------------------------- */

struct conn {
	int calls, res, closed;
	iou_stream *s;
	int close_in_cb;
};

static void conn_cb(iou_stream *s, int res, void *ud)
{
	struct conn *c = ud;

	ck_assert_ptr_eq(s, c->s); /* the stream handed back by the call */
	c->calls++;
	c->res = res;
	if (c->close_in_cb)
		ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &c->closed), 0);
}

/* A listener whose backlog is full: SYNs to it go unanswered, so a connect
 * stays pending (SYN retries) without a packet leaving the machine. */
static int full_listener(uint16_t *port, int hold[2])
{
	int lfd = t_listen_ephemeral(port);

	ck_assert_int_eq(listen(lfd, 0), 0);
	for (int i = 0; i < 2; i++) {
		struct sockaddr_in sin = { .sin_family = AF_INET,
					   .sin_port = htons(*port) };

		sin.sin_addr.s_addr = htonl(0x7f000001);
		hold[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		connect(hold[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(50000);
	return lfd;
}

/* iou_close() on a stream whose connect hangs in SYN retries: the connect
 * callback gets -ECANCELED, then the close callback runs, and the loop has
 * no work left at once. */
START_TEST(test_close_cancels_pending_connect)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct conn c = { 0 };
	uint16_t port;
	int hold[2], lfd = full_listener(&port, hold), closed = 0;
	uint64_t t0;

	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &c, &c.s), 0);
	ck_assert_ptr_nonnull(c.s);
	ck_assert_int_eq(iou_write(c.s, "x", 1, NULL, NULL), -ENOTCONN);
	ck_assert_int_eq(iou_read(c.s, 1, rd_cb, NULL), -ENOTCONN);
	tsp_run_for(loop, 200);
	ck_assert_msg(c.calls == 0, "connect not pending: %d", c.res);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_close(c.s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(c.calls, 0);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.res, -ECANCELED);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
	close(hold[0]);
	close(hold[1]);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* The helper thread's look-up takes LOOKUP_MS; tests wait for it to end
 * (it frees what it holds) so that nothing is left running at exit. */
#define LOOKUP_MS 1000

static void lookup_wait_end(uint64_t t0)
{
	iou__resolve_delay_ms = 0;
	while (t_now_ms() - t0 < LOOKUP_MS + 300)
		usleep(10000);
}

/* A look-up that takes long neither keeps the loop running once the
 * stream is closed nor delays the close. */
START_TEST(test_close_cancels_lookup)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct conn c = { 0 };
	int closed = 0;
	uint64_t t0 = t_now_ms();

	iou__resolve_delay_ms = LOOKUP_MS;
	ck_assert_int_eq(iou_tcp_connect(loop, "localhost", 9, NULL, conn_cb,
					 &c, &c.s), 0);
	tsp_run_for(loop, 50);
	ck_assert_int_eq(c.calls, 0);
	ck_assert_int_eq(iou_close(c.s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0); /* returns: no work left */
	ck_assert_int_eq(closed, 1);
	ck_assert_int_eq(c.res, -ECANCELED);
	ck_assert_uint_lt(t_now_ms() - t0, LOOKUP_MS / 2);
	lookup_wait_end(t0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* The connect deadline covers a slow look-up. */
START_TEST(test_connect_deadline_during_lookup)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_connect_opts co;
	struct conn c = { 0 };
	uint64_t t0 = t_now_ms();

	iou__resolve_delay_ms = LOOKUP_MS;
	iou_connect_opts_init(&co);
	co.timeout_ms = 100;
	ck_assert_int_eq(iou_tcp_connect(loop, "localhost", 9, &co, conn_cb, &c,
					 &c.s), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.res, -ETIMEDOUT);
	ck_assert_uint_lt(t_now_ms() - t0, LOOKUP_MS / 2);
	lookup_wait_end(t0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A failed connect's stream may be closed from its callback (the close
 * callback then runs); otherwise it goes by itself. */
START_TEST(test_failed_connect_close_in_cb)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct conn c = { .close_in_cb = 1 }, c2 = { 0 };
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);

	close(lfd); /* refused from now on */
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &c, &c.s), 0);
	ck_assert_int_eq(t_run_until(loop, &c.closed, 2000), 0);
	ck_assert_int_eq(c.res, -ECONNREFUSED);
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &c2, &c2.s), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(c2.res, -ECONNREFUSED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A proxy shut down while its upstream connect is pending: the grace limit
 * cuts the client side, the application closes both, the upstream connect
 * reports -ECANCELED, and the server finishes after both close callbacks
 * (ASan: nothing used after free). */
struct proxy {
	iou_loop *loop;
	iou_server *srv;
	iou_stream *down, *up;
	uint16_t up_port;
	int up_calls, up_res, closed, done;
};

static void proxy_up_cb(iou_stream *s, int res, void *ud)
{
	struct proxy *p = ud;

	ck_assert_ptr_eq(s, p->up);
	p->up_calls++;
	p->up_res = res;
}

static void proxy_conn(iou_server *srv, iou_stream *s,
		       const struct sockaddr *peer, void *ud)
{
	struct proxy *p = ud;

	(void)srv;
	(void)peer;
	p->down = s;
	ck_assert_int_eq(iou_tcp_connect(p->loop, "127.0.0.1", p->up_port, NULL,
					 proxy_up_cb, p, &p->up), 0);
}

static void proxy_cut(iou_server *srv, iou_stream *s, int err, void *ud)
{
	struct proxy *p = ud;

	(void)srv;
	ck_assert_int_eq(err, -ECONNABORTED);
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &p->closed), 0);
	ck_assert_int_eq(iou_close(p->up, tsp_count_close_cb, &p->closed), 0);
}

static void proxy_done(iou_server *srv, uint64_t finished, uint64_t cut,
		       void *ud)
{
	struct proxy *p = ud;

	(void)srv;
	(void)finished;
	ck_assert_uint_eq(cut, 1);
	ck_assert_int_ge(p->closed, 1); /* the server's connection: closed */
	p->done++;
}

START_TEST(test_proxy_shutdown_with_pending_connect)
{
	struct proxy p = { 0 };
	struct iou_server_opts o;
	int hold[2], lfd, fd;

	p.loop = t_loop_create_or_skip(NULL);
	lfd = full_listener(&p.up_port, hold);
	iou_server_opts_init(&o);
	o.on_cut = proxy_cut;
	ck_assert_int_eq(iou_server_start(p.loop, &o, proxy_conn, &p, &p.srv), 0);
	fd = t_connect_loopback(iou_server_port(p.srv));
	while (!p.up)
		ck_assert_int_ge(tsp_turn(p.loop), 0);
	tsp_run_for(p.loop, 50);
	ck_assert_int_eq(p.up_calls, 0); /* upstream still connecting */
	ck_assert_int_eq(iou_server_shutdown(p.srv, 50, proxy_done, &p), 0);
	ck_assert_int_eq(t_run_until(p.loop, &p.done, 3000), 0);
	ck_assert_int_eq(t_loop_drain(p.loop, 3000), 0);
	ck_assert_int_eq(p.closed, 2);
	ck_assert_int_eq(p.up_calls, 1);
	ck_assert_int_eq(p.up_res, -ECANCELED);
	close(fd);
	close(hold[0]);
	close(hold[1]);
	close(lfd);
	t_loop_destroy(p.loop);
}
END_TEST


/* ==== review tests ======================================================== */

struct rv_done {
	int done;
	uint64_t finished, cut;
	struct iou_server_stats st;
};

static void rv_on_done(iou_server *srv, uint64_t finished, uint64_t cut,
		       void *ud)
{
	struct rv_done *d = ud;

	(void)srv;
	d->done++;
	d->finished = finished;
	d->cut = cut;
}

/* One connection in iou_close_graceful() whose close deadline and the
 * server's grace limit come due in the same turn (close deadline first):
 * the server counts it as cut AND as finished. */
START_TEST(test_rv_grace_and_close_deadline_same_turn)
{
	struct app a = { 0 };
	struct rv_done d = { 0 };
	int fd;

	app_start(&a, 0);
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_ge(iou_loop_run_once(a.loop, 0), 0); /* fresh clock */
	/* the peer never sends its FIN: the close lingers until its deadline */
	ck_assert_int_eq(iou_close_graceful(a.conn, 10, on_closed, &a), 0);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 50, rv_on_done, &d), 0);
	usleep(100 * 1000); /* both deadlines pass before the next turn */
	ck_assert_int_eq(t_run_until(a.loop, &d.done, 2000), 0);
	ck_assert_int_eq(a.closed, 1);
	ck_assert_msg(d.finished + d.cut == 1,
		      "1 connection, but finished %llu + cut %llu",
		      (unsigned long long)d.finished, (unsigned long long)d.cut);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST

/* A graceful close whose queued write hits the stream's write timeout:
 * the bytes that never went out must not pass for a complete answer at the
 * peer (a reset, as with the close deadline), not a FIN after the
 * truncated data. */
START_TEST(test_rv_graceful_write_timeout_truncates_cleanly)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts o;
	struct wr w = { 0 };
	size_t len = 8 * MiB, got = 0;
	unsigned char *big = malloc(len);
	char buf[65536];
	int closed = 0, fd, small = 4096;
	iou_stream *s;
	ssize_t n;

	ck_assert_ptr_nonnull(big);
	memset(big, 'w', len);
	iou_stream_opts_init(&o);
	o.sndbuf = 4096;
	fd = tsp_open_pair(loop, &o, &s);
	tsp_set_timeouts(fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_int_eq(iou_stream_set_write_timeout(s, 100), 0);
	ck_assert_int_eq(iou_write_all(s, big, len, wr_cb, &w), 0);
	ck_assert_int_eq(iou_close_graceful(s, 0, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(t_run_until(loop, &w.calls, 3000), 0);
	ck_assert_int_eq(w.res, -ETIMEDOUT);
	tsp_run_for(loop, 50);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	ck_assert_msg(!(n == 0 && got < len),
		      "peer: clean end of file after %zu of %zu bytes", got, len);
	shutdown(fd, SHUT_WR);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	close(fd);
	free(big);
	t_loop_destroy(loop);
}
END_TEST


/* A forward whose target does not send holds the only receive buffer of a
 * one-buffer pool, so a connection in iou_close_graceful(timeout 0) that
 * receives a byte after its FIN waits for a buffer (starved).  The grace
 * limit cuts it: it must still close (close callback, then done). */
struct rv_fwd {
	iou_stream *to;
	int calls;
	ssize_t res;
};

static void rv_fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct rv_fwd *f = ud;

	f->calls++;
	f->res = res;
	if (res > 0)
		iou_forward(s, f->to, 1 * MiB, rv_fwd_cb, f);
}

START_TEST(test_rv_grace_cuts_starved_flushing_stream)
{
	struct iou_loop_opts lo;
	struct iou_stream_opts so;
	struct iou_server_opts o;
	struct app a = { 0 };
	struct rv_done d = { 0 };
	struct rv_fwd f = { 0 };
	struct tsp_peer p = { 0 };
	iou_stream *A, *B;
	int fa, fb, fd, small = 4096;

	iou_loop_opts_init(&lo);
	lo.buf_count = 1;
	a.loop = t_loop_create_or_skip(&lo);
	iou_server_opts_init(&o);
	o.on_cut = on_cut;
	ck_assert_int_eq(iou_server_start(a.loop, &o, on_conn, &a, &a.srv), 0);
	/* a connection closed gracefully, no deadline of its own: after its
	 * FIN it lingers (reads and discards until the peer's end) */
	fd = t_connect_loopback(iou_server_port(a.srv));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_eq(iou_close_graceful(a.conn, 0, on_closed, &a), 0);
	tsp_run_for(a.loop, 50);
	ck_assert_int_eq(a.closed, 0);
	/* A -> B, B's peer never reads: the forward holds the pool's buffer */
	iou_stream_opts_init(&so);
	so.sndbuf = 4096;
	fa = tsp_open_pair(a.loop, NULL, &A);
	fb = tsp_open_pair(a.loop, &so, &B);
	setsockopt(fb, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	f.to = B;
	ck_assert_int_eq(iou_forward(A, B, 1 * MiB, rv_fwd_cb, &f), 0);
	tsp_send_start(&p, fa, 1, 4 * MiB, 0, 0, TSP_KEEP);
	for (int i = 0; i < 200 && a.loop->bufs.fwd_held < 1; i++)
		tsp_run_for(a.loop, 10);
	tsp_run_for(a.loop, 100);
	ck_assert_uint_eq(a.loop->bufs.fwd_held, 1);
	/* the lingering read finds no buffer */
	ck_assert_int_eq(send(fd, "x", 1, 0), 1);
	tsp_run_for(a.loop, 50);
	ck_assert_int_eq(a.closed, 0);
	ck_assert_msg(a.conn->flags & IOU__S_STARVED, "not starved: %#x",
		      a.conn->flags);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 50, rv_on_done, &d), 0);
	tsp_run_for(a.loop, 300);
	/* the forward lets go of the buffer: nothing is starved any more */
	tsp_close_and_wait(a.loop, A);
	tsp_close_and_wait(a.loop, B);
	tsp_join(&p, 100);
	ck_assert_msg(t_run_until(a.loop, &a.closed, 2000) == 0,
		      "cut while starved in iou_close_graceful: never closed");
	ck_assert_int_eq(t_run_until(a.loop, &d.done, 2000), 0);
	close(fa);
	close(fb);
	close(fd);
	t_loop_destroy(a.loop);
}
END_TEST


/* ---- probes expected to pass -------------------------------------------- */

struct rv_order {
	int n;
	char seq[16];
};

static void rv_ord_read(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	struct rv_order *o = ud;

	(void)s; (void)d;
	ck_assert_int_eq(res, -ECANCELED);
	o->seq[o->n++] = 'r';
}

static void rv_ord_close(iou_stream *s, void *ud)
{
	struct rv_order *o = ud;

	(void)s;
	o->seq[o->n++] = 'c';
}

START_TEST(test_rv_read_cancel_then_close)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rv_order o = { 0 };
	iou_stream *s;
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_read(s, 16, rv_ord_read, &o), 0);
	ck_assert_int_eq(iou_read_cancel(s), 0);
	ck_assert_int_eq(iou_close(s, rv_ord_close, &o), 0);
	ck_assert_int_eq(o.n, 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	ck_assert_str_eq(o.seq, "rc");
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

static void rv_fwd_only(iou_stream *s, ssize_t res, void *ud)
{
	struct rv_fwd *f = ud;

	(void)s;
	f->calls++;
	f->res = res;
}

/* A forward's bytes stall on a target with a write timeout. */
START_TEST(test_rv_forward_write_timeout)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts so;
	struct rv_fwd f = { 0 };
	struct tsp_peer p = { 0 };
	iou_stream *A, *B;
	int fa, fb, small = 4096;

	iou_stream_opts_init(&so);
	so.sndbuf = 4096;
	fa = tsp_open_pair(loop, NULL, &A);
	fb = tsp_open_pair(loop, &so, &B);
	setsockopt(fb, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_int_eq(iou_stream_set_write_timeout(B, 100), 0);
	tsp_send_start(&p, fa, 1, 256 * KiB, 0, 0, TSP_KEEP);
	usleep(50000);
	ck_assert_int_eq(iou_forward(A, B, 1 * MiB, rv_fwd_only, &f), 0);
	ck_assert_int_eq(t_run_until(loop, &f.calls, 3000), 0);
	ck_assert_int_eq(f.res, -ETIMEDOUT);
	ck_assert_uint_eq(iou_write_queued(B), 0);
	ck_assert_uint_eq(loop->bufs.fwd_held, 0);
	tsp_close_and_wait(loop, A);
	tsp_close_and_wait(loop, B);
	tsp_join(&p, 100);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* A forward cancelled before its target closed (in the same turn) reports
 * the cancel, not the target's close.  Failed before: -IOU_ECLOSED (found
 * by fuzz_epoll). */
START_TEST(test_cancelled_forward_then_target_closed)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rv_fwd f = { 0 };
	iou_stream *a, *b;
	int fa = tsp_open_pair(loop, NULL, &a);
	int fb = tsp_open_pair(loop, NULL, &b);
	int closed = 0;

	/* b has work at the end of the turn before a has (its close fails
	 * the forwards into it first) */
	ck_assert_int_eq(iou_write(b, "x", 1, NULL, NULL), 0);
	ck_assert_int_eq(iou_forward(a, b, 4096, rv_fwd_only, &f), 0);
	ck_assert_int_eq(iou_read_cancel(a), 0);
	ck_assert_int_eq(iou_close(b, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(t_run_until(loop, &f.calls, 2000), 0);
	ck_assert_int_eq(f.res, -ECANCELED);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	tsp_close_and_wait(loop, a);
	ck_assert_int_eq(f.calls, 1);
	close(fa);
	close(fb);
	t_loop_destroy(loop);
}
END_TEST

/* The close callback of one stream closes a stream still connecting. */
struct rv_cc {
	iou_stream *up;
	struct conn c;
	int closed;
};

static void rv_cc_close(iou_stream *s, void *ud)
{
	struct rv_cc *r = ud;

	(void)s;
	r->closed++;
	ck_assert_int_eq(iou_close(r->up, tsp_count_close_cb, &r->closed), 0);
}

START_TEST(test_rv_close_connecting_from_close_cb)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rv_cc r = { 0 };
	iou_stream *s;
	uint16_t port;
	int hold[2], lfd = full_listener(&port, hold);
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, conn_cb,
					 &r.c, &r.c.s), 0);
	r.up = r.c.s;
	tsp_run_for(loop, 50);
	ck_assert_int_eq(iou_close(s, rv_cc_close, &r), 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	ck_assert_int_eq(r.closed, 2);
	ck_assert_int_eq(r.c.calls, 1);
	ck_assert_int_eq(r.c.res, -ECANCELED);
	close(fd);
	close(hold[0]);
	close(hold[1]);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* Connect deadline and iou_close in the same turn: one callback. */
START_TEST(test_rv_connect_deadline_and_close)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_connect_opts co;
	struct conn c = { 0 };
	uint16_t port;
	int hold[2], lfd = full_listener(&port, hold), closed = 0;

	iou_connect_opts_init(&co);
	co.timeout_ms = 20;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, &co, conn_cb,
					 &c, &c.s), 0);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
	usleep(50000);
	ck_assert_int_eq(iou_close(c.s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	ck_assert_int_eq(closed, 1);
	ck_assert_int_eq(c.calls, 1);
	close(hold[0]);
	close(hold[1]);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* Cut during a flush with writes queued and no close deadline. */
START_TEST(test_rv_cut_during_flush)
{
	struct app a = { 0 };
	struct rv_done d = { 0 };
	int fd, small = 4096;

	a.big_len = 8 * MiB;
	a.big = malloc(a.big_len);
	ck_assert_ptr_nonnull(a.big);
	memset(a.big, 'd', a.big_len);
	app_start(&a, 0);
	fd = t_connect_loopback(iou_server_port(a.srv));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_int_eq(t_run_until(a.loop, &a.conns, 2000), 0);
	ck_assert_int_eq(iou_close_graceful(a.conn, 0, on_closed, &a), 0);
	tsp_run_for(a.loop, 50);
	ck_assert_int_eq(iou_server_shutdown(a.srv, 50, rv_on_done, &d), 0);
	ck_assert_int_eq(t_run_until(a.loop, &d.done, 2000), 0);
	ck_assert_int_eq(a.closed, 1);
	ck_assert_int_eq(a.write_calls, 1);
	ck_assert_int_eq(a.write_res, -ECONNABORTED);
	ck_assert_int_eq(a.cuts, 0);
	ck_assert_uint_eq(d.cut, 1);
	ck_assert_uint_eq(d.finished, 0);
	close(fd);
	free(a.big);
	t_loop_destroy(a.loop);
}
END_TEST


/* iou_close_graceful() while the pool's only buffer is held by a stalled
 * forward: the lingering read finds no buffer at once (-ENOBUFS), and the
 * close goes ahead without waiting for the peer's end of file. */
START_TEST(test_rv_graceful_starved_skips_linger)
{
	struct iou_loop_opts lo;
	struct iou_stream_opts so;
	struct rv_fwd f = { 0 };
	struct tsp_peer p = { 0 };
	iou_loop *loop;
	iou_stream *A, *B, *s;
	int fa, fb, fd, small = 4096, closed = 0;

	iou_loop_opts_init(&lo);
	lo.buf_count = 1;
	loop = t_loop_create_or_skip(&lo);
	iou_stream_opts_init(&so);
	so.sndbuf = 4096;
	fa = tsp_open_pair(loop, NULL, &A);
	fb = tsp_open_pair(loop, &so, &B);
	fd = tsp_open_pair(loop, NULL, &s);
	setsockopt(fb, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	f.to = B;
	ck_assert_int_eq(iou_forward(A, B, 1 * MiB, rv_fwd_cb, &f), 0);
	tsp_send_start(&p, fa, 1, 4 * MiB, 0, 0, TSP_KEEP);
	for (int i = 0; i < 200 && loop->bufs.fwd_held < 1; i++)
		tsp_run_for(loop, 10);
	tsp_run_for(loop, 100);
	ck_assert_uint_eq(loop->bufs.fwd_held, 1);
	ck_assert_int_eq(iou_close_graceful(s, 0, tsp_count_close_cb, &closed), 0);
	tsp_run_for(loop, 200);
	ck_assert_msg(closed == 0,
		      "closed without the peer's end of file (no linger)");
	shutdown(fd, SHUT_WR);
	tsp_close_and_wait(loop, A);
	tsp_close_and_wait(loop, B);
	tsp_join(&p, 100);
	ck_assert_int_eq(t_run_until(loop, &closed, 2000), 0);
	close(fa);
	close(fb);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST


/* Inside the callback of a failed connect the stream is not connected:
 * writes and reads should say so (-ENOTCONN), not succeed and fail
 * later with -ECANCELED. */
struct rv_fc {
	int calls, res, wret, rret, wcalls;
	ssize_t wres;
};

static void rv_fc_write(iou_stream *s, ssize_t res, void *ud)
{
	struct rv_fc *f = ud;

	(void)s;
	f->wcalls++;
	f->wres = res;
}

static void rv_fc_read(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	(void)s; (void)res; (void)d; (void)ud;
}

static void rv_fc_cb(iou_stream *s, int res, void *ud)
{
	struct rv_fc *f = ud;

	f->calls++;
	f->res = res;
	f->wret = iou_write(s, "x", 1, rv_fc_write, f);
	f->rret = iou_read(s, 1, rv_fc_read, f);
}

START_TEST(test_rv_io_in_failed_connect_cb)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rv_fc f = { 0 };
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);

	close(lfd);
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL, rv_fc_cb,
					 &f, NULL), 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	ck_assert_int_eq(f.res, -ECONNREFUSED);
	ck_assert_msg(f.wret == -ENOTCONN && f.rret == -ENOTCONN,
		      "write %s, read %s; the write's callback later got %zd",
		      iou_strerror(f.wret), iou_strerror(f.rret), f.wres);
	t_loop_destroy(loop);
}
END_TEST


/* A proxy: down -> up forwarding stalls on up (its peer does not read,
 * up has a write timeout), up -> down waits for bytes; the server's grace
 * limit cuts down at about the same time as up's write timeout; on_cut
 * closes both.  Every callback once, close callbacks, then done. */
struct rv_px {
	iou_loop *loop;
	iou_server *srv;
	iou_stream *down, *up;
	int dn_calls, up_calls, dn_after_close, closed, done, cuts;
	ssize_t dn_res, up_res;
	int dn_closed_flag;
};

static void rv_px_dn(iou_stream *s, ssize_t res, void *ud)
{
	struct rv_px *x = ud;

	x->dn_calls++;
	x->dn_res = res;
	if (res > 0)
		iou_forward(s, x->up, 1 * MiB, rv_px_dn, x);
}

static void rv_px_up(iou_stream *s, ssize_t res, void *ud)
{
	struct rv_px *x = ud;

	(void)s;
	x->up_calls++;
	x->up_res = res;
}

static void rv_px_conn(iou_server *srv, iou_stream *s,
		       const struct sockaddr *peer, void *ud)
{
	struct rv_px *x = ud;

	(void)srv; (void)peer;
	x->down = s;
	ck_assert_int_eq(iou_forward(s, x->up, 1 * MiB, rv_px_dn, x), 0);
	ck_assert_int_eq(iou_forward(x->up, s, 1 * MiB, rv_px_up, x), 0);
}

static void rv_px_cut(iou_server *srv, iou_stream *s, int err, void *ud)
{
	struct rv_px *x = ud;

	(void)srv; (void)err;
	x->cuts++;
	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &x->closed), 0);
	ck_assert_int_eq(iou_close(x->up, tsp_count_close_cb, &x->closed), 0);
}

static void rv_px_done(iou_server *srv, uint64_t f, uint64_t c, void *ud)
{
	struct rv_px *x = ud;

	(void)srv; (void)f; (void)c;
	x->done++;
}

START_TEST(test_rv_proxy_cut_and_write_timeout)
{
	struct rv_px x = { 0 };
	struct iou_server_opts o;
	struct iou_stream_opts so;
	struct tsp_peer p = { 0 };
	int fu, cfd, small = 4096;

	x.loop = t_loop_create_or_skip(NULL);
	iou_stream_opts_init(&so);
	so.sndbuf = 4096;
	fu = tsp_open_pair(x.loop, &so, &x.up);
	setsockopt(fu, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_int_eq(iou_stream_set_write_timeout(x.up, 100), 0);
	iou_server_opts_init(&o);
	o.on_cut = rv_px_cut;
	ck_assert_int_eq(iou_server_start(x.loop, &o, rv_px_conn, &x, &x.srv), 0);
	cfd = t_connect_loopback(iou_server_port(x.srv));
	tsp_send_start(&p, cfd, 1, 2 * MiB, 0, 0, TSP_KEEP);
	while (!x.down)
		ck_assert_int_ge(tsp_turn(x.loop), 0);
	ck_assert_int_ge(iou_loop_run_once(x.loop, 0), 0);
	ck_assert_int_eq(iou_server_shutdown(x.srv, 100, rv_px_done, &x), 0);
	ck_assert_int_eq(t_run_until(x.loop, &x.done, 3000), 0);
	ck_assert_int_eq(t_loop_drain(x.loop, 2000), 0);
	ck_assert_int_eq(x.closed, 2);
	ck_assert_int_eq(x.up_calls, 1);
	ck_assert_int_ge(x.dn_calls, 1);
	ck_assert_int_lt(x.dn_res, 0);
	tsp_join(&p, 100);
	close(fu);
	close(cfd);
	t_loop_destroy(x.loop);
}
END_TEST


/* Calls on a closing stream return IOU_ECLOSED; setting a timeout from
 * the close callback returned 0 and left the freed stream's timer in the
 * loop's heap. */
static void rv_tmo_close(iou_stream *s, void *ud)
{
	int *ret = ud;

	*ret = iou_stream_set_read_timeout(s, 100);
}

static void rv_timer_cb(iou_timer *t, void *ud)
{
	(void)t;
	(*(int *)ud)++;
}

START_TEST(test_rv_timeout_set_in_close_cb)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	iou_stream *s;
	iou_timer *t;
	int fd = tsp_open_pair(loop, NULL, &s), ret = 1, fired = 0;

	ck_assert_int_eq(iou_close(s, rv_tmo_close, &ret), 0);
	ck_assert_int_eq(t_loop_drain(loop, 2000), 0);
	/* the heap moves its entries: a freed one is read */
	ck_assert_int_eq(iou_timer_start(loop, 1, 0, rv_timer_cb, &fired, &t), 0);
	ck_assert_int_eq(t_run_until(loop, &fired, 2000), 0);
	ck_assert_int_eq(ret, -IOU_ECLOSED);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

static TCase *review_tcase(void)
{
	TCase *tc = tcase_create("review");

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_rv_grace_and_close_deadline_same_turn);
	tcase_add_test(tc, test_rv_graceful_write_timeout_truncates_cleanly);
	tcase_add_test(tc, test_rv_grace_cuts_starved_flushing_stream);
	tcase_add_test(tc, test_rv_read_cancel_then_close);
	tcase_add_test(tc, test_rv_forward_write_timeout);
	tcase_add_test(tc, test_cancelled_forward_then_target_closed);
	tcase_add_test(tc, test_rv_close_connecting_from_close_cb);
	tcase_add_test(tc, test_rv_connect_deadline_and_close);
	tcase_add_test(tc, test_rv_cut_during_flush);
	tcase_add_test(tc, test_rv_graceful_starved_skips_linger);
	tcase_add_test(tc, test_rv_io_in_failed_connect_cb);
	tcase_add_test(tc, test_rv_proxy_cut_and_write_timeout);
	tcase_add_test(tc, test_rv_timeout_set_in_close_cb);
	return tc;
}

static Suite *lifetime_suite(void)
{
	Suite *s = suite_create("lifetime");
	TCase *tc;

	tc = tcase_create("server cut");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_idle_cut_keeps_stream);
	tcase_add_test(tc, test_idle_cut_fails_pending_read);
	tcase_add_test(tc, test_grace_cut_then_done_after_close);
	tcase_add_test(tc, test_done_after_close_in_grace);
	tcase_add_test(tc, test_shutdown_refuses_at_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("idle and sending");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_idle_counts_sending);
	tcase_add_test(tc, test_idle_cut_resets_with_bytes_left);
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel and deadlines");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_read_cancel_keeps_bytes);
	tcase_add_test(tc, test_read_before_close_cancelled);
	tcase_add_test(tc, test_read_timeout_loses_nothing);
	tcase_add_test(tc, test_forward_read_timeout);
	tcase_add_test(tc, test_write_timeout_and_queued);
	tcase_add_test(tc, test_write_queued_drains);
	suite_add_tcase(s, tc);

	tc = tcase_create("close that flushes");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_close_graceful_sends_everything);
	tcase_add_test(tc, test_close_graceful_lingers_until_peer_eof);
	tcase_add_test(tc, test_close_graceful_deadline);
	tcase_add_test(tc, test_close_graceful_cancels_read);
	tcase_add_test(tc, test_close_graceful_read_not_served_by_eof);
	tcase_add_test(tc, test_cancelled_read_past_deadline);
	tcase_add_test(tc, test_shutdown_wr_sends_fed_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("connect");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_close_cancels_pending_connect);
	tcase_add_test(tc, test_close_cancels_lookup);
	tcase_add_test(tc, test_connect_deadline_during_lookup);
	tcase_add_test(tc, test_failed_connect_close_in_cb);
	tcase_add_test(tc, test_proxy_shutdown_with_pending_connect);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, review_tcase());
	return s;
}

int main(void)
{
	return t_run_suite(lifetime_suite());
}
