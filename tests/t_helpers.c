/* SPDX-License-Identifier: MIT */
/* Shared test helpers; see t_helpers.h. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t_helpers.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define T_HAVE_VALGRIND_H 1
#endif
#endif

int t_uring_available(void)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return 1; /* cannot tell: let the tests find out */
	if (pid == 0) {
		iou_loop *loop;
		struct iou_loop_opts o;
		int ret;

		iou_loop_opts_init(&o);
		o.queue_depth = 8;
		o.buf_count = 8;
		ret = iou_loop_create(&loop, &o);
		if (ret == 0)
			iou_loop_destroy(loop);
		_exit(ret == -IOU_ENOURING || ret == -IOU_ENOFEATURE ? 1 : 0);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return !(WIFEXITED(status) && WEXITSTATUS(status) == 1);
}

int t_run_suite(Suite *s)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(s); /* owns s from here on */
	if (!t_uring_available()) {
		fprintf(stderr, "SKIP: %s\n", iou_strerror(-IOU_ENOURING));
		srunner_free(sr);
		return T_EXIT_SKIP;
	}
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

bool t_uring_only(const char *test, const char *why)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	bool epoll = strcmp(iou_loop_backend(loop), "epoll") == 0;

	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	if (epoll)
		fprintf(stderr, "note: %s skipped on epoll: io_uring only (%s)\n",
			test, why);
	return epoll;
}

iou_loop *t_loop_create_or_skip(const struct iou_loop_opts *opts)
{
	struct iou_loop_opts o;
	const char *extra = getenv("IOU_TEST_LOOP_FLAGS");
	iou_loop *loop = NULL;
	int ret;

	/* Runs the same suite on the fallback paths (kill switches). */
	if (opts)
		o = *opts;
	else
		iou_loop_opts_init(&o);
	if (extra)
		o.flags |= (unsigned)strtoul(extra, NULL, 0);
	ret = iou_loop_create(&loop, &o);

	if (ret == -IOU_ENOURING || ret == -IOU_ENOFEATURE) {
		fprintf(stderr, "SKIP: %s\n", iou_strerror(ret));
		exit(T_EXIT_SKIP);
	}
	ck_assert_msg(ret == 0, "iou_loop_create: %s", iou_strerror(ret));
	ck_assert_ptr_nonnull(loop);
	return loop;
}

int t_under_valgrind(void)
{
	static int cached = -1;
	const char *preload;

	if (cached >= 0)
		return cached;
#ifdef T_HAVE_VALGRIND_H
	if (RUNNING_ON_VALGRIND)
		return cached = 1;
#endif
	preload = getenv("LD_PRELOAD");
	return cached = (preload && strstr(preload, "vgpreload") != NULL);
}

uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

enum { UNTIL_IDLE, UNTIL_NONZERO, UNTIL_AT_LEAST };

int t_run_once(iou_loop *loop, int timeout_ms)
{
	int ret;

	if (!t_under_valgrind())
		return iou_loop_run_once(loop, timeout_ms);
	if (timeout_ms < 0 || timeout_ms > 10)
		timeout_ms = 10;
	ret = iou_loop_run_once(loop, timeout_ms);
	usleep(1000); /* a blocking syscall: valgrind lets others run */
	return ret;
}

/* Turns of at most 10 ms each; the turn cap is a second bound in case the
 * clock misbehaves (each turn either waits or handles something). */
static int run_bounded(iou_loop *loop, int mode, const int *v, int target,
		       int timeout_ms)
{
	uint64_t end = t_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	long turns = 0, max_turns = (long)timeout_ms * 100 + 1000;

	for (;;) {
		bool done;
		int ret;

		switch (mode) {
		case UNTIL_NONZERO:
			done = *v != 0;
			break;
		case UNTIL_AT_LEAST:
			done = *v >= target;
			break;
		default:
			done = !iou_loop_alive(loop);
			break;
		}
		if (done)
			return 0;
		if (t_now_ms() >= end || turns++ >= max_turns)
			return -ETIMEDOUT;
		ret = t_run_once(loop, 10);
		ck_assert_msg(ret >= 0, "iou_loop_run_once: %s",
			      iou_strerror(ret));
	}
}

int t_run_until(iou_loop *loop, const int *flag, int timeout_ms)
{
	return run_bounded(loop, UNTIL_NONZERO, flag, 0, timeout_ms);
}

int t_run_until_count(iou_loop *loop, const int *count, int target,
		      int timeout_ms)
{
	return run_bounded(loop, UNTIL_AT_LEAST, count, target, timeout_ms);
}

int t_loop_drain(iou_loop *loop, int timeout_ms)
{
	return run_bounded(loop, UNTIL_IDLE, NULL, 0, timeout_ms);
}

void t_loop_destroy(iou_loop *loop)
{
	int ret;

	ck_assert_msg(t_loop_drain(loop, T_TIMEOUT_MS) == 0,
		      "loop still alive after %d ms", T_TIMEOUT_MS);
	ret = iou_loop_destroy(loop);
	ck_assert_msg(ret == 0, "iou_loop_destroy: %s", iou_strerror(ret));
}

int t_listen_ephemeral(uint16_t *port)
{
	struct sockaddr_in sa = { 0 };
	socklen_t len = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = 0;
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 128), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	if (port)
		*port = ntohs(sa.sin_port);
	return fd;
}

int t_connect_loopback(uint16_t port)
{
	struct sockaddr_in sa = { 0 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
		      "connect 127.0.0.1:%u: errno %d", (unsigned)port, errno);
	return fd;
}

void t_tcp_pair(int fds[2])
{
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);

	fds[0] = t_connect_loopback(port);
	fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(fds[1], 0);
	close(lfd);
}

int t_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}
