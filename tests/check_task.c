/* SPDX-License-Identifier: MIT */
/*
 * check_task: tasks (stackful coroutines on the loop's thread) and their
 * blocking calls, against real TCP connections on loopback.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

/* ---- the switch and the scheduler --------------------------------------- */

struct order {
	char log[64];
	int n;
	int ended;
};


struct pingpong {
	struct order *o;
	char name;
	int rounds;
};

static void pp_main(void *arg)
{
	struct pingpong *p = arg;

	for (int i = 0; i < p->rounds; i++) {
		p->o->log[p->o->n++] = p->name;
		ck_assert_int_eq(iou_task_yield(), 0);
	}
	p->o->ended++;
}

/* A task starts on a later turn, never inside spawn; two tasks that yield
 * take turns. */
START_TEST(test_spawn_and_yield_take_turns)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct order o = { 0 };
	struct pingpong a = { &o, 'a', 3 }, b = { &o, 'b', 3 };

	ck_assert_int_eq(iou_task_spawn(loop, pp_main, &a, NULL, NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, pp_main, &b, NULL, NULL), 0);
	ck_assert_int_eq(o.n, 0);
	ck_assert_ptr_null(iou_task_self());
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(o.ended, 2);
	o.log[o.n] = 0;
	ck_assert_str_eq(o.log, "ababab");
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct regs {
	double f;
	long sum;
	int round_in_task, round_after;
	int ok;
};

/* Values live across switches (in callee-saved registers, as the compiler
 * likes) and the FP rounding mode are the task's own. */
static void regs_main(void *arg)
{
	struct regs *r = arg;
	volatile long seed = 7;
	long a = seed, b = seed * 3, c = seed * 5, d = seed * 7, e = seed * 11,
	     f = seed * 13;
	double x = (double)seed / 3.0;

	fesetround(FE_UPWARD);
	for (int i = 0; i < 1000; i++) {
		ck_assert_int_eq(iou_task_yield(), 0);
		a += 1;
		b += 2;
		c += 3;
		d += 4;
		e += 5;
		f += 6;
		x *= 1.0000001;
	}
	r->round_in_task = fegetround();
	r->sum = a + b + c + d + e + f;
	r->f = x;
	r->ok = 1;
	fesetround(FE_TONEAREST);
}

START_TEST(test_registers_and_fp_control_preserved)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct regs r = { 0 };
	long want = 7 + 21 + 35 + 49 + 77 + 91 + 1000 * (1 + 2 + 3 + 4 + 5 + 6);

	ck_assert_int_eq(iou_task_spawn(loop, regs_main, &r, NULL, NULL), 0);
	while (!r.ok) {
		ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
		/* the loop's own rounding mode is untouched by the task's */
		ck_assert_int_eq(fegetround(), FE_TONEAREST);
	}
	ck_assert_int_eq(r.round_in_task, FE_UPWARD);
	ck_assert_int_eq(r.sum, want);
	ck_assert(r.f > 2.33 && r.f < 2.34);
	t_loop_destroy(loop);
}
END_TEST

static void count_main(void *arg)
{
	int *n = arg;

	for (int i = 0; i < 100000; i++)
		iou_task_yield();
	(*n)++;
}

