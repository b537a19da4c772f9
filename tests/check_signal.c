/* SPDX-License-Identifier: MIT */
/*
 * Signal watchers: delivery as loop callbacks (raise(), kill() from this or
 * another thread, sigqueue(), an ignored signal), several signals and
 * watchers, stop before a delivery and from inside a callback,
 * start/stop/start, the signal mask, and how watchers weigh on
 * iou_loop_run() and iou_loop_destroy().
 *
 * Every test runs in its own forked child (Check), so masks and pending
 * signals do not leak between tests; with CK_FORK=no each test leaves the
 * mask as it found it.
 *
 * Focus: CK_RUN_CASE=stop ./tests/check_signal   Debug: CK_FORK=no
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"

struct seen {
	int calls;
	int signo;             /* of the last call */
	iou_signal *sig;       /* of the last call */
	void *ud;
	iou_signal *stop;      /* stopped from the callback (may be itself) */
	int stop_ret;
};

static void on_signal(iou_signal *sig, int signo, void *ud)
{
	struct seen *s = ud;

	s->calls++;
	s->signo = signo;
	s->sig = sig;
	s->ud = ud;
	if (s->stop) {
		s->stop_ret = iou_signal_stop(s->stop);
		s->stop = NULL;
	}
}

static iou_loop *small_loop(void)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	o.queue_depth = 8;
	o.buf_count = 8;
	return t_loop_create_or_skip(&o);
}

static int blocked(int signo)
{
	sigset_t cur;

	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	return sigismember(&cur, signo);
}

static void block(int signo, int how)
{
	sigset_t one;

	sigemptyset(&one);
	sigaddset(&one, signo);
	pthread_sigmask(how, &one, NULL);
}

/* A few turns of at most 20 ms, for "nothing happens" checks. */
static void spin(iou_loop *loop)
{
	for (int i = 0; i < 5; i++)
		ck_assert_int_ge(t_run_once(loop, 20), 0);
}

/* ======================================================================== */
/* deliver                                                                  */
/* ======================================================================== */

START_TEST(test_raise_delivers)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;

	ck_assert(!blocked(SIGUSR1));
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	ck_assert(blocked(SIGUSR1));
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(s.calls, 0); /* never synchronously */
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(s.calls, 1);
	ck_assert_int_eq(s.signo, SIGUSR1);
	ck_assert_ptr_eq(s.sig, sig);
	ck_assert_ptr_eq(s.ud, &s);
	/* Again: the watcher stays started. */
	ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
	ck_assert_int_eq(t_run_until_count(loop, &s.calls, 2, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(s.calls, 2);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	ck_assert(!blocked(SIGUSR1)); /* start blocked it, stop unblocks it */
	t_loop_destroy(loop);
}
END_TEST

/* Deliveries of a standard signal that are pending together are one. */
START_TEST(test_coalesced)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(s.calls, 1);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(test_two_signals)
{
	iou_loop *loop = small_loop();
	struct seen s1 = { 0 }, s2 = { 0 }, s1b = { 0 };
	iou_signal *sig1, *sig2, *sig1b;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s1, &sig1), 0);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR2, on_signal, &s2, &sig2), 0);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s1b, &sig1b), 0);
	ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
	ck_assert_int_eq(t_run_until(loop, &s2.calls, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(s1.calls + s1b.calls, 0);
	ck_assert_int_eq(s2.signo, SIGUSR2);
	ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &s1b.calls, T_TIMEOUT_MS), 0);
	spin(loop);
	/* Both watchers of SIGUSR1 ran, once each. */
	ck_assert_int_eq(s1.calls, 1);
	ck_assert_int_eq(s1b.calls, 1);
	ck_assert_int_eq(s2.calls, 1);
	ck_assert_ptr_eq(s1.sig, sig1);
	ck_assert_ptr_eq(s1b.sig, sig1b);
	/* One of two watchers stopped: the signal stays blocked. */
	ck_assert_int_eq(iou_signal_stop(sig1), 0);
	ck_assert(blocked(SIGUSR1));
	ck_assert_int_eq(iou_signal_stop(sig1b), 0);
	ck_assert(!blocked(SIGUSR1));
	ck_assert(blocked(SIGUSR2));
	ck_assert_int_eq(iou_signal_stop(sig2), 0);
	ck_assert(!blocked(SIGUSR2));
	t_loop_destroy(loop);
}
END_TEST

struct killer {
	int signo;
	unsigned delay_ms;
};

static void *kill_later(void *arg)
{
	struct killer *k = arg;
	struct timespec ts = { 0, (long)k->delay_ms * 1000000L };

	nanosleep(&ts, NULL);
	kill(getpid(), k->signo);
	return NULL;
}

