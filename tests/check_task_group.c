/* SPDX-License-Identifier: MIT */
/*
 * check_task_group: task groups (iou_task_group_*): waiting for every
 * member, cancelling them, and destroying the group in every order (while
 * members run, from a member, from a callback, from on_empty) without a
 * use-after-free (run under ASan and valgrind in CI).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"
#include "t_stream_peer.h"

struct member {
	unsigned ms;       /* sleep this long */
	int res;           /* what the sleep returned */
	uint64_t took;
	int ended;
};

static void sleep_member(void *arg)
{
	struct member *m = arg;
	uint64_t t0 = t_now_ms();

	m->res = iou_task_sleep(m->ms);
	m->took = t_now_ms() - t0;
	m->ended = 1;
}

struct waiter {
	iou_task_group *g;
	int timeout_ms;
	int res, res2;
	unsigned count_after;
	uint64_t took;
	int done;
};

static void wait_main(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = t_now_ms();

	w->res = iou_task_group_wait(w->g, w->timeout_ms);
	w->took = t_now_ms() - t0;
	w->count_after = iou_task_group_count(w->g);
	w->done = 1;
}

/* wait returns 0 once every member ended, not before. */
START_TEST(test_wait_for_every_member)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m[3] = { { .ms = 10 }, { .ms = 60 }, { .ms = 30 } };
	struct waiter w = { .timeout_ms = -1 };

	ck_assert_int_eq(iou_task_group_create(loop, &w.g), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(iou_task_group_spawn(w.g, sleep_member, &m[i],
						      NULL), 0);
	ck_assert_uint_eq(iou_task_group_count(w.g), 3);
	ck_assert_int_eq(iou_task_spawn(loop, wait_main, &w, NULL, NULL), 0);
	ck_assert_int_eq(t_run_until(loop, &w.done, 3000), 0);
	ck_assert_int_eq(w.res, 0);
	ck_assert_uint_eq(w.count_after, 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(m[i].ended, 1);
		ck_assert_int_eq(m[i].res, 0);
	}
	ck_assert_uint_ge(w.took, 55);
	ck_assert_int_eq(iou_task_group_destroy(w.g), 0);
	t_loop_destroy(loop);
}
END_TEST

/* An empty group: wait returns 0 at once, without a turn. */
static void wait_empty_main(void *arg)
{
	struct waiter *w = arg;

	w->res = iou_task_group_wait(w->g, -1);
	w->res2 = iou_task_group_wait(w->g, 0);
	w->done = 1;
}

