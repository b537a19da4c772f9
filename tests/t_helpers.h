/* SPDX-License-Identifier: MIT */
/*
 * Shared helpers for the Check suites in tests/ (linked into every
 * tests/check_* binary).  Every helper that can fail does so with a Check
 * assertion, so call them only from inside a test (or a checked fixture),
 * except t_uring_available() and t_run_suite(), which are for main().
 *
 * Typical main():
 *
 *	int main(void) { return t_run_suite(loop_suite()); }
 */
#ifndef T_HELPERS_H
#define T_HELPERS_H

#include <stdbool.h>
#include <check.h>
#include <stdint.h>

#include "iou.h"

/* liburing's exit status for "skipped" (test/helpers.h T_EXIT_SKIP); the
 * Makefile's check target counts it as a skip. */
#define T_EXIT_SKIP 77

/* Default bound for t_run_until*() and t_loop_drain(), in ms. */
#define T_TIMEOUT_MS 5000

/* 1 if an iou loop can be created here, 0 if io_uring is unavailable or too
 * old (IOU_ENOURING, IOU_ENOFEATURE).  Probes in a forked child, so the
 * caller never holds a ring across Check's fork.  For main(). */
int t_uring_available(void);

/* main() body: returns T_EXIT_SKIP (with a note on stderr) when io_uring is
 * unavailable; otherwise runs the suite (verbosity from CK_VERBOSITY, fork
 * mode from CK_FORK) and returns 0 when every test passed, else 1. */
int t_run_suite(Suite *s);

/* iou_loop_create(opts) (opts may be NULL) or fail the test; if io_uring is
 * unavailable, exit(T_EXIT_SKIP) (reached only when t_run_suite() was not
 * used: it skips the whole binary first). */
iou_loop *t_loop_create_or_skip(const struct iou_loop_opts *opts);

/* For tests of io_uring's own machinery (its SQ, ring set-up, bundles):
 * true, with a note on stderr naming the test and why, when loops made
 * with the default options run on epoll (IOU_BACKEND=epoll, no io_uring
 * here); the test then returns. */
bool t_uring_only(const char *test, const char *why);
#define T_URING_ONLY(why) do { if (t_uring_only(__func__, why)) return; } while (0)

/* iou_loop_run_once(loop, timeout_ms), valgrind-aware: under valgrind the
 * wait is capped at 10 ms and followed by a 1 ms sleep, so that other
 * threads get valgrind's lock (see t_under_valgrind()).  Returns what
 * iou_loop_run_once() returned. */
int t_run_once(iou_loop *loop, int timeout_ms);

/* Run t_run_once(loop, 10) until *flag != 0; at most timeout_ms
 * of wall time (and a bounded number of turns).  Returns 0 when the flag was
 * set, -ETIMEDOUT otherwise; fails the test if a turn returns an error. */
int t_run_until(iou_loop *loop, const int *flag, int timeout_ms);

/* Same, until *count >= target. */
int t_run_until_count(iou_loop *loop, const int *count, int target,
		      int timeout_ms);

/* Run turns until iou_loop_alive() is 0 (bounded by timeout_ms); returns 0
 * or -ETIMEDOUT. */
int t_loop_drain(iou_loop *loop, int timeout_ms);

/* t_loop_drain(loop, T_TIMEOUT_MS), then iou_loop_destroy(); fails the test
 * unless both succeed. */
void t_loop_destroy(iou_loop *loop);

/* 1 when running under valgrind.  Valgrind 3.19 (Debian 12) keeps its big
 * lock while a thread is blocked in io_uring_enter, and hands it back
 * unfairly, so a loop waiting in the kernel starves every other thread of
 * the process (liburing issue #657).  Tests that need another thread (a
 * poster, the resolver) to run while the loop waits should wait with
 * t_run_once() / t_run_until*() rather than iou_loop_run_once(loop, -1) or
 * iou_loop_run() with only far timers. */
int t_under_valgrind(void);

/* Monotonic clock in milliseconds. */
uint64_t t_now_ms(void);

/* A listening TCP socket on 127.0.0.1, port 0 (the kernel picks a free
 * one); *port gets that port.  Returns the fd (blocking, CLOEXEC). */
int t_listen_ephemeral(uint16_t *port);

/* A blocking TCP client socket connected to 127.0.0.1:port. */
int t_connect_loopback(uint16_t port);

/* A connected pair of TCP sockets over loopback: fds[0] the client side,
 * fds[1] the accepted side; both blocking and CLOEXEC. */
void t_tcp_pair(int fds[2]);

/* Number of open file descriptors of this process (/proc/self/fd), to check
 * that a test closed every fd it opened. */
int t_fd_count(void);

#endif /* T_HELPERS_H */
