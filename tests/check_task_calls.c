/* SPDX-License-Identifier: MIT */
/*
 * check_task_calls: every blocking call of tasks against every way it can
 * end, over real TCP connections on loopback: the happy path, its deadline
 * (-ETIMEDOUT, and no received byte lost), the peer's close, the peer's
 * reset (SO_LINGER 0), a cancel (-ECANCELED at once, and for later calls),
 * outside a task (-EPERM) and bad arguments (-EINVAL).  Each scenario is a
 * loop test over the calls it applies to; the ones it does not apply to
 * are named, with the reason, above it.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

enum op {
	OP_READ, OP_READ_EXACTLY, OP_PEEK, OP_READ_UNTIL, OP_WRITE,
	OP_WRITE_ALL, OP_DRAIN, OP_FORWARD, OP_CONNECT, OP_CLOSE, OP_SLEEP,
	OP_YIELD, OP_JOIN, OP_COUNT
};

static const char *const op_name[OP_COUNT] = {
	"read", "read_exactly", "peek", "read_until", "write", "write_all",
	"drain", "forward", "connect", "close", "sleep", "yield", "join",
};

/* More than any socket buffer takes: a write of it blocks while the peer
 * does not read. */
#define BIG (8u << 20)
static unsigned char big[BIG];

struct ctx {
	iou_loop *loop;
	int op, op2;            /* the first call, the second (default: op) */
	iou_stream *s, *s2;     /* the call's stream; a forward's target */
	int fd, fd2;            /* their peers */
	int lfd;                /* connect's listener */
	uint16_t port;
	iou_stream *cs;         /* what connect got */
	iou_task *other;        /* join's target */
	const void *wbuf;
	size_t wlen;
	unsigned sleep_ms;
	int t[2];               /* deadlines of the two calls */
	int calls;              /* 1 (default) or 2 */
	int gate;               /* wait for `go` between the calls */
	volatile int go;
	ssize_t r[2];
	char b[2][64];
	uint64_t took[2];
	int started, first, done;
};

static ssize_t call(struct ctx *c, int op, char *buf, int timeout)
{
	ssize_t r;

	switch (op) {
	case OP_READ:
		return iou_task_read(c->s, buf, 64, timeout);
	case OP_READ_EXACTLY:
		return iou_task_read_exactly(c->s, buf, 6, timeout);
	case OP_PEEK:
		return iou_task_peek(c->s, buf, 6, timeout);
	case OP_READ_UNTIL:
		return iou_task_read_until(c->s, buf, 64, "\n", 1, timeout);
	case OP_WRITE:
		return iou_task_write(c->s, c->wbuf, c->wlen, timeout);
	case OP_WRITE_ALL:
		return iou_task_write_all(c->s, c->wbuf, c->wlen, timeout);
	case OP_DRAIN:
		r = iou_feed(c->s, c->wbuf, c->wlen);
		return r < 0 ? r : iou_task_drain(c->s, timeout);
	case OP_FORWARD:
		return iou_task_forward(c->s, c->s2, 64, timeout);
	case OP_CONNECT:
		return iou_task_connect("127.0.0.1", c->port, NULL, timeout,
					&c->cs);
	case OP_CLOSE:
		r = iou_task_close(c->s, timeout);
		if (r == 0)
			c->s = NULL;
		return r;
	case OP_SLEEP:
		return iou_task_sleep(c->sleep_ms);
	case OP_YIELD:
		return iou_task_yield();
	case OP_JOIN:
		r = iou_task_join(c->other);
		if (r == 0)
			c->other = NULL;
		return r;
	}
	return -1;
}

static void call_main(void *arg)
{
	struct ctx *c = arg;

	c->started = 1;
	for (int i = 0; i < c->calls; i++) {
		uint64_t t0 = t_now_ms();

		c->r[i] = call(c, i ? c->op2 : c->op, c->b[i], c->t[i]);
		c->took[i] = t_now_ms() - t0;
		if (i == 0) {
			c->first = 1;
			while (c->gate && !c->go)
				ck_assert_int_eq(iou_task_sleep(2), 0);
		}
	}
	c->done = 1;
}

