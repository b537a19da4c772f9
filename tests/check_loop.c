/* SPDX-License-Identifier: MIT */
/*
 * The loop: creation and options, running and stopping, timers, posts from
 * other threads, and the ring engine underneath (SQE flushing, cancellation
 * and draining), plus iou_strerror() and iou_version().
 *
 * Focus: CK_RUN_CASE=timers ./tests/check_loop   Debug: CK_FORK=no
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "uring.h" /* the engine underneath */
#include "internal.h" /* the streams on it */
#include "t_helpers.h"

static struct iou_loop_opts small_opts(void)
{
	struct iou_loop_opts o;

	iou_loop_opts_init(&o);
	o.queue_depth = 8;
	o.buf_count = 8;
	return o;
}

static iou_loop *small_loop(void)
{
	struct iou_loop_opts o = small_opts();

	return t_loop_create_or_skip(&o);
}

/* ======================================================================== */
/* create: options, destroy                                                 */
/* ======================================================================== */

START_TEST(test_opts_init_defaults)
{
	struct iou_loop_opts o;

	memset(&o, 0xa5, sizeof(o));
	iou_loop_opts_init(&o);
	ck_assert_uint_eq(o.queue_depth, 512);
	ck_assert_uint_eq(o.buf_size, 16384);
	ck_assert_uint_eq(o.buf_count, 1024);
	ck_assert_uint_eq(o.flags, 0);
	iou_loop_opts_init(NULL); /* no crash */
}
END_TEST

