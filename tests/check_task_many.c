/* SPDX-License-Identifier: MIT */
/*
 * check_task_many: 10 000 tasks at once, each doing real IO on its own
 * stream: 5 000 socketpairs, both ends wrapped as iou streams, a client
 * task and a server task on each; and 5 000 client tasks against a task
 * server over TCP loopback (5 000 handler tasks).  check_task's
 * test_ten_thousand_tasks only sleeps.  Under valgrind, 1 000 tasks.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"

struct pair {
	iou_stream *c, *s;
	unsigned id;
	int *ok;     /* clients whose answer matched */
	int *ended;  /* tasks that returned */
};

/* Asks "ping <id>\n", expects "pong <id>\n", closes. */
static void client_main(void *arg)
{
	struct pair *p = arg;
	char msg[32], want[32], got[32];
	int n = snprintf(msg, sizeof(msg), "ping %u\n", p->id);
	ssize_t r;

	snprintf(want, sizeof(want), "pong %u\n", p->id);
	r = iou_task_write_all(p->c, msg, (size_t)n, 20000);
	if (r == n) {
		r = iou_task_read_until(p->c, got, sizeof(got), "\n", 1, 20000);
		if (r == n && !memcmp(got, want, (size_t)n))
			(*p->ok)++;
	}
	iou_task_close(p->c, 20000);
	(*p->ended)++;
}

/* Answers one line, then waits for the client's end of file. */
static void server_main(void *arg)
{
	struct pair *p = arg;
	char line[32];
	ssize_t r = iou_task_read_until(p->s, line, sizeof(line), "\n", 1,
					20000);

	if (r > 4 && !memcmp(line, "ping", 4)) {
		memcpy(line, "pong", 4);
		if (iou_task_write_all(p->s, line, (size_t)r, 20000) == r)
			iou_task_read(p->s, line, sizeof(line), 20000); /* 0 */
	}
	iou_task_close(p->s, 20000);
	(*p->ended)++;
}

START_TEST(test_ten_thousand_tasks_doing_io)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	unsigned pairs = t_under_valgrind() ? 500 : 5000;
	struct rlimit rl;
	struct pair *p;
	int ok = 0, ended = 0;
	uint64_t t0;

	/* two fds per pair and room for the rest */
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * pairs + 64) {
		rl.rlim_cur = rl.rlim_max;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur < 2 * pairs + 64)
		pairs = (unsigned)(rl.rlim_cur - 64) / 2;
	ck_assert_msg(pairs >= 500, "RLIMIT_NOFILE hard limit %lu too low",
		      (unsigned long)rl.rlim_max);
	p = calloc(pairs, sizeof(*p));
	ck_assert_ptr_nonnull(p);
	for (unsigned i = 0; i < pairs; i++) {
		int sv[2];

		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					    0, sv), 0);
		ck_assert_int_eq(iou_stream_open(loop, sv[0], NULL, &p[i].c), 0);
		ck_assert_int_eq(iou_stream_open(loop, sv[1], NULL, &p[i].s), 0);
		p[i].id = i;
		p[i].ok = &ok;
		p[i].ended = &ended;
		ck_assert_int_eq(iou_task_spawn(loop, server_main, &p[i], NULL,
						NULL), 0);
		ck_assert_int_eq(iou_task_spawn(loop, client_main, &p[i], NULL,
						NULL), 0);
	}
	t0 = t_now_ms();
	ck_assert_int_eq(t_run_until_count(loop, &ended, (int)(2 * pairs),
					   60000), 0);
	ck_assert_int_eq(ok, (int)pairs);
	ck_assert_uint_lt(t_now_ms() - t0, 60000);
	free(p);
	t_loop_destroy(loop);
}
END_TEST

struct tcp {
	uint16_t port;
	unsigned id;
	int *ok, *ended;
};

static void tcp_client_main(void *arg)
{
	struct tcp *c = arg;
	char msg[32], got[32];
	int n = snprintf(msg, sizeof(msg), "ping %u\n", c->id);
	iou_stream *s;

	if (iou_task_connect("127.0.0.1", c->port, NULL, 20000, &s) == 0) {
		if (iou_task_write_all(s, msg, (size_t)n, 20000) == n &&
		    iou_task_read_until(s, got, sizeof(got), "\n", 1, 20000) == n &&
		    !memcmp(got, "pong", 4) && !memcmp(got + 4, msg + 4,
						      (size_t)n - 4))
			(*c->ok)++;
		iou_task_close(s, 20000);
	}
	(*c->ended)++;
}

static void tcp_handler(iou_stream *s, void *ud)
{
	char line[32];
	ssize_t r = iou_task_read_until(s, line, sizeof(line), "\n", 1, 20000);

	if (r > 4 && !memcmp(line, "ping", 4)) {
		memcpy(line, "pong", 4);
		if (iou_task_write_all(s, line, (size_t)r, 20000) == r)
			iou_task_read(s, line, sizeof(line), 20000); /* 0 */
	}
	(*(int *)ud)++;
}

static void srv_done(iou_server *srv, uint64_t finished, uint64_t cut, void *ud)
{
	(void)srv;
	(void)finished;
	(void)cut;
	*(int *)ud = 1;
}

START_TEST(test_five_thousand_connections_task_server)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	unsigned n = t_under_valgrind() ? 500 : 5000;
	struct iou_server_opts o;
	struct rlimit rl;
	struct tcp *c;
	iou_server *srv;
	int ok = 0, ended = 0, handled = 0, done = 0;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * n + 64) {
		rl.rlim_cur = rl.rlim_max;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur < 2 * n + 64)
		n = (unsigned)(rl.rlim_cur - 64) / 2;
	ck_assert_msg(n >= 500, "RLIMIT_NOFILE hard limit %lu too low",
		      (unsigned long)rl.rlim_max);
	iou_server_opts_init(&o);
	o.backlog = 4096;
	ck_assert_int_eq(iou_task_server_start(loop, &o, tcp_handler, &handled,
					       NULL, &srv), 0);
	c = calloc(n, sizeof(*c));
	ck_assert_ptr_nonnull(c);
	for (unsigned i = 0; i < n; i++) {
		c[i] = (struct tcp){ iou_server_port(srv), i, &ok, &ended };
		ck_assert_int_eq(iou_task_spawn(loop, tcp_client_main, &c[i],
						NULL, NULL), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &ended, (int)n, 60000), 0);
	ck_assert_int_eq(ok, (int)n);
	ck_assert_int_eq(t_run_until_count(loop, &handled, (int)n, 20000), 0);
	ck_assert_int_eq(iou_server_shutdown(srv, 1000, srv_done, &done), 0);
	ck_assert_int_eq(t_run_until(loop, &done, 5000), 0);
	free(c);
	t_loop_destroy(loop);
}
END_TEST

static Suite *many_suite(void)
{
	Suite *s = suite_create("task_many");
	TCase *tc = tcase_create("io");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_ten_thousand_tasks_doing_io);
	tcase_add_test(tc, test_five_thousand_connections_task_server);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(many_suite());
}