static void sleep_main(void *arg)
{
	iou_task_sleep(*(unsigned *)arg);
}

/* A loop, a stream and its peer, and what the op needs besides. */
static void setup(struct ctx *c, int op)
{
	memset(c, 0, sizeof(*c));
	c->loop = t_loop_create_or_skip(NULL);
	c->op = c->op2 = op;
	c->calls = 1;
	c->t[0] = c->t[1] = 3000;
	c->fd = tsp_open_pair(c->loop, NULL, &c->s);
	c->fd2 = c->lfd = -1;
	tsp_set_timeouts(c->fd);
	c->wbuf = "hello\n";
	c->wlen = 6;
	c->sleep_ms = 20;
	if (op == OP_FORWARD) {
		c->fd2 = tsp_open_pair(c->loop, NULL, &c->s2);
		tsp_set_timeouts(c->fd2);
	}
	if (op == OP_CONNECT) {
		c->lfd = t_listen_ephemeral(&c->port);
		ck_assert_int_eq(fcntl(c->lfd, F_SETFL, O_NONBLOCK), 0);
	}
}

/* Run until the task's calls returned; the failure names the call. */
static void run_until_done(struct ctx *c, int timeout_ms)
{
	ck_assert_msg(t_run_until(c->loop, &c->done, timeout_ms) == 0,
		      "%s: still blocked after %d ms (first call %s)",
		      op_name[c->op], timeout_ms,
		      c->first ? "returned" : "blocked");
}

static void spawn(struct ctx *c, iou_task **out)
{
	ck_assert_int_eq(iou_task_spawn(c->loop, call_main, c, NULL, out), 0);
}

static void teardown(struct ctx *c)
{
	if (c->other) {
		iou_task_cancel(c->other);
		ck_assert_int_eq(iou_task_detach(c->other), 0);
	}
	if (c->s)
		tsp_close_and_wait(c->loop, c->s);
	if (c->s2)
		tsp_close_and_wait(c->loop, c->s2);
	if (c->cs)
		tsp_close_and_wait(c->loop, c->cs);
	t_loop_destroy(c->loop);
	if (c->fd >= 0)
		close(c->fd);
	if (c->fd2 >= 0)
		close(c->fd2);
	if (c->lfd >= 0)
		close(c->lfd);
}

/* recv exactly n bytes from fd (blocking, bounded by its SO_RCVTIMEO). */
static void peer_expect(int fd, const char *want, size_t n)
{
	char buf[64];
	size_t got = 0;

	while (got < n) {
		ssize_t k = recv(fd, buf + got, n - got, 0);

		ck_assert_msg(k > 0, "peer recv: %zd (errno %d)", k, errno);
		got += (size_t)k;
	}
	ck_assert_mem_eq(buf, want, n);
}

/* Let the socket of s take little, and its peer little, so that a big
 * write blocks soon. */
static void small_buffers(struct ctx *c)
{
	int v = 4096;

	ck_assert_int_eq(setsockopt(iou_stream_fd(c->s), SOL_SOCKET, SO_SNDBUF,
				    &v, sizeof(v)), 0);
	ck_assert_int_eq(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &v,
				    sizeof(v)), 0);
	c->wbuf = big;
	c->wlen = BIG;
}

/* A listener whose accept queue is full: a SYN to it is dropped, a
 * connect hangs until its deadline.  Returns the fillers to close. */
