/* SPDX-License-Identifier: MIT */
/*
 * check_task_server: the graceful shutdown of a task server
 * (iou_task_server_start) with handlers of every temper: cooperative ones
 * that return when their call fails, one that finishes within the grace
 * period, and stuck ones that ignore errors (a sleeper in a loop, a writer
 * to a peer that never reads).  The done callback must come after every
 * handler returned and every stream closed.
 */
#include <check.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

#define SLEEPS 100
#define BIG (8u << 20)
static unsigned char big[BIG];

struct srv {
	iou_server *srv;
	int handled, ended;
	ssize_t echo_last;                 /* the failed read of "echo" */
	ssize_t finisher_last;             /* its clean end */
	int sleeps, sleep_cancelled;       /* "sleepy": its loop */
	int sleep_first_err;
	uint64_t sleepy_ended_at;
	ssize_t write_first, write_second; /* "writer" */
	uint64_t shutdown_at;
	int ended_at_done;
	uint64_t finished, cut;
	int done;
};

static void handler(iou_stream *s, void *ud)
{
	struct srv *t = ud;
	char line[64];
	ssize_t n;

	t->handled++;
	n = iou_task_read_until(s, line, sizeof(line), "\n", 1, 3000);
	if (n == 5 && !memcmp(line, "echo\n", 5)) {
		/* cooperative: echo until a call fails */
		while ((n = iou_task_read_until(s, line, sizeof(line), "\n", 1,
						-1)) > 0)
			if (iou_task_write_all(s, line, (size_t)n, -1) < 0)
				break;
		t->echo_last = n;
	} else if (n == 9 && !memcmp(line, "finisher\n", 9)) {
		while ((n = iou_task_read(s, line, sizeof(line), -1)) > 0)
			;
		t->finisher_last = n;
	} else if (n == 7 && !memcmp(line, "sleepy\n", 7)) {
		/* stuck: ignores every error, but its loop has an end */
		for (int i = 0; i < SLEEPS; i++) {
			int r = iou_task_sleep(50);

			t->sleeps++;
			if (r == -ECANCELED)
				t->sleep_cancelled++;
			else if (r < 0 && !t->sleep_first_err)
				t->sleep_first_err = r;
		}
		t->sleepy_ended_at = t_now_ms();
	} else if (n == 7 && !memcmp(line, "writer\n", 7)) {
		/* stuck in a write the peer never reads; then tries again */
		t->write_first = iou_task_write_all(s, big, BIG, -1);
		t->write_second = iou_task_write_all(s, "x", 1, -1);
	}
	t->ended++;
}

static void done_cb(iou_server *srv, uint64_t finished, uint64_t cut,
		    void *ud)
{
	struct srv *t = ud;

	(void)srv;
	t->ended_at_done = t->ended;
	t->finished = finished;
	t->cut = cut;
	t->done = 1;
}

/* The peer's view once the server is done: end of file or a reset, never
 * an open connection. */
static void expect_closed(int fd)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		;
	ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET),
		      "client socket still open: recv %zd, errno %d", n, errno);
}