/* Many switches, in pairs of tasks. */
START_TEST(test_many_switches)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	int n = 0;

	ck_assert_int_eq(iou_task_spawn(loop, count_main, &n, NULL, NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, count_main, &n, NULL, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Bounded far beyond any stack, so the compiler sees an end. */
static int recurse(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (depth > 100000000)
		return 0;
	return recurse(depth + 1) + pad[0];
}

static void overflow_main(void *arg)
{
	(void)arg;
	recurse(0);
}

/* Recursion without end hits the guard page: SIGSEGV, not corruption. */
START_TEST(test_stack_overflow_is_sigsegv)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_task_opts o;

	iou_task_opts_init(&o);
	o.stack_size = 16 * 1024;
	ck_assert_int_eq(iou_task_spawn(loop, overflow_main, NULL, &o, NULL), 0);
	iou_loop_run(loop);
}
END_TEST

/* ---- sleep, cancel, join, misuse ---------------------------------------- */

struct sleeper {
	unsigned ms;
	int res;
	uint64_t took;
	iou_task *other;        /* cancel or join this one */
	int join_res;
};

static void sleep_main(void *arg)
{
	struct sleeper *s = arg;
	uint64_t t0 = t_now_ms();

	s->res = iou_task_sleep(s->ms);
	s->took = t_now_ms() - t0;
}

static void join_main(void *arg)
{
	struct sleeper *s = arg;

	s->join_res = iou_task_join(s->other);
}

START_TEST(test_sleep_join_cancel)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct sleeper a = { .ms = 50 }, b = { .ms = 5000 }, j = { 0 };
	iou_task *ta, *tb;

	ck_assert_int_eq(iou_task_spawn(loop, sleep_main, &a, NULL, &ta), 0);
	ck_assert_int_eq(iou_task_spawn(loop, sleep_main, &b, NULL, &tb), 0);
	j.other = ta;
	ck_assert_int_eq(iou_task_spawn(loop, join_main, &j, NULL, NULL), 0);
	tsp_run_for(loop, 120);
	ck_assert_int_eq(a.res, 0);
	ck_assert_uint_ge(a.took, 45);
	ck_assert_int_eq(j.join_res, 0); /* ta is released */
	ck_assert_int_eq(iou_task_cancel(tb), 0);
	ck_assert_int_eq(iou_task_detach(tb), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(b.res, -ECANCELED);
	ck_assert_uint_lt(b.took, 1000);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void misuse_main(void *arg)
{
	iou_loop *loop = arg;

	ck_assert_int_eq(iou_loop_run(loop), -EBUSY);
	ck_assert_int_eq(iou_loop_run_once(loop, 0), -EBUSY);
	ck_assert_int_eq(iou_task_join(iou_task_self()), -EINVAL);
}

/* Blocking calls outside a task are an error; a task never drives the
 * loop. */
START_TEST(test_misuse_is_an_error)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	char buf[4];

	ck_assert_int_eq(iou_task_sleep(1), -EPERM);
	ck_assert_int_eq(iou_task_yield(), -EPERM);
	ck_assert_int_eq(iou_task_read(NULL, buf, 4, -1), -EPERM);
	ck_assert_int_eq(iou_task_write_all(NULL, buf, 4, -1), -EPERM);
	ck_assert_int_eq(iou_task_spawn(NULL, misuse_main, NULL, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(iou_task_spawn(loop, misuse_main, loop, NULL, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void tiny_main(void *arg)
{
	int *n = arg;

	iou_task_sleep(20);
	(*n)++;
}

/* 10 000 tasks at once. */
START_TEST(test_ten_thousand_tasks)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	int n = 0;

	for (int i = 0; i < 10000; i++)
		ck_assert_int_eq(iou_task_spawn(loop, tiny_main, &n, NULL, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(n, 10000);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ---- streams ------------------------------------------------------------ */

struct echo {
	iou_stream *s;
	int lines;
	ssize_t last;
	int done;
};

/* The seed's echo handler, in a straight line. */
static void echo_main(void *arg)
{
	struct echo *e = arg;
	char line[256];
	ssize_t n;

	while ((n = iou_task_read_until(e->s, line, sizeof(line), "\n", 1, -1)) > 0) {
		ck_assert_int_eq(iou_task_write_all(e->s, line, (size_t)n, -1), n);
		e->lines++;
	}
	e->last = n;
	ck_assert_int_eq(iou_task_close(e->s, 1000), 0);
	e->done = 1;
}

START_TEST(test_echo_lines)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct echo e = { 0 };
	char buf[64];
	size_t got = 0;
	int fd = tsp_open_pair(loop, NULL, &e.s);
	ssize_t n;

	tsp_set_timeouts(fd);
	ck_assert_int_eq(iou_task_spawn(loop, echo_main, &e, NULL, NULL), 0);
	ck_assert_int_eq(send(fd, "one\ntwo\nthr", 11, 0), 11);
	ck_assert_int_eq(send(fd, "ee\n", 3, 0), 3);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_int_eq(t_run_until(loop, &e.done, 3000), 0);
	while ((n = recv(fd, buf + got, sizeof(buf) - got, 0)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(got, 14);
	ck_assert_mem_eq(buf, "one\ntwo\nthree\n", 14);
	ck_assert_int_eq(e.lines, 3);
	ck_assert_int_eq(e.last, 0); /* a clean end of file */
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

struct timed {
	iou_stream *s;
	ssize_t first, second;
	char buf[16];
	int done;
};

static void timed_main(void *arg)
{
	struct timed *t = arg;

	t->first = iou_task_read_exactly(t->s, t->buf, 8, 50);
	t->second = iou_task_read_exactly(t->s, t->buf, 8, 2000);
	t->done = 1;
}

/* A deadline passes: -ETIMEDOUT, and the bytes that came stay buffered for
 * the next call. */
START_TEST(test_read_deadline_loses_nothing)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct timed t = { 0 };
	int fd = tsp_open_pair(loop, NULL, &t.s);

	ck_assert_int_eq(iou_task_spawn(loop, timed_main, &t, NULL, NULL), 0);
	ck_assert_int_eq(send(fd, "0123", 4, 0), 4);
	tsp_run_for(loop, 150);
	ck_assert_int_eq(t.first, -ETIMEDOUT);
	ck_assert_int_eq(send(fd, "4567", 4, 0), 4);
	ck_assert_int_eq(t_run_until(loop, &t.done, 3000), 0);
	ck_assert_int_eq(t.second, 8);
	ck_assert_mem_eq(t.buf, "01234567", 8);
	tsp_close_and_wait(loop, t.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

struct canceller {
	iou_stream *s;
	ssize_t res;
	int done;
};

static void blocked_read_main(void *arg)
{
	struct canceller *c = arg;
	char b[8];

	c->res = iou_task_read(c->s, b, sizeof(b), -1);
	c->done = 1;
}

/* Cancelling a task blocked in a read: -ECANCELED. */
START_TEST(test_cancel_blocked_read)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct canceller c = { 0 };
	iou_task *t;
	int fd = tsp_open_pair(loop, NULL, &c.s);

	ck_assert_int_eq(iou_task_spawn(loop, blocked_read_main, &c, NULL, &t), 0);
	tsp_run_for(loop, 30);
	ck_assert_int_eq(c.done, 0);
	ck_assert_int_eq(iou_task_cancel(t), 0);
	ck_assert_int_eq(t_run_until(loop, &c.done, 2000), 0);
	ck_assert_int_eq(c.res, -ECANCELED);
	ck_assert_int_eq(iou_task_detach(t), 0);
	tsp_close_and_wait(loop, c.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

struct client {
	uint16_t port;
	int res;
	char reply[16];
	int done;
};

static void client_main(void *arg)
{
	struct client *c = arg;
	iou_stream *s;

	c->res = iou_task_connect("127.0.0.1", c->port, NULL, 2000, &s);
	if (c->res < 0)
		return;
	ck_assert_int_eq(iou_task_write_all(s, "ping\n", 5, 1000), 5);
	ck_assert_int_eq(iou_task_read_exactly(s, c->reply, 5, 1000), 5);
	ck_assert_int_eq(iou_task_close(s, 1000), 0);
	c->done = 1;
}

/* A client task against a plain listener answered by a peer thread. */
START_TEST(test_connect_write_read)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct client c = { 0 };
	int lfd = t_listen_ephemeral(&c.port), afd;
	char buf[5];

	ck_assert_int_eq(fcntl(lfd, F_SETFL, O_NONBLOCK), 0);

	ck_assert_int_eq(iou_task_spawn(loop, client_main, &c, NULL, NULL), 0);
	while ((afd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) < 0)
		ck_assert_int_ge(tsp_turn(loop), 0);
	tsp_set_timeouts(afd);
	while (recv(afd, buf, 5, MSG_DONTWAIT | MSG_PEEK) < 5)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(recv(afd, buf, 5, 0), 5);
	ck_assert_int_eq(send(afd, "pong\n", 5, 0), 5);
	ck_assert_int_eq(t_run_until(loop, &c.done, 3000), 0);
	ck_assert_int_eq(c.res, 0);
	ck_assert_mem_eq(c.reply, "pong\n", 5);
	close(afd);
	close(lfd);
	t_loop_destroy(loop);
}
END_TEST

/* ---- a server whose handler is a task ----------------------------------- */

struct tsrv {
	int handled, ended, sleep_res;
	int done;
	uint64_t finished, cut;
};

/* Echo lines until the end of file; a line "sleep" sleeps 10 s (stuck). */
static void line_handler(iou_stream *s, void *ud)
{
	struct tsrv *t = ud;
	char line[128];
	ssize_t n;

	t->handled++;
	while ((n = iou_task_read_until(s, line, sizeof(line), "\n", 1, -1)) > 0) {
		if (n == 6 && !memcmp(line, "sleep\n", 6)) {
			t->sleep_res = iou_task_sleep(10000);
			break;
		}
		if (iou_task_write_all(s, line, (size_t)n, -1) != n)
			break;
	}
	t->ended++;
}

static void tsrv_done(iou_server *srv, uint64_t finished, uint64_t cut,
		      void *ud)
{
	struct tsrv *t = ud;

	(void)srv;
	t->finished = finished;
	t->cut = cut;
	t->done = 1;
}

/* Two clients: one leaves after an echo (its handler returns), one makes
 * its handler sleep; the shutdown's grace limit cancels the sleeping
 * handler, which returns, and the server finishes. */
START_TEST(test_task_server_echo_and_shutdown)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct tsrv t = { 0 };
	iou_server *srv;
	char buf[16];
	int a, b;

	ck_assert_int_eq(iou_task_server_start(loop, NULL, line_handler, &t, NULL,
					       &srv), 0);
	a = t_connect_loopback(iou_server_port(srv));
	b = t_connect_loopback(iou_server_port(srv));
	tsp_set_timeouts(a);
	ck_assert_int_eq(send(a, "hello\n", 6, 0), 6);
	while (recv(a, buf, sizeof(buf), MSG_DONTWAIT) != 6)
		ck_assert_int_ge(tsp_turn(loop), 0);
	ck_assert_int_eq(send(b, "sleep\n", 6, 0), 6);
	tsp_run_for(loop, 50);
	ck_assert_int_eq(t.handled, 2);
	ck_assert_int_eq(iou_server_shutdown(srv, 100, tsrv_done, &t), 0);
	ck_assert_int_eq(shutdown(a, SHUT_WR), 0); /* a finishes in grace */
	ck_assert_int_eq(t_run_until(loop, &t.done, 3000), 0);
	ck_assert_int_eq(t.ended, 2);
	ck_assert_int_eq(t.sleep_res, -ECANCELED);
	ck_assert_uint_eq(t.finished, 1);
	ck_assert_uint_eq(t.cut, 1);
	close(a);
	close(b);
	t_loop_destroy(loop);
}
END_TEST

static Suite *task_suite(void)
{
	Suite *s = suite_create("task");
	TCase *tc;

	tc = tcase_create("switch");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_spawn_and_yield_take_turns);
	tcase_add_test(tc, test_registers_and_fp_control_preserved);
	tcase_add_test(tc, test_many_switches);
	/* (Not under valgrind, whose runs do not fork: the crash would end
	 * the whole suite.) */
	if (t_under_valgrind())
		;
#ifdef __SANITIZE_ADDRESS__
	/* ASan catches the fault on the guard page, reports a stack overflow
	 * and exits with 1 */
	else
		tcase_add_exit_test(tc, test_stack_overflow_is_sigsegv, 1);
#else
	else
		tcase_add_test_raise_signal(tc, test_stack_overflow_is_sigsegv, SIGSEGV);
#endif
	suite_add_tcase(s, tc);

	tc = tcase_create("sleep cancel join");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_sleep_join_cancel);
	tcase_add_test(tc, test_misuse_is_an_error);
	tcase_add_test(tc, test_ten_thousand_tasks);
	suite_add_tcase(s, tc);

	tc = tcase_create("streams");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_echo_lines);
	tcase_add_test(tc, test_read_deadline_loses_nothing);
	tcase_add_test(tc, test_cancel_blocked_read);
	tcase_add_test(tc, test_connect_write_read);
	tcase_add_test(tc, test_task_server_echo_and_shutdown);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(task_suite());
}