START_TEST(test_create_default)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);

	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_uint_eq(loop->pool.buf_size, 16384);
	ck_assert_uint_eq(loop->bufs.buf_count, 1024);
	if (strcmp(iou_loop_backend(loop), "io_uring") == 0)
		ck_assert_uint_ge(iou__uring(loop)->ring.sq.ring_entries, 512);
	ck_assert_uint_gt(iou_loop_now(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* The edges of every documented range are accepted. */
START_TEST(test_create_custom)
{
	static const struct {
		unsigned depth, size, count;
	} cases[] = {
		{ 1, 64, 1 },
		{ 8, 1u << 20, 1 },
		{ 100, 1000, 2 },
		{ 32768, 64, 32768 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct iou_loop_opts o;
		iou_loop *loop = NULL;
		int ret;

		iou_loop_opts_init(&o);
		o.queue_depth = cases[i].depth;
		o.buf_size = cases[i].size;
		o.buf_count = cases[i].count;
		ret = iou_loop_create(&loop, &o);
		ck_assert_msg(ret == 0, "depth %u size %u count %u: %s",
			      o.queue_depth, o.buf_size, o.buf_count,
			      iou_strerror(ret));
		if (strcmp(iou_loop_backend(loop), "io_uring") == 0)
			ck_assert_uint_ge(iou__uring(loop)->ring.sq.ring_entries,
					  o.queue_depth);
		ck_assert_uint_eq(loop->pool.buf_size, o.buf_size);
		ck_assert_uint_eq(loop->bufs.buf_count, o.buf_count);
		ck_assert_int_eq(iou_loop_alive(loop), 0);
		ck_assert_int_eq(iou_loop_destroy(loop), 0);
	}
}
END_TEST

START_TEST(test_create_einval)
{
	static const struct {
		unsigned depth, size, count, flags;
	} bad[] = {
		{ 0, 4096, 2048, 0 },          /* queue_depth 0 */
		{ 40000, 4096, 2048, 0 },      /* queue_depth > 32768 */
		{ 32769, 4096, 2048, 0 },
		{ 512, 0, 2048, 0 },           /* buf_size 0 */
		{ 512, 63, 2048, 0 },          /* buf_size < 64 */
		{ 512, (1u << 20) + 1, 2048, 0 }, /* buf_size > 1 MiB */
		{ 512, 4096, 0, 0 },           /* buf_count 0 */
		{ 512, 4096, 3, 0 },           /* not a power of two */
		{ 512, 4096, 1000, 0 },
		{ 512, 4096, 65536, 0 },       /* > 32768 */
		{ 512, 4096, 2048, 0x4 },      /* unknown flag */
		{ 512, 4096, 2048, 0x80000000u },
	};
	iou_loop *sentinel = (iou_loop *)(uintptr_t)0x1234;

	ck_assert_int_eq(iou_loop_create(NULL, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct iou_loop_opts o = {
			.queue_depth = bad[i].depth,
			.buf_size = bad[i].size,
			.buf_count = bad[i].count,
			.flags = bad[i].flags,
		};
		iou_loop *loop = sentinel;

		ck_assert_msg(iou_loop_create(&loop, &o) == -EINVAL,
			      "case %zu accepted", i);
		ck_assert_ptr_eq(loop, sentinel); /* *out untouched */
		ck_assert_int_eq(iou_loop_create(NULL, &o), -EINVAL);
	}
}
END_TEST

START_TEST(test_destroy_null)
{
	ck_assert_int_eq(iou_loop_destroy(NULL), -EINVAL);
	/* The other entry points tolerate NULL too. */
	ck_assert_int_eq(iou_loop_alive(NULL), 0);
	ck_assert_uint_eq(iou_loop_now(NULL), 0);
	ck_assert_int_eq(iou_loop_run(NULL), -EINVAL);
	ck_assert_int_eq(iou_loop_run_once(NULL, 0), -EINVAL);
	iou_loop_stop(NULL);
}
END_TEST

static void noop_timer_cb(iou_timer *t, void *ud)
{
	(void)t;
	(void)ud;
}

static void count_timer_cb(iou_timer *t, void *ud)
{
	(void)t;
	(*(int *)ud)++;
}

static void noop_post(void *ud)
{
	(void)ud;
}

START_TEST(test_destroy_busy_timer)
{
	iou_loop *loop = small_loop();
	iou_timer *t;

	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 1);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	/* Still usable after the refusal. */
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

START_TEST(test_destroy_busy_post)
{
	iou_loop *loop = small_loop();

	ck_assert_int_eq(iou_loop_post(loop, noop_post, NULL), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 1);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void destroy_inside_post(void *ud)
{
	iou_loop *loop = ud;

	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);
}

START_TEST(test_destroy_inside_callback)
{
	iou_loop *loop = small_loop();

	ck_assert_int_eq(iou_loop_post(loop, destroy_inside_post, loop), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Destroy while a wake-up is pending is prompt: here iou_loop_stop() (from a
 * posted callback) wrote the eventfd after the wake read was re-armed, so the
 * read destroy cancels completes with data instead of -ECANCELED. */
static void stop_post(void *ud);

START_TEST(test_destroy_wake_pending)
{
	iou_loop *loop = small_loop();
	uint64_t t0;

	ck_assert_int_eq(iou_loop_post(loop, stop_post, loop), 0);
	ck_assert_int_eq(iou_loop_run(loop), 1);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
}
END_TEST

/* Whether this kernel accepts DEFER_TASKRUN at all (6.1+). */
static bool kernel_has_defer_taskrun(void)
{
	struct io_uring ring;
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	if (io_uring_queue_init_params(4, &ring, &p) < 0)
		return false;
	io_uring_queue_exit(&ring);
	return true;
}

struct mini_work {
	int timer_fired;
	int posted;
};

static void mini_timer(iou_timer *t, void *ud)
{
	(void)t;
	((struct mini_work *)ud)->timer_fired++;
}

static void mini_post(void *ud)
{
	((struct mini_work *)ud)->posted++;
}

/* A timer and a post go through a loop: it works end to end. */
static void exercise(iou_loop *loop)
{
	struct mini_work w = { 0 };
	iou_timer *t;

	ck_assert_int_eq(iou_timer_start(loop, 1, 0, mini_timer, &w, &t), 0);
	ck_assert_int_eq(iou_loop_post(loop, mini_post, &w), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(w.timer_fired, 1);
	ck_assert_int_eq(w.posted, 1);
}

START_TEST(test_no_defer_taskrun)
{
	T_URING_ONLY("a ring set-up flag");
	struct iou_loop_opts o = small_opts();
	iou_loop *loop;

	o.flags = IOU_LOOP_NO_DEFER_TASKRUN;
	loop = t_loop_create_or_skip(&o);
	ck_assert_uint_eq(iou__uring(loop)->setup_flags & IORING_SETUP_DEFER_TASKRUN, 0);
	ck_assert_uint_eq(iou__uring(loop)->ring.flags & IORING_SETUP_DEFER_TASKRUN, 0);
	exercise(loop);
	t_loop_destroy(loop);

	/* Without the kill switch the loop asks for it where it exists. */
	loop = small_loop();
	if (kernel_has_defer_taskrun())
		ck_assert_uint_ne(iou__uring(loop)->setup_flags & IORING_SETUP_DEFER_TASKRUN, 0);
	exercise(loop);
	t_loop_destroy(loop);
}
END_TEST

/* Creating and destroying many loops leaks neither fds nor memory. */
START_TEST(test_create_destroy_repeated)
{
	int fds = t_fd_count();

	for (int i = 0; i < 50; i++) {
		iou_loop *loop = small_loop();

		exercise(loop);
		ck_assert_int_eq(iou_loop_destroy(loop), 0);
	}
	ck_assert_int_eq(t_fd_count(), fds);
}
END_TEST

/* Seccomp filters are arch-specific: build one only where we know the arch. */
#if defined(__x86_64__)
#define T_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define T_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Child exit status bits for test_create_seccomp. */
#define SC_WRONG_ERR 0x01  /* iou_loop_create returned another value */
#define SC_NO_WORDS 0x02   /* iou_strerror() of it was empty */
#define SC_FD_LEAK 0x04    /* the failed create left an fd open */
#define SC_NO_FALLBACK 0x08 /* AUTO gave no working loop on epoll */
#define SC_NO_SECCOMP 0x40 /* the filter could not be installed */

#ifdef T_AUDIT_ARCH
/* In a forked child only: the filter can never be lifted again.  Every
 * syscall of another arch or number is allowed. */
static int deny_syscall(long nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, T_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = (unsigned short)(sizeof(f) / sizeof(f[0])),
		.filter = f,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		return -errno;
	return 0;
}

/* The lowest free fd: a leaked fd would take it. */
static int lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd >= 0)
		close(fd);
	return fd;
}

/* Never returns; no Check call in here (with CK_FORK=no a failed assertion
 * would unwind into the suite runner's copy in this child). */
static void seccomp_child(long nr, int err, int want)
{
	struct iou_loop_opts o = small_opts();
	iou_loop *loop = NULL;
	const char *words;
	int ret, fd0, status = 0;

	if (deny_syscall(nr, err) < 0)
		_exit(SC_NO_SECCOMP);
	fd0 = lowest_free_fd();
	o.backend = IOU_BACKEND_URING;
	ret = iou_loop_create(&loop, &o);
	words = iou_strerror(ret);
	if (ret != want) {
		status |= SC_WRONG_ERR;
		fprintf(stderr, "syscall %ld -> %s: iou_loop_create = %d, "
			"wanted %d\n", nr, strerror(err), ret, want);
	}
	if (!words || !words[0])
		status |= SC_NO_WORDS;
	if (ret < 0 && lowest_free_fd() != fd0)
		status |= SC_FD_LEAK;
	/* AUTO runs on epoll there, and the loop works. */
	unsetenv("IOU_BACKEND");
	o.backend = IOU_BACKEND_AUTO;
	loop = NULL;
	ret = iou_loop_create(&loop, &o);
	if (ret != 0 || strcmp(iou_loop_backend(loop), "epoll") != 0 ||
	    iou_loop_run_once(loop, 0) < 0 || iou_loop_destroy(loop) != 0) {
		status |= SC_NO_FALLBACK;
		fprintf(stderr, "syscall %ld -> %s: AUTO: iou_loop_create = %d "
			"(%s)\n", nr, strerror(err), ret,
			ret ? iou_strerror(ret) : iou_loop_backend(loop));
	}
	_exit(status);
}

/* waitpid() with a bound; kills the child when it is over. */
static int wait_bounded(pid_t pid, int *status, int timeout_ms)
{
	uint64_t end = t_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (t_now_ms() >= end) {
			kill(pid, SIGKILL);
			while (waitpid(pid, status, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		usleep(2000);
	}
}
#endif /* T_AUDIT_ARCH */

/* A seccomp filter that blocks any one of the three io_uring syscalls
 * (Docker's default profile, systemd's SystemCallFilter=) makes
 * iou_loop_create fail with IOU_ENOURING on IOU_BACKEND_URING, not with
 * "kernel too old" nor with a loop that fails on its first run.  A probe
 * the kernel does not know (-EINVAL, before 5.6) still reads as too old.
 * With AUTO, each gives a working loop on epoll instead. */
START_TEST(test_create_seccomp)
{
#ifdef T_AUDIT_ARCH
	static const struct {
		long nr;
		const char *name;
		int err, want;
	} cases[] = {
		{ __NR_io_uring_setup, "io_uring_setup", EPERM, -IOU_ENOURING },
		{ __NR_io_uring_setup, "io_uring_setup", ENOSYS, -IOU_ENOURING },
		{ __NR_io_uring_enter, "io_uring_enter", EPERM, -IOU_ENOURING },
		{ __NR_io_uring_enter, "io_uring_enter", ENOSYS, -IOU_ENOURING },
		{ __NR_io_uring_register, "io_uring_register", EPERM,
		  -IOU_ENOURING },
		{ __NR_io_uring_register, "io_uring_register", ENOSYS,
		  -IOU_ENOURING },
		{ __NR_io_uring_register, "io_uring_register", EINVAL,
		  -IOU_ENOFEATURE },
	};
	char bad[1024] = "";
	size_t len = 0;
	struct iou_loop_opts o = small_opts();
	iou_loop *loop;

	/* Each case blocks one syscall, the others must work. */
	o.backend = IOU_BACKEND_URING;
	if (iou_loop_create(&loop, &o) < 0) {
		fprintf(stderr, "note: no io_uring here; test_create_seccomp "
			"skipped\n");
		return;
	}
	iou_loop_destroy(loop);

	/* Every case runs, so one report names all that fail. */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int status, ret, code;
		pid_t pid;

		/* Check's own fork is not enough: with CK_FORK=no the filter
		 * would stay on the rest of the suite. */
		fflush(NULL);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			seccomp_child(cases[i].nr, cases[i].err, cases[i].want);
		ret = wait_bounded(pid, &status, 20000);
		ck_assert_msg(ret == 0, "%s blocked: child %s", cases[i].name,
			      strerror(-ret));
		ck_assert_msg(WIFEXITED(status), "%s blocked: child died",
			      cases[i].name);
		code = WEXITSTATUS(status);
		if (code == SC_NO_SECCOMP) {
			fprintf(stderr, "note: seccomp filters unavailable here; "
				"test_create_seccomp skipped\n");
			return;
		}
		/* The child printed what it got on stderr. */
		if (code && len < sizeof(bad))
			len += (size_t)snprintf(bad + len, sizeof(bad) - len,
				"[%s -> %s:%s%s%s%s]", cases[i].name,
				strerror(cases[i].err),
				code & SC_WRONG_ERR ? " not the wanted error" : "",
				code & SC_NO_FALLBACK ? " no epoll fallback" : "",
				code & SC_NO_WORDS ? " empty iou_strerror" : "",
				code & SC_FD_LEAK ? " fd leaked" : "");
	}
	ck_assert_msg(bad[0] == '\0', "%s", bad);
#else
	fprintf(stderr, "note: no seccomp arch for this CPU; test skipped\n");
#endif
}
END_TEST

/* ======================================================================== */
/* run: run, run_once, stop                                                 */
/* ======================================================================== */

START_TEST(test_run_no_work)
{
	iou_loop *loop = small_loop();
	uint64_t t0 = t_now_ms();

	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_uint_lt(t_now_ms() - t0, 500);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct stopper {
	iou_loop *loop;
	int fired;
	int stop_at;
};

static void stop_timer_cb(iou_timer *t, void *ud)
{
	struct stopper *s = ud;

	(void)t;
	if (++s->fired == s->stop_at)
		iou_loop_stop(s->loop);
}

START_TEST(test_stop_from_callback)
{
	iou_loop *loop = small_loop();
	struct stopper s = { .loop = loop, .stop_at = 3 };
	iou_timer *t;

	ck_assert_int_eq(iou_timer_start(loop, 1, 1, stop_timer_cb, &s, &t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 1);
	ck_assert_int_eq(s.fired, 3);
	/* The stop was consumed: run again, stop again. */
	s.stop_at = 5;
	ck_assert_int_eq(iou_loop_run(loop), 1);
	ck_assert_int_eq(s.fired, 5);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void stop_post(void *ud)
{
	iou_loop_stop(ud);
}

START_TEST(test_stop_from_post)
{
	iou_loop *loop = small_loop();
	iou_timer *t;

	/* A far timer keeps the loop alive: only the stop ends run(). */
	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	ck_assert_int_eq(iou_loop_post(loop, stop_post, loop), 0);
	ck_assert_int_eq(iou_loop_run(loop), 1);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A stop is one request: the run_once turn that takes it returns at once,
 * and the next run_once(-1) blocks again (it used to return at once for
 * ever, spinning until the 300 ms timer fired). */
START_TEST(test_stop_then_run_once_blocks)
{
	iou_loop *loop = small_loop();
	uint64_t t0 = t_now_ms();
	long turns = 0;
	int fired = 0;
	iou_timer *t;

	ck_assert_int_eq(iou_timer_start(loop, 300, 0, count_timer_cb, &fired,
					 &t), 0);
	iou_loop_stop(loop);
	ck_assert_int_ge(iou_loop_run_once(loop, -1), 0);
	ck_assert_uint_lt(t_now_ms() - t0, 250); /* the stop ended the wait */
	while (!fired && turns < 10000000 && t_now_ms() - t0 < 5000) {
		ck_assert_int_ge(iou_loop_run_once(loop, -1), 0);
		turns++;
	}
	ck_assert_int_eq(fired, 1);
	ck_assert_msg(turns <= 5, "%ld turns before the timer fired", turns);
	ck_assert_uint_ge(t_now_ms() - t0, 290);
	/* Consumed: run() finds no request left and runs out of work. */
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* From a callback: the run_once turn that runs it takes the request. */
START_TEST(test_stop_inside_run_once)
{
	iou_loop *loop = small_loop();
	struct stopper s = { .loop = loop, .stop_at = 1 };
	iou_timer *t;
	int fired = 0;
	uint64_t t0;

	ck_assert_int_eq(iou_timer_start(loop, 0, 0, stop_timer_cb, &s, &t), 0);
	ck_assert_int_eq(t_run_until(loop, &s.fired, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(iou_timer_start(loop, 200, 0, count_timer_cb, &fired,
					 &t), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_loop_run_once(loop, -1), 1);
	ck_assert_int_eq(fired, 1);
	ck_assert_uint_ge(t_now_ms() - t0, 190);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

START_TEST(test_run_once_timeout_zero)
{
	iou_loop *loop = small_loop();
	iou_timer *t;
	uint64_t t0;

	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	t0 = t_now_ms();
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(iou_loop_run_once(loop, 0), 0);
	ck_assert_uint_lt(t_now_ms() - t0, 200);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A positive timeout waits about that long when nothing happens. */
START_TEST(test_run_once_timeout_waits)
{
	iou_loop *loop = small_loop();
	uint64_t t0 = t_now_ms(), dt;

	ck_assert_int_eq(iou_loop_run_once(loop, 50), 0);
	dt = t_now_ms() - t0;
	ck_assert_uint_ge(dt, 45);
	ck_assert_uint_lt(dt, 1000);
	ck_assert_uint_ge(iou_loop_now(loop), t0 + 45);
	ck_assert_int_eq(iou_loop_run_once(loop, -2), -EINVAL);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void reenter_post(void *ud)
{
	iou_loop *loop = ud;

	ck_assert_int_eq(iou_loop_run_once(loop, 0), -EBUSY);
}

START_TEST(test_run_once_reentry)
{
	iou_loop *loop = small_loop();

	ck_assert_int_eq(iou_loop_post(loop, reenter_post, loop), 0);
	/* >= 1: the count includes the loop's own wake-up completion. */
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 1);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ======================================================================== */
/* timers                                                                   */
/* ======================================================================== */

#define MAX_LOG 2048

struct tlog {
	int n;
	intptr_t order[MAX_LOG];
};

struct tctx {
	struct tlog *log;
	intptr_t id;
};

static void log_timer_cb(iou_timer *t, void *ud)
{
	struct tctx *c = ud;

	(void)t;
	ck_assert_int_lt(c->log->n, MAX_LOG);
	c->log->order[c->log->n++] = c->id;
}

/* Timers that expire in one turn fire in deadline order. */
START_TEST(test_timer_deadline_order)
{
	static const unsigned after[] = { 30, 10, 40, 0, 20 };
	static const intptr_t expect[] = { 3, 1, 4, 0, 2 };
	enum { N = sizeof(after) / sizeof(after[0]) };
	iou_loop *loop = small_loop();
	struct tlog log = { 0 };
	struct tctx ctx[N];
	iou_timer *t;

	for (int i = 0; i < N; i++) {
		ctx[i] = (struct tctx){ &log, i };
		ck_assert_int_eq(iou_timer_start(loop, after[i], 0, log_timer_cb,
						 &ctx[i], &t), 0);
	}
	usleep(80 * 1000); /* all expired before the turn */
	ck_assert_int_eq(iou_loop_run_once(loop, 0), N);
	ck_assert_int_eq(log.n, N);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(log.order[i], expect[i]);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Timers with equal delays (equal deadlines, or later-started ones later)
 * fire in start order, also when running the loop normally. */
START_TEST(test_timer_start_order)
{
	enum { N = 200 };
	iou_loop *loop = small_loop();
	struct tlog log = { 0 };
	struct tctx *ctx = calloc(N, sizeof(*ctx));
	iou_timer *t;

	ck_assert_ptr_nonnull(ctx);
	for (int i = 0; i < N; i++) {
		ctx[i] = (struct tctx){ &log, i };
		ck_assert_int_eq(iou_timer_start(loop, 5, 0, log_timer_cb,
						 &ctx[i], &t), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &log.n, N, T_TIMEOUT_MS), 0);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(log.order[i], i);
	t_loop_destroy(loop);
	free(ctx);
}
END_TEST

/* A timer never fires from inside iou_timer_start(), even with delay 0. */
START_TEST(test_timer_zero_not_synchronous)
{
	iou_loop *loop = small_loop();
	struct tlog log = { 0 };
	struct tctx c = { &log, 7 };
	iou_timer *t;

	ck_assert_int_eq(iou_timer_start(loop, 0, 0, log_timer_cb, &c, &t), 0);
	ck_assert_int_eq(log.n, 0);
	ck_assert_int_eq(iou_loop_run_once(loop, 0), 1);
	ck_assert_int_eq(log.n, 1);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* The heap under churn: random deadlines and removals, via the internal
 * timers; expiry order must be (deadline, start order). */
struct itimer {
	struct iou__timer t;
	int id;
	uint64_t deadline;
};

static struct itimer *fired_log[4096];
static int fired_n;

static void itimer_fire(struct iou__timer *t)
{
	fired_log[fired_n++] = IOU__CONTAINER_OF(t, struct itimer, t);
}

START_TEST(test_timer_heap_churn)
{
	enum { N = 4000 };
	iou_loop *loop = small_loop();
	struct itimer *it = calloc(N, sizeof(*it));
	bool *removed = calloc(N, sizeof(*removed));
	uint64_t base = loop->now;
	int expected = 0;

	ck_assert_ptr_nonnull(it);
	ck_assert_ptr_nonnull(removed);
	srand(12345);
	fired_n = 0;
	for (int i = 0; i < N; i++) {
		iou__timer_init(&it[i].t, itimer_fire);
		it[i].id = i;
		it[i].deadline = base - 1000 + (uint64_t)(rand() % 500);
		ck_assert_int_eq(iou__timer_arm(loop, &it[i].t, it[i].deadline), 0);
		/* Remove and re-arm some as we go. */
		if (i > 10 && rand() % 4 == 0) {
			int j = rand() % i;

			iou__timer_disarm(loop, &it[j].t);
			ck_assert(!iou__timer_active(&it[j].t));
			removed[j] = true;
		}
	}
	for (int i = 0; i < N; i++)
		expected += !removed[i];
	ck_assert_uint_eq(loop->heap_len, (unsigned)expected);
	ck_assert_int_eq(iou__timers_next_ms(loop), 0);
	ck_assert_int_eq(iou__timers_run(loop), expected);
	ck_assert_int_eq(fired_n, expected);
	for (int i = 1; i < fired_n; i++) {
		struct itimer *a = fired_log[i - 1], *b = fired_log[i];

		ck_assert(a->deadline < b->deadline ||
			  (a->deadline == b->deadline && a->t.seq < b->t.seq));
	}
	ck_assert_int_eq(iou__timers_next_ms(loop), -1);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	free(it);
	free(removed);
}
END_TEST

struct rep {
	iou_loop *loop;
	int fired;
	int limit;
	uint64_t first, last;
};

static void rep_cb(iou_timer *t, void *ud)
{
	struct rep *r = ud;

	if (r->fired++ == 0)
		r->first = t_now_ms();
	r->last = t_now_ms();
	if (r->fired == r->limit)
		ck_assert_int_eq(iou_timer_cancel(t), 0);
}

/* A repeating timer repeats at its period until cancelled, here from its
 * own callback. */
START_TEST(test_timer_repeat_cancel_inside)
{
	iou_loop *loop = small_loop();
	struct rep r = { .loop = loop, .limit = 5 };
	iou_timer *t;
	uint64_t t0 = t_now_ms();

	ck_assert_int_eq(iou_timer_start(loop, 5, 10, rep_cb, &r, &t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0); /* ends: cancelled */
	ck_assert_int_eq(r.fired, 5);
	ck_assert_uint_ge(r.first - t0, 4);
	ck_assert_uint_ge(r.last - r.first, 4 * 10 - 4);
	ck_assert_uint_lt(r.last - r.first, 2000);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static void oneshot_cancel_cb(iou_timer *t, void *ud)
{
	int *n = ud;

	(*n)++;
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	/* Twice is an error, not a double free. */
	ck_assert_int_eq(iou_timer_cancel(t), -EINVAL);
}

START_TEST(test_timer_oneshot_cancel_inside)
{
	iou_loop *loop = small_loop();
	iou_timer *t;
	int n = 0;

	ck_assert_int_eq(iou_timer_start(loop, 1, 0, oneshot_cancel_cb, &n, &t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

START_TEST(test_timer_cancel_prevents)
{
	iou_loop *loop = small_loop();
	struct tlog log = { 0 };
	struct tctx c = { &log, 1 };
	iou_timer *t;
	uint64_t end;

	ck_assert_int_eq(iou_timer_start(loop, 10, 0, log_timer_cb, &c, &t), 0);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_timer_start(loop, 0, 5, log_timer_cb, &c, &t), 0);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	end = t_now_ms() + 50;
	while (t_now_ms() < end)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	ck_assert_int_eq(log.n, 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct pair_ctx {
	iou_timer *other;
	int a_fired, b_fired;
};

static void cancel_other_cb(iou_timer *t, void *ud)
{
	struct pair_ctx *p = ud;

	(void)t;
	p->a_fired++;
	ck_assert_int_eq(iou_timer_cancel(p->other), 0);
}

static void other_cb(iou_timer *t, void *ud)
{
	(void)t;
	((struct pair_ctx *)ud)->b_fired++;
}

/* A callback cancels another timer that expired in the same turn: it must
 * not fire. */
START_TEST(test_timer_cancel_other_same_turn)
{
	iou_loop *loop = small_loop();
	struct pair_ctx p = { 0 };
	iou_timer *a, *b;

	ck_assert_int_eq(iou_timer_start(loop, 1, 0, cancel_other_cb, &p, &a), 0);
	ck_assert_int_eq(iou_timer_start(loop, 2, 7, other_cb, &p, &b), 0);
	p.other = b;
	usleep(20 * 1000);
	ck_assert_int_eq(iou_loop_run_once(loop, 0), 1);
	ck_assert_int_eq(p.a_fired, 1);
	ck_assert_int_eq(p.b_fired, 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Cancel most of many timers, in an order unlike the heap's; exactly the
 * rest fire, and the loop ends up idle. */
START_TEST(test_timer_cancel_many)
{
	enum { N = 1000 };
	iou_loop *loop = small_loop();
	struct tlog log = { 0 };
	struct tctx *ctx = calloc(N, sizeof(*ctx));
	iou_timer **t = calloc(N, sizeof(*t));
	int kept = 0;

	ck_assert_ptr_nonnull(ctx);
	ck_assert_ptr_nonnull(t);
	for (int i = 0; i < N; i++) {
		ctx[i] = (struct tctx){ &log, i };
		ck_assert_int_eq(iou_timer_start(loop, (unsigned)(i * 7919) % 20,
						 (unsigned)(i % 3), log_timer_cb,
						 &ctx[i], &t[i]), 0);
	}
	for (int k = 0; k < N; k++) {
		int i = (k * 389) % N; /* 389 is prime to N: a permutation */

		if (i % 10 == 0 && i % 3 == 0) {
			kept++;
			continue; /* keep these: one-shots (i % 3 == 0) */
		}
		ck_assert_int_eq(iou_timer_cancel(t[i]), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &log.n, kept, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(t_loop_drain(loop, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(log.n, kept);
	for (int i = 0; i < log.n; i++)
		ck_assert_int_eq(log.order[i] % 30, 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	free(ctx);
	free(t);
}
END_TEST

/* A one-shot timer needs no handle: it fires once and frees itself. */
START_TEST(test_timer_oneshot_no_handle)
{
	iou_loop *loop = small_loop();
	int fired = 0;

	ck_assert_int_eq(iou_timer_start(loop, 0, 0, count_timer_cb, &fired,
					 NULL), 0);
	ck_assert_int_eq(iou_timer_start(loop, 20, 0, count_timer_cb, &fired,
					 NULL), 0);
	ck_assert_int_eq(fired, 0); /* never from inside the call */
	ck_assert_int_eq(iou_loop_alive(loop), 1);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(fired, 2);
	/* A repeating timer can only be stopped through its handle. */
	ck_assert_int_eq(iou_timer_start(loop, 1, 1, count_timer_cb, &fired,
					 NULL), -EINVAL);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

START_TEST(test_timer_einval)
{
	iou_loop *loop = small_loop();
	iou_timer *sentinel = (iou_timer *)(uintptr_t)0x1234, *t = sentinel;
	uint64_t big = (uint64_t)UINT32_MAX * 1000 + 1;

	ck_assert_int_eq(iou_timer_start(NULL, 1, 0, noop_timer_cb, NULL, &t), -EINVAL);
	ck_assert_int_eq(iou_timer_start(loop, 1, 0, NULL, NULL, &t), -EINVAL);
	ck_assert_int_eq(iou_timer_start(loop, 1, 5, noop_timer_cb, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_timer_start(loop, big, 0, noop_timer_cb, NULL, &t), -EINVAL);
	ck_assert_int_eq(iou_timer_start(loop, UINT64_MAX, 0, noop_timer_cb, NULL, &t), -EINVAL);
	ck_assert_int_eq(iou_timer_start(loop, 1, big, noop_timer_cb, NULL, &t), -EINVAL);
	ck_assert_ptr_eq(t, sentinel);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_timer_cancel(NULL), -EINVAL);
	/* The largest delay is accepted, and does not fire. */
	ck_assert_int_eq(iou_timer_start(loop, big - 1, big - 1, noop_timer_cb,
					 NULL, &t), 0);
	ck_assert_int_eq(iou_loop_run_once(loop, 0), 0);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ======================================================================== */
/* post: cross-thread wake-up and ordering                                  */
/* ======================================================================== */

static void set_flag_post(void *ud)
{
	__atomic_store_n((int *)ud, 1, __ATOMIC_RELEASE);
}

struct poster {
	iou_loop *loop;
	int *flag;
	int delay_ms;
	bool stop; /* call iou_loop_stop instead of posting */
	uint64_t sent_at;
};

static void *poster_thread(void *arg)
{
	struct poster *p = arg;

	usleep((useconds_t)p->delay_ms * 1000);
	p->sent_at = t_now_ms();
	if (p->stop)
		iou_loop_stop(p->loop);
	else
		ck_assert_int_eq(iou_loop_post(p->loop, set_flag_post, p->flag), 0);
	return NULL;
}

static int wait_turns(void)
{
	return t_under_valgrind() ? 1000 : 10;
}

/* A loop blocked in run_once(-1) with nothing to do wakes at once when
 * another thread posts.  (A hang is caught by the TCase timeout.) */
START_TEST(test_post_wakes_blocked_loop)
{
	iou_loop *loop = small_loop();
	int flag = 0;
	struct poster p = { .loop = loop, .flag = &flag, .delay_ms = 100 };
	pthread_t th;
	uint64_t t0 = t_now_ms(), woke;
	int n = 0;

	ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
	for (int i = 0; i < wait_turns() && !__atomic_load_n(&flag, __ATOMIC_ACQUIRE); i++)
		n += t_run_once(loop, -1);
	woke = t_now_ms();
	pthread_join(th, NULL);
	ck_assert_int_eq(flag, 1);
	ck_assert_int_ge(n, 1);
	ck_assert_uint_ge(woke - t0, 90); /* it did block */
	ck_assert_uint_lt(woke - p.sent_at, 1000);
	t_loop_destroy(loop);
}
END_TEST

/* Same with a timer far away: the wait would otherwise last a minute. */
START_TEST(test_post_wakes_loop_with_far_timer)
{
	iou_loop *loop = small_loop();
	int flag = 0;
	struct poster p = { .loop = loop, .flag = &flag, .delay_ms = 50 };
	pthread_t th;
	iou_timer *t;
	uint64_t woke;

	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
	for (int i = 0; i < wait_turns() && !__atomic_load_n(&flag, __ATOMIC_ACQUIRE); i++)
		ck_assert_int_ge(t_run_once(loop, -1), 0);
	woke = t_now_ms();
	pthread_join(th, NULL);
	ck_assert_int_eq(flag, 1);
	ck_assert_uint_lt(woke - p.sent_at, 1000);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	t_loop_destroy(loop);
}
END_TEST

static void valgrind_tick(iou_timer *t, void *ud)
{
	(void)t;
	(void)ud;
	usleep(1000); /* let the other thread have valgrind's lock */
}

/* iou_loop_stop() from another thread ends iou_loop_run() promptly. */
START_TEST(test_stop_from_thread)
{
	iou_loop *loop = small_loop();
	struct poster p = { .loop = loop, .delay_ms = 50, .stop = true };
	pthread_t th;
	iou_timer *t, *tick = NULL;
	uint64_t woke;

	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	if (t_under_valgrind()) /* wait in slices, see t_under_valgrind() */
		ck_assert_int_eq(iou_timer_start(loop, 10, 10, valgrind_tick,
						 NULL, &tick), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
	ck_assert_int_eq(iou_loop_run(loop), 1);
	woke = t_now_ms();
	pthread_join(th, NULL);
	ck_assert_uint_lt(woke - p.sent_at, 1000);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	if (tick)
		ck_assert_int_eq(iou_timer_cancel(tick), 0);
	t_loop_destroy(loop);
}
END_TEST

/* A stop requested from another thread while no turn runs is taken by the
 * next run(), which returns 1 after one turn; the run() after that runs
 * until out of work. */
START_TEST(test_stop_from_thread_before_run)
{
	iou_loop *loop = small_loop();
	struct poster p = { .loop = loop, .delay_ms = 0, .stop = true };
	pthread_t th;
	iou_timer *t;
	int fired = 0;
	uint64_t t0;

	ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb, NULL, &t), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
	pthread_join(th, NULL);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_loop_run(loop), 1);
	ck_assert_uint_lt(t_now_ms() - t0, 1000);
	ck_assert_int_eq(iou_timer_cancel(t), 0);
	ck_assert_int_eq(iou_timer_start(loop, 100, 0, count_timer_cb, &fired,
					 &t), 0);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(fired, 1);
	t_loop_destroy(loop);
}
END_TEST

static void *post_once_thread(void *arg)
{
	struct poster *p = arg;

	if (p->stop)
		iou_loop_stop(p->loop);
	else
		ck_assert_int_eq(iou_loop_post(p->loop, set_flag_post, p->flag), 0);
	return NULL;
}

/* The loop may be destroyed as soon as a posted callback ran, while the
 * iou_loop_post() (or iou_loop_stop()) that brought it may still be writing
 * its wake-up on the other thread: destroy waits for it.  (Under TSan or
 * ASan, the old code's close and free raced with that write.) */
START_TEST(test_destroy_right_after_post)
{
	int rounds = t_under_valgrind() ? 10 : 100;

	for (int i = 0; i < rounds; i++) {
		iou_loop *loop = small_loop();
		int flag = 0;
		struct poster p = { .loop = loop, .flag = &flag, .stop = i & 1 };
		iou_timer *t, *tick = NULL;
		pthread_t th;

		ck_assert_int_eq(iou_timer_start(loop, 60000, 0, noop_timer_cb,
						 NULL, &t), 0);
		if (t_under_valgrind()) /* wait in slices, see t_under_valgrind() */
			ck_assert_int_eq(iou_timer_start(loop, 10, 10, valgrind_tick,
							 NULL, &tick), 0);
		ck_assert_int_eq(pthread_create(&th, NULL, post_once_thread, &p), 0);
		if (p.stop)
			ck_assert_int_eq(iou_loop_run(loop), 1);
		else
			while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
				ck_assert_int_ge(iou_loop_run_once(loop, -1), 0);
		ck_assert_int_eq(iou_timer_cancel(t), 0);
		if (tick)
			ck_assert_int_eq(iou_timer_cancel(tick), 0);
		ck_assert_int_eq(iou_loop_destroy(loop), 0);
		pthread_join(th, NULL);
	}
}
END_TEST

enum { POST_THREADS = 4, POSTS_PER_THREAD = 5000 };

struct order_state {
	int next[POST_THREADS]; /* expected seq per thread; loop thread only */
	int total;
	int bad;
};

static struct order_state ostate;

static void order_post(void *ud)
{
	uintptr_t v = (uintptr_t)ud;
	int tid = (int)(v >> 24), seq = (int)(v & 0xffffff);

	if (tid >= POST_THREADS || ostate.next[tid] != seq)
		ostate.bad++;
	else
		ostate.next[tid]++;
	ostate.total++;
}

struct burst {
	iou_loop *loop;
	int tid;
};

static void *burst_thread(void *arg)
{
	struct burst *b = arg;

	for (int i = 0; i < POSTS_PER_THREAD; i++) {
		uintptr_t v = ((uintptr_t)b->tid << 24) | (uintptr_t)i;

		if (iou_loop_post(b->loop, order_post, (void *)v) != 0)
			abort();
		if (i % 512 == 0)
			sched_yield();
	}
	return NULL;
}

/* Posts from several threads all run, each thread's in its order. */
START_TEST(test_post_many_threads_order)
{
	iou_loop *loop = small_loop();
	pthread_t th[POST_THREADS];
	struct burst b[POST_THREADS];

	memset(&ostate, 0, sizeof(ostate));
	for (int i = 0; i < POST_THREADS; i++) {
		b[i] = (struct burst){ loop, i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, burst_thread, &b[i]), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &ostate.total,
					   POST_THREADS * POSTS_PER_THREAD,
					   20000), 0);
	for (int i = 0; i < POST_THREADS; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(ostate.bad, 0);
	ck_assert_int_eq(ostate.total, POST_THREADS * POSTS_PER_THREAD);
	for (int i = 0; i < POST_THREADS; i++)
		ck_assert_int_eq(ostate.next[i], POSTS_PER_THREAD);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

struct repost {
	iou_loop *loop;
	int n, limit;
};

static void repost_cb(void *ud)
{
	struct repost *r = ud;

	if (++r->n < r->limit)
		ck_assert_int_eq(iou_loop_post(r->loop, repost_cb, r), 0);
}

/* A post made from a posted callback runs in a later turn, never
 * synchronously, and run() keeps going until the chain ends. */
START_TEST(test_post_from_callback)
{
	iou_loop *loop = small_loop();
	struct repost r = { .loop = loop, .limit = 100 };

	ck_assert_int_eq(iou_loop_post(loop, repost_cb, &r), 0);
	ck_assert_int_eq(r.n, 0);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 1);
	ck_assert_int_eq(r.n, 1);
	ck_assert_int_eq(iou_loop_run(loop), 0);
	ck_assert_int_eq(r.n, 100);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

START_TEST(test_post_einval)
{
	iou_loop *loop = small_loop();

	ck_assert_int_eq(iou_loop_post(NULL, noop_post, NULL), -EINVAL);
	ck_assert_int_eq(iou_loop_post(loop, NULL, NULL), -EINVAL);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ======================================================================== */
/* engine: SQE flushing, completion dispatch, cancellation                  */
/* ======================================================================== */

struct counter_op {
	struct iou__op op;
	iou_loop *loop;
	int completed;
	int failed;
};

static void counter_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct counter_op *c = IOU__CONTAINER_OF(op, struct counter_op, op);

	c->completed++;
	if (cqe->res != 0)
		c->failed++;
	iou__op_done(c->loop);
}

static void queue_nops(iou_loop *loop, struct counter_op *c, int n)
{
	for (int i = 0; i < n; i++) {
		ck_assert_msg(iou__be_nop(loop, &c->op) == 0, "no SQE for nop %d",
			      i);
		iou__op_submitted(loop);
	}
}

/* 100 000 NOPs through a depth-8 ring, in bursts far larger than the SQ
 * (iou__get_sqe must flush) and the CQ (the kernel's overflow list): all
 * complete exactly once and the loop ends idle. */
START_TEST(test_engine_100k_nops)
{
	enum { TOTAL = 100000, BURST = 1000 };
	int fds = t_fd_count();
	iou_loop *loop = small_loop();
	struct counter_op c = { .op.complete = counter_complete, .loop = loop };

	for (int queued = 0; queued < TOTAL; queued += BURST) {
		queue_nops(loop, &c, BURST);
		ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &c.completed, TOTAL, 20000), 0);
	ck_assert_int_eq(c.completed, TOTAL);
	ck_assert_int_eq(c.failed, 0);
	ck_assert_uint_eq(loop->active, 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	/* Nothing more arrives. */
	ck_assert_int_eq(iou_loop_run_once(loop, 10), 0);
	ck_assert_int_eq(c.completed, TOTAL);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	ck_assert_int_eq(t_fd_count(), fds);
}
END_TEST

/* The same at a steady pace that never overflows the CQ. */
START_TEST(test_engine_nops_paced)
{
	enum { TOTAL = 100000, BURST = 50 };
	iou_loop *loop = small_loop();
	struct counter_op c = { .op.complete = counter_complete, .loop = loop };

	for (int queued = 0; queued < TOTAL; queued += BURST) {
		queue_nops(loop, &c, BURST);
		ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
	}
	ck_assert_int_eq(t_run_until_count(loop, &c.completed, TOTAL, 20000), 0);
	ck_assert_int_eq(c.failed, 0);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A heap-allocated op the kernel owns until its completion, which alone
 * frees it. */
struct heap_op {
	struct iou__op op;
	iou_loop *loop;
	int *completions;
	int *last_res;
	struct __kernel_timespec ts;
	char buf[16];
};

static void heap_op_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct heap_op *h = IOU__CONTAINER_OF(op, struct heap_op, op);

	(*h->completions)++;
	*h->last_res = cqe->res;
	iou__op_done(h->loop);
	memset(h, 0xdd, sizeof(*h)); /* a later touch would show */
	free(h);
}

static struct heap_op *heap_op_new(iou_loop *loop, int *completions,
				   int *last_res)
{
	struct heap_op *h = calloc(1, sizeof(*h));

	ck_assert_ptr_nonnull(h);
	h->op.complete = heap_op_complete;
	h->loop = loop;
	h->completions = completions;
	h->last_res = last_res;
	return h;
}

static struct heap_op *start_read(iou_loop *loop, int fd, int *completions,
				  int *last_res)
{
	struct heap_op *h = heap_op_new(loop, completions, last_res);

	ck_assert_int_eq(iou__be_read(loop, &h->op, fd, h->buf, sizeof(h->buf)),
			 0);
	iou__op_submitted(loop);
	return h;
}

static struct heap_op *start_timeout(iou_loop *loop, int *completions,
				     int *last_res)
{
	struct heap_op *h = heap_op_new(loop, completions, last_res);
	struct io_uring_sqe *sqe = iou__get_sqe(loop);

	ck_assert_ptr_nonnull(sqe);
	h->ts.tv_sec = 3600;
	io_uring_prep_timeout(sqe, &h->ts, 0, 0);
	io_uring_sqe_set_data(sqe, &h->op);
	iou__op_submitted(loop);
	return h;
}

/* Run a few turns and check that nothing completes by itself. */
static void settle(iou_loop *loop)
{
	for (int i = 0; i < 5; i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 5), 0);
}

/* Cancel a read nobody will satisfy and a far timeout; each record is freed
 * only by its own completion (ASan catches any early free or late touch). */
START_TEST(test_cancel_then_drain)
{
	T_URING_ONLY("raw SQEs, an io_uring timeout op");
	int fds = t_fd_count();
	iou_loop *loop = small_loop();
	int p[2], done = 0, res = 1;
	struct heap_op *rd, *to;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	rd = start_read(loop, p[0], &done, &res);
	to = start_timeout(loop, &done, &res);
	settle(loop);
	ck_assert_int_eq(done, 0);
	ck_assert_int_eq(iou_loop_destroy(loop), -EBUSY);

	ck_assert_int_eq(iou__cancel_op(loop, &rd->op, p[0]), 0);
	ck_assert_int_eq(done, 0); /* never synchronous */
	ck_assert_int_eq(t_run_until(loop, &done, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(done, 1);
	ck_assert_int_eq(res, -ECANCELED);
	ck_assert_int_eq(iou_loop_alive(loop), 1); /* the timeout remains */

	ck_assert_int_eq(iou__cancel_op(loop, &to->op, -1), 0);
	ck_assert_int_eq(t_loop_drain(loop, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(done, 2);
	ck_assert_int_eq(res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(t_fd_count(), fds);
}
END_TEST

/* The cancel is queued right behind the op, before either was submitted. */
START_TEST(test_cancel_same_batch)
{
	iou_loop *loop = small_loop();
	int p[2], done = 0, res = 1;
	struct heap_op *rd;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	for (int i = 0; i < 20; i++) {
		int before = done;

		rd = start_read(loop, p[0], &done, &res);
		ck_assert_int_eq(iou__cancel_op(loop, &rd->op, p[0]), 0);
		ck_assert_int_eq(t_run_until_count(loop, &done, before + 1,
						   T_TIMEOUT_MS), 0);
		ck_assert_int_eq(res, -ECANCELED);
	}
	ck_assert_int_eq(t_loop_drain(loop, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(done, 20);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	close(p[0]);
	close(p[1]);
}
END_TEST

/* Cancelling an op that already completed is harmless: the cancel's own
 * CQE (-ENOENT, user_data 0) is ignored. */
START_TEST(test_cancel_after_completion)
{
	iou_loop *loop = small_loop();
	struct counter_op c = { .op.complete = counter_complete, .loop = loop };

	queue_nops(loop, &c, 1);
	ck_assert_int_eq(t_run_until(loop, &c.completed, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(iou__cancel_op(loop, &c.op, -1), 0);
	ck_assert_int_eq(iou__cancel_fd(loop, 12345), 0);
	settle(loop);
	ck_assert_int_eq(c.completed, 1);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* iou__cancel_fd cancels every op on that fd and nothing else. */
START_TEST(test_cancel_fd_all)
{
	enum { ON_A = 5 };
	iou_loop *loop = small_loop();
	int a[2], b[2], done_a = 0, done_b = 0, res_a = 1, res_b = 1;

	ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(b, O_CLOEXEC), 0);
	for (int i = 0; i < ON_A; i++)
		start_read(loop, a[0], &done_a, &res_a);
	start_read(loop, b[0], &done_b, &res_b);
	settle(loop);
	ck_assert_int_eq(done_a + done_b, 0);

	ck_assert_int_eq(iou__cancel_fd(loop, a[0]), 0);
	ck_assert_int_eq(t_run_until_count(loop, &done_a, ON_A, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(res_a, -ECANCELED);
	settle(loop);
	ck_assert_int_eq(done_a, ON_A);
	ck_assert_int_eq(done_b, 0); /* the other fd's read is untouched */
	ck_assert_uint_eq(loop->active, 1);

	/* It still works: feed it. */
	ck_assert_int_eq(write(b[1], "hi", 2), 2);
	ck_assert_int_eq(t_run_until(loop, &done_b, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(res_b, 2);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}
END_TEST

/* Many cancels at once through a depth-8 SQ (the cancels themselves need
 * the flushing path). */
START_TEST(test_cancel_many)
{
	T_URING_ONLY("io_uring timeout ops");
	enum { N = 200 };
	iou_loop *loop = small_loop();
	struct heap_op *h[N];
	int done = 0, res = 1;

	for (int i = 0; i < N; i++)
		h[i] = start_timeout(loop, &done, &res);
	settle(loop);
	ck_assert_int_eq(done, 0);
	for (int i = N - 1; i >= 0; i--)
		ck_assert_int_eq(iou__cancel_op(loop, &h[i]->op, -1), 0);
	ck_assert_int_eq(t_loop_drain(loop, 10000), 0);
	ck_assert_int_eq(done, N);
	ck_assert_int_eq(res, -ECANCELED);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* ======================================================================== */
/* misc: errors and version                                                 */
/* ======================================================================== */

START_TEST(test_strerror)
{
	static const int codes[] = {
		IOU_EINCOMPLETE, IOU_EOVERFLOW, IOU_ECLOSED,
		IOU_ENOURING, IOU_ERESOLVE, IOU_ENOFEATURE,
	};
	enum { N = sizeof(codes) / sizeof(codes[0]) };
	const char *s[N];

	for (int i = 0; i < N; i++) {
		s[i] = iou_strerror(-codes[i]);
		ck_assert_ptr_nonnull(s[i]);
		ck_assert_uint_gt(strlen(s[i]), 0);
		ck_assert_str_ne(s[i], "success");
		ck_assert_ptr_null(strstr(s[i], "Unknown error"));
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(s[i], s[j]);
		for (int e = 1; e < 134; e++)
			ck_assert_str_ne(s[i], iou_strerror(-e));
	}
	for (int e = 1; e < 134; e++) {
		const char *m = iou_strerror(-e);

		ck_assert_ptr_nonnull(m);
		ck_assert_str_ne(m, "success");
		ck_assert_uint_gt(strlen(m), 0);
	}
	/* errno values read like strerror(); ENOMEM adds advice. */
	ck_assert_str_eq(iou_strerror(-EINVAL), strerror(EINVAL));
	ck_assert_str_eq(iou_strerror(-ECONNRESET), strerror(ECONNRESET));
	ck_assert_str_ne(iou_strerror(-EPIPE), iou_strerror(-ECONNRESET));
	ck_assert_ptr_nonnull(strstr(iou_strerror(-ENOMEM), "memory"));
	ck_assert_str_eq(iou_strerror(0), "success");
	ck_assert_str_eq(iou_strerror(1), "success");
	ck_assert_str_eq(iou_strerror(INT_MAX), "success");
	/* Out of every range: still words. */
	ck_assert_ptr_nonnull(iou_strerror(-99999));
	ck_assert_ptr_nonnull(iou_strerror(-4200));
	ck_assert_ptr_nonnull(iou_strerror(-4299));
	ck_assert_ptr_nonnull(iou_strerror(INT_MIN));
	ck_assert_ptr_nonnull(iou_strerror(-INT_MAX));
}
END_TEST

START_TEST(test_version)
{
	char want[64];

	snprintf(want, sizeof(want), "%d.%d.%d", IOU_VERSION_MAJOR,
		 IOU_VERSION_MINOR, IOU_VERSION_PATCH);
	ck_assert_ptr_nonnull(iou_version());
	ck_assert_str_eq(iou_version(), want);
}
END_TEST

/* ======================================================================== */
/* a full SQ: no work lost, none starved                                    */
/* ======================================================================== */

/* While sq_refuse is set, io_uring_submit() takes no SQE (-EAGAIN), as
 * io_uring_enter() does when the kernel cannot allocate requests; only each
 * turn's own submit-and-wait gets them out.  An SQE made while the ring is
 * full then has to wait.  (The Makefile links this suite with
 * -Wl,--wrap=io_uring_submit.) */
static int sq_refuse;
int __real_io_uring_submit(struct io_uring *ring);
int __wrap_io_uring_submit(struct io_uring *ring);

int __wrap_io_uring_submit(struct io_uring *ring)
{
	if (sq_refuse)
		return -EAGAIN;
	return __real_io_uring_submit(ring);
}

/* A two-entry SQ that refuses early submits. */
static iou_loop *tiny_loop(void)
{
	struct iou_loop_opts o = small_opts();
	iou_loop *loop;

	o.queue_depth = 2;
	loop = t_loop_create_or_skip(&o);
	sq_refuse = 1;
	return loop;
}

static int sq_full_ms(void)
{
	return t_under_valgrind() ? 30000 : 5000;
}

/* Traffic that fills the ring in every turn before timers and end-of-turn
 * work run: four NOPs, each replaced when it completes (as a busy loop's
 * completions queue work); as many as the engine takes. */
struct chatter {
	struct iou__op op;
	iou_loop *loop;
	int inflight;
	bool stop;
};

static void chatter_fill(struct chatter *c)
{
	while (!c->stop && c->inflight < 4) {
		struct io_uring_sqe *sqe = iou__get_sqe(c->loop);

		if (!sqe)
			return;
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, &c->op);
		iou__op_submitted(c->loop);
		c->inflight++;
	}
}

static void chatter_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct chatter *c = IOU__CONTAINER_OF(op, struct chatter, op);

	(void)cqe;
	c->inflight--;
	iou__op_done(c->loop);
	chatter_fill(c);
}

/* Start with an empty ring (after a turn): the old engine kept only what
 * fitted. */
static void chatter_start(struct chatter *c, iou_loop *loop)
{
	memset(c, 0, sizeof(*c));
	c->op.complete = chatter_complete;
	c->loop = loop;
	chatter_fill(c);
}

/* Run turns until *count >= target, at most ms; returns 0 or -ETIMEDOUT. */
static int run_until_count(iou_loop *loop, const int *count, int target, int ms)
{
	uint64_t t0 = t_now_ms();

	while (*count < target) {
		if (t_now_ms() - t0 > (uint64_t)ms)
			return -ETIMEDOUT;
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	}
	return 0;
}

static void chatter_stop(struct chatter *c)
{
	int zero_left = 0;
	uint64_t t0 = t_now_ms();

	c->stop = true;
	while (c->inflight && t_now_ms() - t0 < (uint64_t)sq_full_ms())
		ck_assert_int_ge(iou_loop_run_once(c->loop, 10), 0);
	ck_assert_int_eq(c->inflight, zero_left);
}

static void sq_full_end(iou_loop *loop)
{
	sq_refuse = 0;
	t_loop_destroy(loop);
}

enum { SQ_STREAMS = 16, SQ_MSG = 100 };

struct sq_stream {
	iou_stream *s;
	int peer;
	int *reads, *writes, *closes;
	ssize_t read_res, write_res;
	unsigned char got[8];
};

static void sq_read_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct sq_stream *x = ud;

	(void)s;
	x->read_res = res;
	if (res == 8)
		memcpy(x->got, data, 8);
	(*x->reads)++;
}

static void sq_write_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct sq_stream *x = ud;

	(void)s;
	x->write_res = res;
	(*x->writes)++;
}

static void sq_close_cb(iou_stream *s, void *ud)
{
	struct sq_stream *x = ud;

	(void)s;
	x->s = NULL;
	(*x->closes)++;
}

struct sq_conn {
	iou_stream *s;
	int res, calls;
};

static void sq_conn_cb(iou_stream *s, int res, void *ud)
{
	struct sq_conn *c = ud;

	c->s = s;
	c->res = res;
	c->calls++;
}

static void sq_streams_open(iou_loop *loop, struct sq_stream *x, int *reads,
			    int *writes, int *closes)
{
	for (int i = 0; i < SQ_STREAMS; i++) {
		struct timeval tv = { .tv_sec = 10 };
		int fds[2];

		t_tcp_pair(fds);
		x[i] = (struct sq_stream){ .peer = fds[0], .reads = reads,
					   .writes = writes, .closes = closes };
		ck_assert_int_eq(setsockopt(fds[0], SOL_SOCKET, SO_RCVTIMEO,
					    &tv, sizeof(tv)), 0);
		ck_assert_int_eq(iou_stream_open(loop, fds[1], NULL, &x[i].s), 0);
	}
}

/* Every stream reads, writes, and then closes, each batch made for all
 * streams at once while the ring is full: every callback runs with the right
 * result and every peer gets its bytes and EOF.  (The old engine starved
 * them: the re-tries at the end of each turn found the ring full again.) */
START_TEST(test_sq_full_streams)
{
	T_URING_ONLY("a full SQ");
	iou_loop *loop = tiny_loop();
	struct sq_stream x[SQ_STREAMS];
	static const char msg[SQ_MSG] = "to the peer";
	struct chatter ch;
	int reads = 0, writes = 0, closes = 0;

	sq_streams_open(loop, x, &reads, &writes, &closes);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0); /* an empty ring */
	chatter_start(&ch, loop);
	for (int i = 0; i < SQ_STREAMS; i++) {
		char b[8];

		snprintf(b, sizeof(b), "peer%03d", i);
		ck_assert_int_eq(write(x[i].peer, b, 8), 8);
		ck_assert_int_eq(iou_read_exactly(x[i].s, 8, sq_read_cb, &x[i]), 0);
		ck_assert_int_eq(iou_write_all(x[i].s, msg, SQ_MSG, sq_write_cb,
					       &x[i]), 0);
	}
	ck_assert_int_eq(run_until_count(loop, &reads, SQ_STREAMS, sq_full_ms()), 0);
	ck_assert_int_eq(run_until_count(loop, &writes, SQ_STREAMS, sq_full_ms()), 0);
	for (int i = 0; i < SQ_STREAMS; i++) {
		char b[8];

		snprintf(b, sizeof(b), "peer%03d", i);
		ck_assert_int_eq(x[i].read_res, 8);
		ck_assert_int_eq(memcmp(x[i].got, b, 8), 0);
		ck_assert_int_eq(x[i].write_res, SQ_MSG);
		ck_assert_int_eq(iou_close(x[i].s, sq_close_cb, &x[i]), 0);
	}
	ck_assert_int_eq(run_until_count(loop, &closes, SQ_STREAMS, sq_full_ms()), 0);
	for (int i = 0; i < SQ_STREAMS; i++) {
		char b[SQ_MSG + 1];
		size_t got = 0;
		ssize_t n;

		while (got < sizeof(b) && (n = read(x[i].peer, b + got,
						    sizeof(b) - got)) > 0)
			got += (size_t)n;
		ck_assert_uint_eq(got, SQ_MSG); /* then EOF */
		ck_assert_int_eq(memcmp(b, msg, SQ_MSG), 0);
		close(x[i].peer);
	}

	chatter_stop(&ch);
	sq_full_end(loop);
}
END_TEST

/* Many connects in one go, more than the ring holds: all connect.  (The
 * old engine failed those that found no SQE with -EAGAIN.) */
START_TEST(test_sq_full_connects)
{
	T_URING_ONLY("a full SQ");
	iou_loop *loop = tiny_loop();
	struct sq_conn cr[SQ_STREAMS];
	struct sq_stream x[SQ_STREAMS];
	int closes = 0;
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);

	for (int i = 0; i < SQ_STREAMS; i++) {
		cr[i] = (struct sq_conn){ 0 };
		ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", port, NULL,
						 sq_conn_cb, &cr[i], NULL), 0);
	}
	for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < (uint64_t)sq_full_ms();) {
		int done = 0;

		for (int i = 0; i < SQ_STREAMS; i++)
			done += cr[i].calls;
		if (done == SQ_STREAMS)
			break;
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	}
	for (int i = 0; i < SQ_STREAMS; i++) {
		ck_assert_int_eq(cr[i].calls, 1);
		ck_assert_msg(cr[i].res == 0, "connect %d: %s", i,
			      iou_strerror(cr[i].res));
		x[i].closes = &closes;
		ck_assert_int_eq(iou_close(cr[i].s, sq_close_cb, &x[i]), 0);
	}
	ck_assert_int_eq(run_until_count(loop, &closes, SQ_STREAMS, sq_full_ms()), 0);
	close(lfd);
	sq_full_end(loop);
}
END_TEST

/* A connect's deadline passes in a turn whose ring is already full: its
 * cancel still goes out and the connect ends with -ETIMEDOUT.  (The old
 * engine dropped the cancel: the connect hung until the kernel gave up on
 * the SYNs, minutes later.) */
START_TEST(test_sq_full_connect_timeout)
{
	T_URING_ONLY("a full SQ");
	iou_loop *loop = tiny_loop();
	struct iou_connect_opts co;
	struct sq_conn c = { 0 };
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int fill[16], nfill = 0, hole = 0;
	struct chatter ch;
	uint64_t t0;

	/* A listener with backlog 0 and a full accept queue drops SYNs. */
	ck_assert_int_ge(lfd, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 0), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	while (nfill < 16 && !hole) {
		struct pollfd pfd;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		ck_assert_int_ge(fd, 0);
		fill[nfill++] = fd;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			continue;
		ck_assert_int_eq(errno, EINPROGRESS);
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 200) == 0)
			hole = 1;
	}
	ck_assert_msg(hole, "could not fill the accept queue");
	iou_connect_opts_init(&co);
	co.timeout_ms = 200;
	ck_assert_int_eq(iou_tcp_connect(loop, "127.0.0.1", ntohs(sa.sin_port),
					 &co, sq_conn_cb, &c, NULL), 0);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0); /* the connect is in */
	chatter_start(&ch, loop);
	t0 = t_now_ms();
	ck_assert_int_eq(run_until_count(loop, &c.calls, 1, sq_full_ms()), 0);
	ck_assert_int_eq(c.res, -ETIMEDOUT);
	ck_assert_uint_ge(t_now_ms() - t0, 150);
	chatter_stop(&ch);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
	sq_full_end(loop);
}
END_TEST

static void sq_server_done(iou_server *srv, uint64_t finished, uint64_t cut,
			   void *ud)
{
	(void)srv;
	ck_assert_uint_eq(finished, 0);
	ck_assert_uint_eq(cut, 0);
	(*(int *)ud)++;
}

static void sq_no_conn(iou_server *srv, iou_stream *s,
		       const struct sockaddr *peer, void *ud)
{
	(void)srv;
	(void)peer;
	(void)ud;
	ck_abort_msg("unexpected connection");
	iou_close(s, NULL, NULL);
}

/* A server shut down while the ring is full: the cancel of its pending
 * accept still goes out, and the shutdown completes.  (The old engine
 * dropped it, and the retry at the next turn found the ring full again.) */
START_TEST(test_sq_full_server_shutdown)
{
	T_URING_ONLY("a full SQ");
	iou_loop *loop = tiny_loop();
	struct iou_server_opts so;
	iou_server *srv;
	struct chatter ch;
	int done = 0;

	iou_server_opts_init(&so);
	ck_assert_int_eq(iou_server_start(loop, &so, sq_no_conn, NULL, &srv), 0);
	ck_assert_int_eq(iou_loop_run_once(loop, 0), 0); /* the accept is in */
	chatter_start(&ch, loop);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0); /* the ring fills */
	ck_assert_int_eq(iou_server_shutdown(srv, 1000, sq_server_done, &done), 0);
	ck_assert_int_eq(run_until_count(loop, &done, 1, sq_full_ms()), 0);
	chatter_stop(&ch);
	sq_full_end(loop);
}
END_TEST

/* SHUT_RD on many streams at once, with the ring full: every pending read
 * fails with IOU_ECLOSED and every stream's receive really ends.  (The old
 * engine dropped the cancels: the receives stayed in the kernel.) */
START_TEST(test_sq_full_shut_rd)
{
	T_URING_ONLY("a full SQ");
	iou_loop *loop = tiny_loop();
	struct sq_stream x[SQ_STREAMS];
	struct chatter ch;
	int reads = 0, writes = 0, closes = 0, armed;
	uint64_t t0;

	sq_streams_open(loop, x, &reads, &writes, &closes);
	for (int i = 0; i < SQ_STREAMS; i++)
		ck_assert_int_eq(iou_read(x[i].s, 8, sq_read_cb, &x[i]), 0);
	t0 = t_now_ms();
	do {
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
		armed = 0;
		for (int i = 0; i < SQ_STREAMS; i++)
			armed += !!(x[i].s->flags & IOU__S_RECV_ARMED);
	} while (armed < SQ_STREAMS && t_now_ms() - t0 < (uint64_t)sq_full_ms());
	ck_assert_int_eq(armed, SQ_STREAMS);
	chatter_start(&ch, loop);
	ck_assert_int_ge(iou_loop_run_once(loop, 0), 0); /* the ring fills */
	for (int i = 0; i < SQ_STREAMS; i++)
		ck_assert_int_eq(iou_shutdown(x[i].s, SHUT_RD), 0);
	ck_assert_int_eq(run_until_count(loop, &reads, SQ_STREAMS, sq_full_ms()), 0);
	t0 = t_now_ms();
	do {
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
		armed = 0;
		for (int i = 0; i < SQ_STREAMS; i++)
			armed += !!(x[i].s->flags & IOU__S_RECV_ARMED);
	} while (armed && t_now_ms() - t0 < (uint64_t)sq_full_ms());
	ck_assert_msg(armed == 0, "%d of %d receives still in the kernel",
		      armed, SQ_STREAMS);
	for (int i = 0; i < SQ_STREAMS; i++) {
		ck_assert_int_eq(x[i].read_res, -IOU_ECLOSED);
		ck_assert_int_eq(iou_close(x[i].s, sq_close_cb, &x[i]), 0);
	}
	ck_assert_int_eq(run_until_count(loop, &closes, SQ_STREAMS, sq_full_ms()), 0);
	for (int i = 0; i < SQ_STREAMS; i++)
		close(x[i].peer);
	chatter_stop(&ch);
	sq_full_end(loop);
}
END_TEST

/* ======================================================================== */

static Suite *loop_suite(void)
{
	Suite *s = suite_create("loop");
	TCase *tc;

	tc = tcase_create("create");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_opts_init_defaults);
	tcase_add_test(tc, test_create_default);
	tcase_add_test(tc, test_create_custom);
	tcase_add_test(tc, test_create_einval);
	tcase_add_test(tc, test_destroy_null);
	tcase_add_test(tc, test_destroy_busy_timer);
	tcase_add_test(tc, test_destroy_busy_post);
	tcase_add_test(tc, test_destroy_inside_callback);
	tcase_add_test(tc, test_destroy_wake_pending);
	tcase_add_test(tc, test_no_defer_taskrun);
	tcase_add_test(tc, test_create_destroy_repeated);
	tcase_add_test(tc, test_create_seccomp);
	suite_add_tcase(s, tc);

	tc = tcase_create("run");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_run_no_work);
	tcase_add_test(tc, test_stop_from_callback);
	tcase_add_test(tc, test_stop_from_post);
	tcase_add_test(tc, test_run_once_timeout_zero);
	tcase_add_test(tc, test_run_once_timeout_waits);
	tcase_add_test(tc, test_run_once_reentry);
	tcase_add_test(tc, test_stop_then_run_once_blocks);
	tcase_add_test(tc, test_stop_inside_run_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("timers");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_timer_deadline_order);
	tcase_add_test(tc, test_timer_start_order);
	tcase_add_test(tc, test_timer_zero_not_synchronous);
	tcase_add_test(tc, test_timer_heap_churn);
	tcase_add_test(tc, test_timer_repeat_cancel_inside);
	tcase_add_test(tc, test_timer_oneshot_cancel_inside);
	tcase_add_test(tc, test_timer_cancel_prevents);
	tcase_add_test(tc, test_timer_cancel_other_same_turn);
	tcase_add_test(tc, test_timer_cancel_many);
	tcase_add_test(tc, test_timer_einval);
	tcase_add_test(tc, test_timer_oneshot_no_handle);
	suite_add_tcase(s, tc);

	tc = tcase_create("post");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_post_wakes_blocked_loop);
	tcase_add_test(tc, test_post_wakes_loop_with_far_timer);
	tcase_add_test(tc, test_stop_from_thread);
	tcase_add_test(tc, test_stop_from_thread_before_run);
	tcase_add_test(tc, test_destroy_right_after_post);
	tcase_add_test(tc, test_post_many_threads_order);
	tcase_add_test(tc, test_post_from_callback);
	tcase_add_test(tc, test_post_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("engine");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_engine_100k_nops);
	tcase_add_test(tc, test_engine_nops_paced);
	tcase_add_test(tc, test_cancel_then_drain);
	tcase_add_test(tc, test_cancel_same_batch);
	tcase_add_test(tc, test_cancel_after_completion);
	tcase_add_test(tc, test_cancel_fd_all);
	tcase_add_test(tc, test_cancel_many);
	suite_add_tcase(s, tc);

	tc = tcase_create("sq_full");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_sq_full_streams);
	tcase_add_test(tc, test_sq_full_connects);
	tcase_add_test(tc, test_sq_full_connect_timeout);
	tcase_add_test(tc, test_sq_full_server_shutdown);
	tcase_add_test(tc, test_sq_full_shut_rd);
	suite_add_tcase(s, tc);

	tc = tcase_create("misc");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_version);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return t_run_suite(loop_suite());
}