START_TEST(test_wait_on_empty_group)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct waiter w = { 0 };

	ck_assert_int_eq(iou_task_group_create(loop, &w.g), 0);
	ck_assert_int_eq(iou_task_spawn(loop, wait_empty_main, &w, NULL, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(w.done, 1);
	ck_assert_int_eq(w.res, 0);
	ck_assert_int_eq(w.res2, 0);
	ck_assert_int_eq(iou_task_group_destroy(w.g), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A deadline: -ETIMEDOUT while a member still runs; the members are
 * untouched; a later wait after a cancel returns 0. */
START_TEST(test_wait_deadline_then_cancel)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m = { .ms = 5000 };
	struct waiter w = { .timeout_ms = 40 }, w2 = { .timeout_ms = 3000 };

	ck_assert_int_eq(iou_task_group_create(loop, &w.g), 0);
	w2.g = w.g;
	ck_assert_int_eq(iou_task_group_spawn(w.g, sleep_member, &m, NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, wait_main, &w, NULL, NULL), 0);
	ck_assert_int_eq(t_run_until(loop, &w.done, 3000), 0);
	ck_assert_int_eq(w.res, -ETIMEDOUT);
	ck_assert_uint_ge(w.took, 35);
	ck_assert_uint_eq(w.count_after, 1);
	ck_assert_int_eq(m.ended, 0);
	ck_assert_int_eq(iou_task_spawn(loop, wait_main, &w2, NULL, NULL), 0);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(w2.done, 0);
	ck_assert_int_eq(iou_task_group_cancel(w.g), 0);
	ck_assert_int_eq(t_run_until(loop, &w2.done, 3000), 0);
	ck_assert_int_eq(w2.res, 0);
	ck_assert_int_eq(m.res, -ECANCELED);
	ck_assert_uint_lt(m.took, 2000);
	ck_assert_int_eq(iou_task_group_destroy(w.g), 0);
	t_loop_destroy(loop);
}
END_TEST

/* A waiter that is cancelled returns -ECANCELED at once; the group and
 * its members go on. */
START_TEST(test_cancelled_waiter)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m = { .ms = 1000 };
	struct waiter w = { .timeout_ms = -1 };
	iou_task *wt;

	ck_assert_int_eq(iou_task_group_create(loop, &w.g), 0);
	ck_assert_int_eq(iou_task_group_spawn(w.g, sleep_member, &m, NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, wait_main, &w, NULL, &wt), 0);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(iou_task_cancel(wt), 0);
	ck_assert_int_eq(t_run_until(loop, &w.done, 3000), 0);
	ck_assert_int_eq(w.res, -ECANCELED);
	ck_assert_uint_lt(w.took, 900);
	ck_assert_int_eq(m.ended, 0);
	ck_assert_int_eq(iou_task_detach(wt), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(m.ended, 1);
	ck_assert_int_eq(m.res, 0);
	ck_assert_int_eq(iou_task_group_destroy(w.g), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct self_wait {
	iou_task_group *g;
	int wait_res, spawn_res, destroy_res, destroy2_res, cancel_res;
	int ended;
};

static void self_wait_member(void *arg)
{
	struct self_wait *s = arg;

	s->wait_res = iou_task_group_wait(s->g, -1);
	s->ended = 1;
}

/* Misuse: outside a task, a member waiting for its own group, NULLs. */
START_TEST(test_misuse)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct self_wait s = { 0 };
	iou_task_group *g;

	ck_assert_int_eq(iou_task_group_create(NULL, &g), -EINVAL);
	ck_assert_int_eq(iou_task_group_create(loop, NULL), -EINVAL);
	ck_assert_int_eq(iou_task_group_create(loop, &s.g), 0);
	ck_assert_int_eq(iou_task_group_wait(s.g, -1), -EPERM);
	ck_assert_int_eq(iou_task_group_spawn(NULL, sleep_member, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(iou_task_group_spawn(s.g, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_task_group_cancel(NULL), -EINVAL);
	ck_assert_int_eq(iou_task_group_destroy(NULL), -EINVAL);
	ck_assert_int_eq(iou_task_group_on_empty(NULL, NULL, NULL), -EINVAL);
	ck_assert_uint_eq(iou_task_group_count(NULL), 0);
	ck_assert_int_eq(iou_task_group_spawn(s.g, self_wait_member, &s, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(s.ended, 1);
	ck_assert_int_eq(s.wait_res, -EDEADLK);
	ck_assert_int_eq(iou_task_group_destroy(s.g), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

struct reader {
	iou_stream *s;
	ssize_t res, res2;
	int ended;
};

static void read_member(void *arg)
{
	struct reader *r = arg;
	char b[16];

	r->res = iou_task_read(r->s, b, sizeof(b), -1);
	r->res2 = iou_task_read(r->s, b, sizeof(b), -1); /* cancelled still */
	r->ended = 1;
}

/* Cancel reaches every member's blocking call, reads and sleeps, and
 * their later calls; the group is reusable. */
START_TEST(test_cancel_every_member)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct reader r[2] = { { 0 } };
	struct member m = { .ms = 5000 }, after = { .ms = 10 };
	iou_task_group *g;
	int fd[2];

	fd[0] = tsp_open_pair(loop, NULL, &r[0].s);
	fd[1] = tsp_open_pair(loop, NULL, &r[1].s);
	ck_assert_int_eq(iou_task_group_create(loop, &g), 0);
	ck_assert_int_eq(iou_task_group_spawn(g, read_member, &r[0], NULL), 0);
	ck_assert_int_eq(iou_task_group_spawn(g, read_member, &r[1], NULL), 0);
	ck_assert_int_eq(iou_task_group_spawn(g, sleep_member, &m, NULL), 0);
	tsp_run_for(loop, 30);
	ck_assert_uint_eq(iou_task_group_count(g), 3);
	ck_assert_int_eq(iou_task_group_cancel(g), 0);
	ck_assert_int_eq(t_run_until(loop, &m.ended, 2000), 0);
	ck_assert_int_eq(t_run_until_count(loop, &r[1].ended, 1, 2000), 0);
	ck_assert_int_eq(r[0].ended, 1);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(r[i].res, -ECANCELED);
		ck_assert_int_eq(r[i].res2, -ECANCELED);
	}
	ck_assert_int_eq(m.res, -ECANCELED);
	ck_assert_uint_eq(iou_task_group_count(g), 0);
	/* members spawned after the cancel are not cancelled */
	ck_assert_int_eq(iou_task_group_spawn(g, sleep_member, &after, NULL), 0);
	ck_assert_int_eq(t_run_until(loop, &after.ended, 2000), 0);
	ck_assert_int_eq(after.res, 0);
	ck_assert_int_eq(iou_task_group_destroy(g), 0);
	for (int i = 0; i < 2; i++) {
		tsp_close_and_wait(loop, r[i].s);
		close(fd[i]);
	}
	t_loop_destroy(loop);
}
END_TEST

/* ---- destroy in every order --------------------------------------------- */

/* From the loop's side while members block: they are cancelled, the loop
 * runs until they ended, and the group goes with the last (no leak). */
START_TEST(test_destroy_while_members_run)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m[4] = { { .ms = 5000 }, { .ms = 5000 }, { .ms = 0 },
			       { .ms = 5000 } };
	iou_task_group *g;
	uint64_t t0;

	ck_assert_int_eq(iou_task_group_create(loop, &g), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(iou_task_group_spawn(g, sleep_member, &m[i],
						      NULL), 0);
	tsp_run_for(loop, 20);
	ck_assert_int_eq(m[2].ended, 1);
	ck_assert_int_eq(iou_task_group_destroy(g), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_loop_run(loop), 0); /* the members kept it alive */
	ck_assert_uint_lt(t_now_ms() - t0, 2000);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(m[i].ended, 1);
	ck_assert_int_eq(m[0].res, -ECANCELED);
	ck_assert_int_eq(m[3].res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Destroyed before any member ran: they run, cancelled from the start. */
START_TEST(test_destroy_before_members_ran)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m = { .ms = 5000 };
	iou_task_group *g;

	ck_assert_int_eq(iou_task_group_create(loop, &g), 0);
	ck_assert_int_eq(iou_task_group_spawn(g, sleep_member, &m, NULL), 0);
	ck_assert_int_eq(iou_task_group_destroy(g), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(m.ended, 1);
	ck_assert_int_eq(m.res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct nest {
	iou_task_group *g;
	struct member *sibling;
	int spawn_res, destroy_res, destroy2_res, sleep_res, spawned;
	int ended;
};

static void destroyer_member(void *arg)
{
	struct nest *n = arg;

	/* a member spawns a sibling, then destroys its own group */
	n->spawned = iou_task_group_spawn(n->g, sleep_member, n->sibling, NULL);
	ck_assert_int_eq(iou_task_sleep(10), 0);
	n->destroy_res = iou_task_group_destroy(n->g);
	n->destroy2_res = iou_task_group_destroy(n->g);
	n->spawn_res = iou_task_group_spawn(n->g, sleep_member, n->sibling,
					    NULL);
	n->sleep_res = iou_task_sleep(1000); /* cancelled with the group */
	n->ended = 1;
}

START_TEST(test_destroy_from_a_member)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member sib = { .ms = 5000 };
	struct nest n = { .sibling = &sib };

	ck_assert_int_eq(iou_task_group_create(loop, &n.g), 0);
	ck_assert_int_eq(iou_task_group_spawn(n.g, destroyer_member, &n, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(n.ended, 1);
	ck_assert_int_eq(n.spawned, 0);
	ck_assert_int_eq(n.destroy_res, 0);
	ck_assert_int_eq(n.destroy2_res, -EINVAL);
	ck_assert_int_eq(n.spawn_res, -ECANCELED);
	ck_assert_int_eq(n.sleep_res, -ECANCELED);
	ck_assert_int_eq(sib.ended, 1);
	ck_assert_int_eq(sib.res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct empty_log {
	iou_task_group *g;
	int calls;
	unsigned count_in_cb;
	int destroy_in_cb;
	struct member *again;   /* spawn it from the first call */
};

static void on_empty(iou_task_group *g, void *ud)
{
	struct empty_log *e = ud;

	ck_assert_ptr_eq(g, e->g);
	e->count_in_cb = iou_task_group_count(g);
	if (e->calls++ == 0 && e->again) {
		ck_assert_int_eq(iou_task_group_spawn(g, sleep_member, e->again,
						      NULL), 0);
		return;
	}
	if (e->destroy_in_cb)
		ck_assert_int_eq(iou_task_group_destroy(g), 0);
}

/* on_empty runs each time the last member ends, on the loop's stack; the
 * group can be refilled from it and destroyed from it. */
START_TEST(test_on_empty_refill_and_destroy)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member a = { .ms = 10 }, b = { .ms = 20 }, again = { .ms = 10 };
	struct empty_log e = { .again = &again, .destroy_in_cb = 1 };

	ck_assert_int_eq(iou_task_group_create(loop, &e.g), 0);
	ck_assert_int_eq(iou_task_group_on_empty(e.g, on_empty, &e), 0);
	ck_assert_int_eq(iou_task_group_spawn(e.g, sleep_member, &a, NULL), 0);
	ck_assert_int_eq(iou_task_group_spawn(e.g, sleep_member, &b, NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(e.calls, 2);
	ck_assert_uint_eq(e.count_in_cb, 0);
	ck_assert_int_eq(a.ended + b.ended + again.ended, 3);
	ck_assert_int_eq(again.res, 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A destroy while members run still calls on_empty when they ended (how
 * callback code learns the group is gone), then frees the group. */
START_TEST(test_on_empty_after_destroy)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member a = { .ms = 5000 };
	struct empty_log e = { 0 };

	ck_assert_int_eq(iou_task_group_create(loop, &e.g), 0);
	ck_assert_int_eq(iou_task_group_on_empty(e.g, on_empty, &e), 0);
	ck_assert_int_eq(iou_task_group_spawn(e.g, sleep_member, &a, NULL), 0);
	tsp_run_for(loop, 10);
	ck_assert_int_eq(iou_task_group_destroy(e.g), 0);
	ck_assert_int_eq(e.calls, 0); /* never from inside destroy */
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(e.calls, 1);
	ck_assert_int_eq(a.res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct timer_destroy {
	iou_task_group *g;
	int fired;
};

static void destroy_timer_cb(iou_timer *t, void *ud)
{
	struct timer_destroy *d = ud;

	(void)t;
	ck_assert_int_eq(iou_task_group_destroy(d->g), 0);
	d->fired = 1;
}

/* From a timer callback, with a task waiting for the group: the waiter
 * returns 0 after the members ended, and the group is freed after it. */
START_TEST(test_destroy_from_callback_with_waiter)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct member m[2] = { { .ms = 5000 }, { .ms = 5000 } };
	struct timer_destroy d = { 0 };
	struct waiter w = { .timeout_ms = -1 };

	ck_assert_int_eq(iou_task_group_create(loop, &d.g), 0);
	w.g = d.g;
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(iou_task_group_spawn(d.g, sleep_member, &m[i],
						      NULL), 0);
	ck_assert_int_eq(iou_task_spawn(loop, wait_main, &w, NULL, NULL), 0);
	ck_assert_int_eq(iou_timer_start(loop, 20, 0, destroy_timer_cb, &d,
					 NULL), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(d.fired, 1);
	ck_assert_int_eq(w.done, 1);
	ck_assert_int_eq(w.res, 0);
	ck_assert_int_eq(m[0].res, -ECANCELED);
	ck_assert_int_eq(m[1].res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Many members, each waiting on its own stream; the group is destroyed
 * with all of them blocked. */
START_TEST(test_destroy_many_blocked_readers)
{
	enum { N = 64 };
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct reader *r = calloc(N, sizeof(*r));
	int fds[N];
	iou_task_group *g;
	int ended = 0;

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(iou_task_group_create(loop, &g), 0);
	for (int i = 0; i < N; i++) {
		fds[i] = tsp_open_pair(loop, NULL, &r[i].s);
		ck_assert_int_eq(iou_task_group_spawn(g, read_member, &r[i], NULL),
				 0);
	}
	tsp_run_for(loop, 30);
	ck_assert_uint_eq(iou_task_group_count(g), N);
	ck_assert_int_eq(iou_task_group_destroy(g), 0);
	for (int i = 0; i < 200 && ended < N; i++) {
		ck_assert_int_ge(t_run_once(loop, 10), 0);
		ended = 0;
		for (int j = 0; j < N; j++)
			ended += r[j].ended;
	}
	ck_assert_int_eq(ended, N);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(r[i].res, -ECANCELED);
		tsp_close_and_wait(loop, r[i].s);
		close(fds[i]);
	}
	free(r);
	t_loop_destroy(loop);
}
END_TEST

#define BIG (8u << 20)
static unsigned char big[BIG];

struct writer {
	iou_stream *s;
	ssize_t res;
	int ended;
};

static void write_member(void *arg)
{
	struct writer *w = arg;

	w->res = iou_task_write_all(w->s, big, BIG, -1);
	w->ended = 1;
}

/* A member stuck in a write to a peer that never reads (no deadline): the
 * destroy's cancel still ends it, so the group goes and the loop can
 * stop. */
START_TEST(test_destroy_member_stuck_in_write)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct iou_stream_opts so;
	struct writer w = { 0 };
	iou_task_group *g;
	int fd, v = 4096;

	iou_stream_opts_init(&so);
	so.sndbuf = 4096;
	fd = tsp_open_pair(loop, &so, &w.s);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)), 0);
	ck_assert_int_eq(iou_task_group_create(loop, &g), 0);
	ck_assert_int_eq(iou_task_group_spawn(g, write_member, &w, NULL), 0);
	tsp_run_for(loop, 50);
	ck_assert_int_eq(w.ended, 0);
	ck_assert_int_eq(iou_task_group_destroy(g), 0);
	ck_assert_int_eq(t_run_until(loop, &w.ended, 3000), 0);
	ck_assert_int_eq(w.res, -ECANCELED);
	tsp_close_and_wait(loop, w.s);
	close(fd);
	t_loop_destroy(loop);
}
END_TEST

static Suite *group_suite(void)
{
	Suite *s = suite_create("task_group");
	TCase *tc;

	tc = tcase_create("wait");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_wait_for_every_member);
	tcase_add_test(tc, test_wait_on_empty_group);
	tcase_add_test(tc, test_wait_deadline_then_cancel);
	tcase_add_test(tc, test_cancelled_waiter);
	tcase_add_test(tc, test_misuse);
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_cancel_every_member);
	suite_add_tcase(s, tc);

	tc = tcase_create("destroy");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_destroy_while_members_run);
	tcase_add_test(tc, test_destroy_before_members_ran);
	tcase_add_test(tc, test_destroy_from_a_member);
	tcase_add_test(tc, test_on_empty_refill_and_destroy);
	tcase_add_test(tc, test_on_empty_after_destroy);
	tcase_add_test(tc, test_destroy_from_callback_with_waiter);
	tcase_add_test(tc, test_destroy_many_blocked_readers);
	tcase_add_test(tc, test_destroy_member_stuck_in_write);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(group_suite());
}