START_TEST(test_shutdown_cooperative_finishing_and_stuck)
{
	static const char *const first[] = { "echo\n", "finisher\n", "sleepy\n",
					     "writer\n" };
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct srv t = { 0 };
	struct iou_server_opts o;
	int fd[4], v = 4096;
	char buf[8];

	iou_server_opts_init(&o);
	o.stream.sndbuf = 4096; /* the writer blocks soon */
	ck_assert_int_eq(iou_task_server_start(loop, &o, handler, &t, NULL,
					       &t.srv), 0);
	for (int i = 0; i < 4; i++) {
		fd[i] = t_connect_loopback(iou_server_port(t.srv));
		tsp_set_timeouts(fd[i]);
		ck_assert_int_eq(setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &v,
					    sizeof(v)), 0);
		ck_assert_int_eq(send(fd[i], first[i], strlen(first[i]), 0),
				 (ssize_t)strlen(first[i]));
	}
	ck_assert_int_eq(send(fd[0], "hi\n", 3, 0), 3);
	ck_assert_int_eq(tsp_run_until_count(loop, &t.handled, 4, 3000), 0);
	while (recv(fd[0], buf, sizeof(buf), MSG_DONTWAIT) != 3)
		ck_assert_int_ge(tsp_turn(loop), 0);
	tsp_run_for(loop, 80);
	ck_assert_int_eq(t.ended, 0);
	ck_assert_int_gt(t.sleeps, 0);

	t.shutdown_at = t_now_ms();
	ck_assert_int_eq(iou_server_shutdown(t.srv, 200, done_cb, &t), 0);
	ck_assert_int_eq(shutdown(fd[1], SHUT_WR), 0); /* finishes in grace */
	ck_assert_int_eq(t_run_until(loop, &t.done, 5000), 0);
	ck_assert_uint_lt(t_now_ms() - t.shutdown_at, 3000);

	ck_assert_int_eq(t.ended_at_done, 4); /* every handler returned */
	ck_assert_uint_eq(t.finished, 1);
	ck_assert_uint_eq(t.cut, 3);
	ck_assert_int_eq(t.finisher_last, 0);
	ck_assert_int_eq(t.echo_last, -ECONNABORTED);
	/* the sleeper's calls after the cut: -ECANCELED, at once */
	ck_assert_int_eq(t.sleeps, SLEEPS);
	ck_assert_int_gt(t.sleep_cancelled, 0);
	ck_assert_int_eq(t.sleep_first_err, 0);
	ck_assert_uint_lt(t.sleepy_ended_at - t.shutdown_at, 1500);
	ck_assert_int_eq(t.write_first, -ECONNABORTED);
	ck_assert_int_eq(t.write_second, -ECANCELED);
	for (int i = 0; i < 4; i++) {
		expect_closed(fd[i]);
		close(fd[i]);
	}
	t_loop_destroy(loop);
}
END_TEST

/* Grace 0: every handler is cut at once, and the done callback still waits
 * for each of them to return. */
START_TEST(test_shutdown_without_grace)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct srv t = { 0 };
	int fd[3];
	char buf[8];

	ck_assert_int_eq(iou_task_server_start(loop, NULL, handler, &t, NULL,
					       &t.srv), 0);
	for (int i = 0; i < 3; i++) {
		fd[i] = t_connect_loopback(iou_server_port(t.srv));
		tsp_set_timeouts(fd[i]);
	}
	ck_assert_int_eq(send(fd[0], "echo\nhi\n", 8, 0), 8);
	ck_assert_int_eq(send(fd[1], "sleepy\n", 7, 0), 7);
	/* fd[2] says nothing: its handler waits in its first read */
	ck_assert_int_eq(tsp_run_until_count(loop, &t.handled, 3, 3000), 0);
	while (recv(fd[0], buf, sizeof(buf), MSG_DONTWAIT) != 3)
		ck_assert_int_ge(tsp_turn(loop), 0);
	tsp_run_for(loop, 20);
	t.shutdown_at = t_now_ms();
	ck_assert_int_eq(iou_server_shutdown(t.srv, 0, done_cb, &t), 0);
	ck_assert_int_eq(t.done, 0);
	ck_assert_int_eq(t_run_until(loop, &t.done, 5000), 0);
	ck_assert_int_eq(t.ended_at_done, 3);
	ck_assert_uint_eq(t.finished, 0);
	ck_assert_uint_eq(t.cut, 3);
	ck_assert_int_eq(t.echo_last, -ECONNABORTED);
	ck_assert_int_eq(t.sleeps, SLEEPS);
	ck_assert_uint_lt(t.sleepy_ended_at - t.shutdown_at, 1500);
	for (int i = 0; i < 3; i++) {
		expect_closed(fd[i]);
		close(fd[i]);
	}
	t_loop_destroy(loop);
}
END_TEST

static Suite *server_suite(void)
{
	Suite *s = suite_create("task_server");
	TCase *tc = tcase_create("shutdown");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_shutdown_cooperative_finishing_and_stuck);
	tcase_add_test(tc, test_shutdown_without_grace);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(server_suite());
}