/* A loop blocked in the kernel wakes for the signal; the thread that sends
 * it was created after start, so it inherited the blocked mask. */
START_TEST(test_kill_from_thread_wakes_loop)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	struct killer k = { SIGTERM, 50 };
	iou_signal *sig;
	pthread_t tid;

	ck_assert_int_eq(iou_signal_start(loop, SIGTERM, on_signal, &s, &sig), 0);
	ck_assert_int_eq(pthread_create(&tid, NULL, kill_later, &k), 0);
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(s.signo, SIGTERM);
	pthread_join(tid, NULL);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* stop                                                                     */
/* ======================================================================== */

/* Stopped before the loop read the delivery: the callback never runs.  The
 * caller had blocked the signal itself, so it stays blocked. */
START_TEST(test_stop_before_delivery)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;
	sigset_t one;
	struct timespec zero = { 0, 0 };

	block(SIGUSR1, SIG_BLOCK);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	ck_assert(blocked(SIGUSR1));
	/* The cancelled read is work until its completion. */
	ck_assert_int_eq(iou_loop_alive(loop), 1);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	spin(loop);
	ck_assert_int_eq(s.calls, 0);
	t_loop_destroy(loop);
	/* Consumed by the read or still pending: never delivered twice. */
	sigemptyset(&one);
	sigaddset(&one, SIGUSR1);
	sigtimedwait(&one, NULL, &zero);
	block(SIGUSR1, SIG_UNBLOCK);
}
END_TEST

/* Deliveries read in one completion: a callback that stops the other
 * watcher of the same signal, not run yet, keeps it from running. */
START_TEST(test_stop_other_in_callback)
{
	iou_loop *loop = small_loop();
	struct seen a = { 0 }, b = { 0 };
	iou_signal *sa, *sb;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &a, &sa), 0);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &b, &sb), 0);
	a.stop = sb;
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &a.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(a.stop_ret, 0);
	spin(loop);
	ck_assert_int_eq(b.calls, 0);
	ck_assert(blocked(SIGUSR1)); /* a still watches */
	ck_assert_int_eq(iou_signal_stop(sa), 0);
	ck_assert(!blocked(SIGUSR1));
	t_loop_destroy(loop);
}
END_TEST

/* A watcher stops itself from its callback: no more calls, the signal is
 * unblocked, and the loop drains and can be destroyed. */
START_TEST(test_stop_self_in_callback)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 }, other = { 0 };
	iou_signal *sig, *sig2;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR2, on_signal, &other, &sig2), 0);
	s.stop = sig;
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(raise(SIGUSR2), 0);
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(t_run_until(loop, &other.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(s.stop_ret, 0);
	ck_assert(!blocked(SIGUSR1));
	/* The other watcher still works. */
	ck_assert_int_eq(raise(SIGUSR2), 0);
	ck_assert_int_eq(t_run_until_count(loop, &other.calls, 2, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(s.calls, 1);
	other.stop = sig2;
	ck_assert_int_eq(raise(SIGUSR2), 0);
	ck_assert_int_eq(t_run_until_count(loop, &other.calls, 3, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(other.stop_ret, 0);
	t_loop_destroy(loop);
}
END_TEST

/* start, stop, start again in the same turn (the first read's cancel still
 * in flight), then after the loop let go of everything. */
START_TEST(test_start_stop_start)
{
	iou_loop *loop = small_loop();
	struct seen s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
	iou_signal *sig;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s1, &sig), 0);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s2, &sig), 0);
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &s2.calls, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(s1.calls, 0);
	ck_assert_int_eq(s2.calls, 1);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	ck_assert_int_eq(t_loop_drain(loop, T_TIMEOUT_MS), 0);
	ck_assert(!blocked(SIGUSR1));

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s3, &sig), 0);
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &s3.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(s3.calls, 1);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
}
END_TEST

/* A watcher started from a callback misses the delivery being handed out
 * and gets the next one. */
struct starter {
	struct seen s;
	iou_loop *loop;
	struct seen *late;
	iou_signal *late_sig;
};

static void start_another(iou_signal *sig, int signo, void *ud)
{
	struct starter *st = ud;

	on_signal(sig, signo, &st->s);
	if (!st->late_sig)
		ck_assert_int_eq(iou_signal_start(st->loop, signo, on_signal,
						  st->late, &st->late_sig), 0);
}