static void listener_full(struct ctx *c, int fill[2])
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(c->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	close(c->lfd);
	c->lfd = t_listen_ephemeral(&c->port);
	sa.sin_port = htons(c->port);
	ck_assert_int_eq(listen(c->lfd, 0), 0);
	for (int i = 0; i < 2; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		ck_assert_int_ge(fill[i], 0);
		connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	usleep(20000);
}

/* ---- happy path: every call ------------------------------------------- */

START_TEST(test_happy_path)
{
	struct ctx c;
	int op = _i, afd;

	setup(&c, op);
	switch (op) {
	case OP_READ: case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
	case OP_FORWARD:
		ck_assert_int_eq(send(c.fd, "hello\nworld", 11, 0), 11);
		tsp_run_for(c.loop, 10); /* all 11 buffered: read takes all */
		break;
	case OP_JOIN:
		ck_assert_int_eq(iou_task_spawn(c.loop, sleep_main, &c.sleep_ms,
						NULL, &c.other), 0);
		break;
	}
	spawn(&c, NULL);
	if (op == OP_CLOSE) {
		/* the FIN comes; the close waits for ours */
		uint64_t end = t_now_ms() + 3000;

		while (recv(c.fd, c.b[1], 1, MSG_DONTWAIT) != 0 &&
		       t_now_ms() < end)
			ck_assert_int_ge(tsp_turn(c.loop), 0);
		ck_assert_int_eq(c.done, 0);
		ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
	}
	run_until_done(&c, 3000);
	switch (op) {
	case OP_READ:
		ck_assert_int_eq(c.r[0], 11);
		ck_assert_mem_eq(c.b[0], "hello\nworld", 11);
		break;
	case OP_READ_EXACTLY: case OP_READ_UNTIL:
		ck_assert_int_eq(c.r[0], 6);
		ck_assert_mem_eq(c.b[0], "hello\n", 6);
		ck_assert_uint_eq(iou_buffered(c.s), 5);
		break;
	case OP_PEEK:
		ck_assert_int_eq(c.r[0], 6);
		ck_assert_mem_eq(c.b[0], "hello\n", 6);
		ck_assert_uint_eq(iou_buffered(c.s), 11);
		break;
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN:
		ck_assert_int_eq(c.r[0], 6);
		peer_expect(c.fd, "hello\n", 6);
		break;
	case OP_FORWARD:
		ck_assert_int_eq(c.r[0], 11);
		peer_expect(c.fd2, "hello\nworld", 11);
		break;
	case OP_CONNECT:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_ptr_nonnull(c.cs);
		afd = accept(c.lfd, NULL, NULL);
		ck_assert_int_ge(afd, 0);
		close(afd);
		break;
	case OP_CLOSE:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_ptr_null(c.s);
		ck_assert_uint_lt(c.took[0], 2500); /* not the deadline */
		break;
	case OP_SLEEP:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_uint_ge(c.took[0], 15);
		break;
	case OP_YIELD:
		ck_assert_int_eq(c.r[0], 0);
		break;
	case OP_JOIN:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_ptr_null(c.other);
		break;
	}
	teardown(&c);
}
END_TEST

/* ---- deadline ----------------------------------------------------------- */

/* Not here: sleep (its argument is the time), yield (never waits) and
 * join (no deadline: wait for a task with a timer and a cancel). */
static const int deadline_ops[] = {
	OP_READ, OP_READ_EXACTLY, OP_PEEK, OP_READ_UNTIL, OP_WRITE,
	OP_WRITE_ALL, OP_DRAIN, OP_FORWARD, OP_CONNECT, OP_CLOSE,
};

/* Reads and forwards: -ETIMEDOUT, and what came (half a line) is still
 * there for the next call, with the rest.  Writes: -ETIMEDOUT while the
 * peer does not read.  Connect: to a listener that drops the SYN.  Close:
 * the graceful close gives up at its deadline and resets, returning 0. */
START_TEST(test_deadline)
{
	struct ctx c;
	int op = deadline_ops[_i], fill[2] = { -1, -1 };
	char buf[4096];
	ssize_t n;

	setup(&c, op);
	c.t[0] = 60;
	switch (op) {
	case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
		ck_assert_int_eq(send(c.fd, "hel", 3, 0), 3);
		/* fallthrough */
	case OP_READ: case OP_FORWARD:
		c.calls = 2;
		c.gate = 1;
		break;
	case OP_WRITE:
		/* one send, queued behind bytes that cannot leave */
		small_buffers(&c);
		ck_assert_int_eq(iou_write_all(c.s, big, BIG, NULL, NULL), 0);
		c.wbuf = "hello\n";
		c.wlen = 6;
		break;
	case OP_WRITE_ALL: case OP_DRAIN:
		small_buffers(&c);
		break;
	case OP_CONNECT:
		listener_full(&c, fill);
		break;
	case OP_CLOSE:
		small_buffers(&c);
		ck_assert_int_eq(iou_write_all(c.s, big, BIG, NULL, NULL), 0);
		break;
	}
	spawn(&c, NULL);
	if (c.gate) {
		ck_assert_int_eq(t_run_until(c.loop, &c.first, 3000), 0);
		ck_assert_int_eq(c.r[0], -ETIMEDOUT);
		ck_assert_uint_ge(c.took[0], 55);
		ck_assert_int_eq(send(c.fd, op == OP_READ || op == OP_FORWARD ?
				      "hello\n" : "lo\n", op == OP_READ ||
				      op == OP_FORWARD ? 6 : 3, 0),
				 op == OP_READ || op == OP_FORWARD ? 6 : 3);
		c.go = 1;
	}
	run_until_done(&c, 5000);
	switch (op) {
	case OP_READ: case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
		ck_assert_int_eq(c.r[1], 6);
		ck_assert_mem_eq(c.b[1], "hello\n", 6);
		ck_assert_uint_eq(iou_buffered(c.s), op == OP_PEEK ? 6 : 0);
		break;
	case OP_FORWARD:
		ck_assert_int_eq(c.r[1], 6);
		peer_expect(c.fd2, "hello\n", 6);
		break;
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN: case OP_CONNECT:
		ck_assert_int_eq(c.r[0], -ETIMEDOUT);
		ck_assert_uint_ge(c.took[0], 55);
		ck_assert_uint_lt(c.took[0], 3000);
		break;
	case OP_CLOSE:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_uint_ge(c.took[0], 55);
		ck_assert_uint_lt(c.took[0], 3000);
		/* bytes were left unsent: the peer gets a reset, not an end */
		while ((n = recv(c.fd, buf, sizeof(buf), 0)) > 0)
			;
		ck_assert_int_eq(n, -1);
		ck_assert_int_eq(errno, ECONNRESET);
		break;
	}
	for (int i = 0; i < 2; i++)
		if (fill[i] >= 0)
			close(fill[i]);
	teardown(&c);
}
END_TEST

/* ---- the peer closes ---------------------------------------------------- */

/* Not here: sleep, yield, join (no peer).  Connect's "peer close" is a
 * closed listener: refused. */
static const int eof_ops[] = {
	OP_READ, OP_READ_EXACTLY, OP_PEEK, OP_READ_UNTIL, OP_WRITE,
	OP_WRITE_ALL, OP_DRAIN, OP_FORWARD, OP_CONNECT, OP_CLOSE,
};

/* Half a line, then the peer's FIN: read gets the half then 0; the
 * message reads get IOU_EINCOMPLETE and the half stays readable.  Writes
 * to a peer that closed: -EPIPE or -ECONNRESET (its kernel answers the
 * first bytes with a reset).  Forward: 0.  Close: at once. */
START_TEST(test_peer_close)
{
	struct ctx c;
	int op = eof_ops[_i];

	setup(&c, op);
	switch (op) {
	case OP_READ: case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
		ck_assert_int_eq(send(c.fd, "hel", 3, 0), 3);
		ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
		c.calls = 2;
		c.op2 = OP_READ;
		break;
	case OP_FORWARD:
		ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
		break;
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN:
		close(c.fd);
		c.fd = -1;
		tsp_run_for(c.loop, 10);
		c.calls = 2;
		c.gate = 1;
		break;
	case OP_CONNECT:
		close(c.lfd);
		c.lfd = -1;
		break;
	case OP_CLOSE:
		ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
		break;
	}
	spawn(&c, NULL);
	if (c.gate) {
		/* the first write reaches the closed socket, which resets */
		ck_assert_int_eq(t_run_until(c.loop, &c.first, 3000), 0);
		tsp_run_for(c.loop, 30);
		c.go = 1;
	}
	run_until_done(&c, 3000);
	switch (op) {
	case OP_READ:
		ck_assert_int_eq(c.r[0], 3);
		ck_assert_mem_eq(c.b[0], "hel", 3);
		ck_assert_int_eq(c.r[1], 0);
		break;
	case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
		ck_assert_int_eq(c.r[0], -IOU_EINCOMPLETE);
		ck_assert_int_eq(c.r[1], 3);
		ck_assert_mem_eq(c.b[1], "hel", 3);
		break;
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN:
		ck_assert_msg(c.r[0] == 6 || c.r[0] == -EPIPE ||
			      c.r[0] == -ECONNRESET, "first write: %zd", c.r[0]);
		ck_assert_msg(c.r[1] == -EPIPE || c.r[1] == -ECONNRESET,
			      "second write: %zd", c.r[1]);
		break;
	case OP_FORWARD:
		ck_assert_int_eq(c.r[0], 0);
		break;
	case OP_CONNECT:
		ck_assert_int_eq(c.r[0], -ECONNREFUSED);
		ck_assert_ptr_null(c.cs);
		break;
	case OP_CLOSE:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_uint_lt(c.took[0], 1000);
		break;
	}
	teardown(&c);
}
END_TEST

/* ---- the peer resets ---------------------------------------------------- */

/* Not here: sleep, yield, join (no peer); connect (a listener cannot
 * reset a connect: refused is the closed-listener case above). */
static const int rst_ops[] = {
	OP_READ, OP_READ_EXACTLY, OP_PEEK, OP_READ_UNTIL, OP_WRITE,
	OP_WRITE_ALL, OP_DRAIN, OP_FORWARD, OP_CLOSE,
};

START_TEST(test_peer_reset)
{
	struct ctx c;
	int op = rst_ops[_i];

	setup(&c, op);
	tsp_rst(c.fd);
	c.fd = -1;
	tsp_run_for(c.loop, 10);
	spawn(&c, NULL);
	run_until_done(&c, 3000);
	switch (op) {
	case OP_READ: case OP_READ_EXACTLY: case OP_PEEK: case OP_READ_UNTIL:
	case OP_FORWARD:
		ck_assert_int_eq(c.r[0], -ECONNRESET);
		break;
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN:
		ck_assert_msg(c.r[0] == -EPIPE || c.r[0] == -ECONNRESET,
			      "write: %zd", c.r[0]);
		break;
	case OP_CLOSE:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_uint_lt(c.took[0], 1000);
		break;
	}
	teardown(&c);
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

/* Every call, blocked (reads: nothing comes; writes: the peer does not
 * read; connect: the SYN is dropped; close: bytes cannot leave; sleep,
 * join: long), then cancelled: -ECANCELED within a moment, and the next
 * call too.  Close returns 0: cancelled, it closes at once.  Yield never
 * blocks: the yield in progress returns 0, the next -ECANCELED. */
START_TEST(test_cancel)
{
	struct ctx c;
	int op = _i, fill[2] = { -1, -1 };
	iou_task *t;
	uint64_t t0;

	setup(&c, op);
	c.t[0] = c.t[1] = -1;
	c.calls = 2;
	c.sleep_ms = 10000;
	switch (op) {
	case OP_WRITE: case OP_WRITE_ALL: case OP_DRAIN:
		small_buffers(&c);
		if (op == OP_WRITE) /* one send: fill the socket first */
			ck_assert_int_eq(iou_write_all(c.s, big, BIG, NULL,
						       NULL), 0);
		break;
	case OP_CONNECT:
		listener_full(&c, fill);
		break;
	case OP_CLOSE:
		small_buffers(&c);
		ck_assert_int_eq(iou_write_all(c.s, big, BIG, NULL, NULL), 0);
		c.calls = 1;
		break;
	case OP_JOIN:
		ck_assert_int_eq(iou_task_spawn(c.loop, sleep_main, &c.sleep_ms,
						NULL, &c.other), 0);
		break;
	}
	spawn(&c, &t);
	ck_assert_int_eq(t_run_until(c.loop, &c.started, 3000), 0);
	if (op != OP_YIELD)
		tsp_run_for(c.loop, 30);
	ck_assert_int_eq(c.first, 0);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_task_cancel(t), 0);
	run_until_done(&c, 3000);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
	ck_assert_int_eq(iou_task_detach(t), 0);
	switch (op) {
	case OP_CLOSE:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_ptr_null(c.s);
		break;
	case OP_YIELD:
		ck_assert_int_eq(c.r[0], 0);
		ck_assert_int_eq(c.r[1], -ECANCELED);
		break;
	default:
		ck_assert_int_eq(c.r[0], -ECANCELED);
		ck_assert_int_eq(c.r[1], -ECANCELED);
		break;
	}
	if (op == OP_CONNECT)
		ck_assert_ptr_null(c.cs);
	if (op == OP_READ_EXACTLY || op == OP_READ) {
		/* the stream is still usable from the callback API */
		ck_assert_uint_eq(iou_buffered(c.s), 0);
	}
	for (int i = 0; i < 2; i++)
		if (fill[i] >= 0)
			close(fill[i]);
	teardown(&c);
}
END_TEST

/* A forward whose bytes were taken from `from` and wait behind bytes that
 * cannot leave `to`: a cancel fails them (-ECANCELED) rather than waiting
 * for a peer that does not read. */
START_TEST(test_cancel_forward_stuck_on_target)
{
	struct ctx c;
	iou_task *t;
	uint64_t t0;
	int v = 4096;

	setup(&c, OP_FORWARD);
	c.t[0] = c.t[1] = -1;
	c.calls = 2;
	ck_assert_int_eq(setsockopt(iou_stream_fd(c.s2), SOL_SOCKET, SO_SNDBUF,
				    &v, sizeof(v)), 0);
	ck_assert_int_eq(setsockopt(c.fd2, SOL_SOCKET, SO_RCVBUF, &v,
				    sizeof(v)), 0);
	ck_assert_int_eq(iou_write_all(c.s2, big, BIG, NULL, NULL), 0);
	ck_assert_int_eq(send(c.fd, "hello\n", 6, 0), 6);
	spawn(&c, &t);
	tsp_run_for(c.loop, 50);
	ck_assert_int_eq(c.started, 1);
	ck_assert_int_eq(c.first, 0);
	ck_assert_uint_eq(iou_buffered(c.s), 0); /* taken: queued on s2 */
	t0 = t_now_ms();
	ck_assert_int_eq(iou_task_cancel(t), 0);
	run_until_done(&c, 3000);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
	ck_assert_int_eq(c.r[0], -ECANCELED);
	ck_assert_int_eq(c.r[1], -ECANCELED);
	ck_assert_int_eq(iou_task_detach(t), 0);
	teardown(&c);
}
END_TEST

/* ---- outside a task, bad arguments -------------------------------------- */

/* Every call outside a task: -EPERM, whatever the arguments. */
START_TEST(test_outside_a_task)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	iou_stream *s, *out = NULL;
	char buf[8];
	int fd = tsp_open_pair(loop, NULL, &s);

	ck_assert_int_eq(iou_task_read(s, buf, 8, -1), -EPERM);
	ck_assert_int_eq(iou_task_read_exactly(s, buf, 8, -1), -EPERM);
	ck_assert_int_eq(iou_task_peek(s, buf, 8, -1), -EPERM);
	ck_assert_int_eq(iou_task_read_until(s, buf, 8, "\n", 1, -1), -EPERM);
	ck_assert_int_eq(iou_task_write(s, "x", 1, -1), -EPERM);
	ck_assert_int_eq(iou_task_write_all(s, "x", 1, -1), -EPERM);
	ck_assert_int_eq(iou_task_drain(s, -1), -EPERM);
	ck_assert_int_eq(iou_task_forward(s, s, 8, -1), -EPERM);
	ck_assert_int_eq(iou_task_connect("127.0.0.1", 1, NULL, -1, &out),
			 -EPERM);
	ck_assert_ptr_null(out);
	ck_assert_int_eq(iou_task_close(s, -1), -EPERM);
	ck_assert_int_eq(iou_task_sleep(1), -EPERM);
	ck_assert_int_eq(iou_task_yield(), -EPERM);
	ck_assert_int_eq(iou_task_join(NULL), -EINVAL); /* args first */
	ck_assert_uint_eq(iou_buffered(s), 0); /* nothing was started */
	tsp_close_and_wait(loop, s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

struct bad {
	iou_stream *s;
	iou_task *self;
	ssize_t r[20];
	int n, done;
};

static void bad_main(void *arg)
{
	struct bad *b = arg;
	char buf[8];

	b->r[b->n++] = iou_task_read(NULL, buf, 8, -1);
	b->r[b->n++] = iou_task_read(b->s, NULL, 8, -1);
	b->r[b->n++] = iou_task_read_exactly(NULL, buf, 8, -1);
	b->r[b->n++] = iou_task_read_exactly(b->s, NULL, 8, -1);
	b->r[b->n++] = iou_task_read_exactly(b->s, buf, 0, -1);
	b->r[b->n++] = iou_task_peek(b->s, NULL, 8, -1);
	b->r[b->n++] = iou_task_peek(b->s, buf, 0, -1);
	b->r[b->n++] = iou_task_read_until(b->s, buf, 8, NULL, 1, -1);
	b->r[b->n++] = iou_task_read_until(b->s, buf, 8, "\n", 0, -1);
	b->r[b->n++] = iou_task_write(NULL, "x", 1, -1);
	b->r[b->n++] = iou_task_write(b->s, NULL, 1, -1);
	b->r[b->n++] = iou_task_write_all(b->s, NULL, 1, -1);
	b->r[b->n++] = iou_task_drain(NULL, -1);
	b->r[b->n++] = iou_task_forward(NULL, b->s, 8, -1);
	b->r[b->n++] = iou_task_forward(b->s, NULL, 8, -1);
	b->r[b->n++] = iou_task_connect("127.0.0.1", 1, NULL, -1, NULL);
	b->r[b->n++] = iou_task_close(NULL, -1);
	b->r[b->n++] = iou_task_join(NULL);
	b->r[b->n++] = iou_task_join(b->self);
	/* (sleep and yield take no argument that can be wrong) */
	b->done = 1;
}

START_TEST(test_bad_arguments)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct bad b = { 0 };
	int fd = tsp_open_pair(loop, NULL, &b.s);

	ck_assert_int_eq(iou_task_spawn(loop, bad_main, &b, NULL, &b.self), 0);
	ck_assert_int_eq(t_run_until(loop, &b.done, 3000), 0);
	ck_assert_int_eq(b.n, 19);
	for (int i = 0; i < b.n; i++)
		ck_assert_msg(b.r[i] == -EINVAL, "call %d: %zd, not -EINVAL",
			      i, b.r[i]);
	ck_assert_int_eq(iou_task_join(b.self), -EPERM);
	ck_assert_int_eq(iou_task_detach(b.self), 0);
	tsp_close_and_wait(loop, b.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

static Suite *calls_suite(void)
{
	Suite *s = suite_create("task_calls");
	TCase *tc;

	tc = tcase_create("happy path");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_happy_path, 0, OP_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("deadline");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_deadline, 0,
			    (int)(sizeof(deadline_ops) / sizeof(*deadline_ops)));
	suite_add_tcase(s, tc);

	tc = tcase_create("peer close");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_peer_close, 0,
			    (int)(sizeof(eof_ops) / sizeof(*eof_ops)));
	suite_add_tcase(s, tc);

	tc = tcase_create("peer reset");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_peer_reset, 0,
			    (int)(sizeof(rst_ops) / sizeof(*rst_ops)));
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_cancel, 0, OP_COUNT);
	tcase_add_test(tc, test_cancel_forward_stuck_on_target);
	suite_add_tcase(s, tc);

	tc = tcase_create("misuse");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_outside_a_task);
	tcase_add_test(tc, test_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(calls_suite());
}