START_TEST(test_start_in_callback)
{
	iou_loop *loop = small_loop();
	struct seen late = { 0 };
	struct starter st = { .loop = loop, .late = &late };
	iou_signal *sig;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, start_another, &st, &sig), 0);
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &st.s.calls, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(late.calls, 0);
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &late.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(st.s.calls, 2);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	ck_assert_int_eq(iou_signal_stop(st.late_sig), 0);
	t_loop_destroy(loop);
}
END_TEST

/* ======================================================================== */
/* loop: run, alive, destroy                                                */
/* ======================================================================== */

static void on_timer_fired(iou_timer *t, void *ud)
{
	(void)t;
	*(int *)ud = 1;
}

/* Only a watcher left: run() returns (a timer shows it ran at all). */
START_TEST(test_run_returns_with_only_watcher)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;
	iou_timer *t;
	int fired = 0;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_timer_start(loop, 10, 0, on_timer_fired, &fired, &t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(fired, 1);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(s.calls, 0);
	/* Still started: a delivery after run() returned is not lost. */
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(test_destroy_ebusy)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;

	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, &sig), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	spin(loop); /* the read is submitted now */
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	/* The read's cancel is in flight: busy until run() saw it end. */
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	ck_assert_int_eq(s.calls, 0);
}
END_TEST

START_TEST(test_einval)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig = NULL;

	ck_assert_int_eq(iou_signal_start(NULL, SIGUSR1, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, NULL, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR1, on_signal, &s, NULL), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, 0, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, -1, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, SIGKILL, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, SIGSTOP, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, 65, on_signal, &s, &sig), -EINVAL);
	ck_assert_int_eq(iou_signal_start(loop, 1000, on_signal, &s, &sig), -EINVAL);
	/* glibc keeps 32 and 33 for its threads (SIGRTMIN is 34). */
	ck_assert_int_eq(iou_signal_start(loop, SIGRTMIN - 1, on_signal, &s, &sig), -EINVAL);
	ck_assert_ptr_null(sig);
	ck_assert_int_eq(iou_signal_stop(NULL), -EINVAL);
	ck_assert(!blocked(SIGUSR1));
	t_loop_destroy(loop); /* nothing was started */
}
END_TEST

/* A signal the process ignores (SIGINT of a background job) still comes:
 * the kernel queues a blocked signal whatever its disposition. */
START_TEST(test_ignored_signal_delivers)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;

	ck_assert(signal(SIGUSR2, SIG_IGN) != SIG_ERR);
	ck_assert_int_eq(iou_signal_start(loop, SIGUSR2, on_signal, &s, &sig), 0);
	ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
	ck_assert_int_eq(t_run_until(loop, &s.calls, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
	ck_assert(signal(SIGUSR2, SIG_DFL) == SIG_IGN); /* left as it was */
}
END_TEST

/* A real-time signal: each queued delivery is its own callback. */
START_TEST(test_realtime_queued)
{
	iou_loop *loop = small_loop();
	struct seen s = { 0 };
	iou_signal *sig;
	union sigval v = { 0 };

	ck_assert_int_eq(iou_signal_start(loop, SIGRTMIN, on_signal, &s, &sig), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(sigqueue(getpid(), SIGRTMIN, v), 0);
	ck_assert_int_eq(t_run_until_count(loop, &s.calls, 3, T_TIMEOUT_MS), 0);
	spin(loop);
	ck_assert_int_eq(s.calls, 3);
	ck_assert_int_eq(s.signo, SIGRTMIN);
	ck_assert_int_eq(iou_signal_stop(sig), 0);
	t_loop_destroy(loop);
}
END_TEST

static Suite *signal_suite(void)
{
	Suite *s = suite_create("signal");
	TCase *tc;

	tc = tcase_create("deliver");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_raise_delivers);
	tcase_add_test(tc, test_coalesced);
	tcase_add_test(tc, test_two_signals);
	tcase_add_test(tc, test_kill_from_thread_wakes_loop);
	tcase_add_test(tc, test_realtime_queued);
	tcase_add_test(tc, test_ignored_signal_delivers);
	suite_add_tcase(s, tc);

	tc = tcase_create("stop");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_stop_before_delivery);
	tcase_add_test(tc, test_stop_other_in_callback);
	tcase_add_test(tc, test_stop_self_in_callback);
	tcase_add_test(tc, test_start_stop_start);
	tcase_add_test(tc, test_start_in_callback);
	suite_add_tcase(s, tc);

	tc = tcase_create("loop");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_run_returns_with_only_watcher);
	tcase_add_test(tc, test_destroy_ebusy);
	tcase_add_test(tc, test_einval);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(signal_suite());
}
