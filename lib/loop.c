/* SPDX-License-Identifier: MIT */
/* The loop: its turn (wait, dispatch, timers, posts, end-of-turn work),
 * cross-thread wake-up and stop; the kernel's side is the backend's
 * (backend.h). */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "epoll.h"
#include "internal.h" /* the end-of-turn work of streams */

#define DEFAULT_QUEUE_DEPTH 512
#define DEFAULT_BUF_SIZE 16384
#define DEFAULT_BUF_COUNT 1024

void iou_loop_opts_init(struct iou_loop_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof(*opts));
	opts->queue_depth = DEFAULT_QUEUE_DEPTH;
	opts->buf_size = DEFAULT_BUF_SIZE;
	opts->buf_count = DEFAULT_BUF_COUNT;
}

uint64_t iou__clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool opts_valid(const struct iou_loop_opts *o)
{
	if (o->queue_depth < 1 || o->queue_depth > 32768)
		return false;
	if (o->buf_size < 64 || o->buf_size > (1u << 20))
		return false;
	if (o->buf_count < 1 || o->buf_count > 32768 ||
	    (o->buf_count & (o->buf_count - 1)))
		return false;
	if (o->backend > IOU_BACKEND_EPOLL)
		return false;
	return (o->flags & ~(IOU_LOOP_NO_DEFER_TASKRUN | IOU_LOOP_NO_RECV_BUNDLE)) == 0;
}

/* AUTO resolved by IOU_BACKEND; -EINVAL for a value it does not know. */
static int backend_wanted(const struct iou_loop_opts *o)
{
	const char *env;

	if (o->backend != IOU_BACKEND_AUTO)
		return (int)o->backend;
	env = getenv("IOU_BACKEND");
	if (!env || !*env)
		return IOU_BACKEND_AUTO;
	if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
		return IOU_BACKEND_URING;
	if (strcmp(env, "epoll") == 0)
		return IOU_BACKEND_EPOLL;
	return -EINVAL;
}

const char *iou_loop_backend(const iou_loop *loop)
{
	if (!loop)
		return NULL;
	return loop->backend == IOU_BACKEND_EPOLL ? "epoll" : "io_uring";
}

/* AUTO: io_uring, or epoll where it is blocked or lacks what iou needs. */
static int backend_create(const struct iou_loop_opts *opts, int want,
			  iou_loop **out)
{
	int ret;

	if (want == IOU_BACKEND_EPOLL)
		return iou__ep_create(opts, out);
	ret = iou__be_create(opts, out);
	if (want == IOU_BACKEND_AUTO &&
	    (ret == -IOU_ENOURING || ret == -IOU_ENOFEATURE))
		ret = iou__ep_create(opts, out);
	return ret;
}

static void wake_complete(struct iou__op *op, const struct iou__cqe_rec *cqe);

static int wake_arm(iou_loop *loop)
{
	if (iou__be_read(loop, &loop->wake_op, loop->wake_fd, &loop->wake_value,
			 sizeof(loop->wake_value)) < 0)
		return -EAGAIN;
	loop->wake_armed = true;
	return 0;
}

static void wake_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	iou_loop *loop = IOU__CONTAINER_OF(op, iou_loop, wake_op);

	loop->wake_armed = false;
	/* Posts made from now on must write the eventfd again.  A poster
	 * publishes its request, then sets wake_pending; here the flag is
	 * cleared before this turn looks for requests (run_posts() and the
	 * stop check come after dispatch).  All four accesses are seq_cst, so
	 * a poster that still saw the flag set (and wrote nothing) published
	 * before this turn looks: no request waits without a wake-up. */
	__atomic_store_n(&loop->wake_pending, 0, __ATOMIC_SEQ_CST);
	if (cqe->res == -ECANCELED)
		return; /* iou_loop_destroy() asked for it */
	wake_arm(loop);
}

int iou_loop_create(iou_loop **out, const struct iou_loop_opts *opts)
{
	struct iou_loop_opts defaults;
	iou_loop *loop;
	int ret;

	if (!out)
		return -EINVAL;
	if (!opts) {
		iou_loop_opts_init(&defaults);
		opts = &defaults;
	}
	if (!opts_valid(opts))
		return -EINVAL;
	ret = backend_wanted(opts);
	if (ret < 0)
		return ret;
	ret = backend_create(opts, ret, &loop);
	if (ret < 0)
		return ret;
	loop->wake_op.complete = wake_complete;
	iou__list_init(&loop->starved);
	iou__list_init(&loop->deferred);
	iou__list_init(&loop->holders);
	loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->wake_fd < 0) {
		ret = -errno;
		goto err_be;
	}
	ret = wake_arm(loop);
	if (ret < 0)
		goto err_wake;
	loop->now = iou__clock_ms();
#ifdef IOU_FAULT_INJECTION
	iou__fault_init(loop);
#endif
	*out = loop;
	return 0;

err_wake:
	close(loop->wake_fd);
err_be:
	iou__be_destroy(loop);
	return ret;
}

int iou_loop_alive(const iou_loop *loop)
{
	if (!loop)
		return 0;
	return loop->active > 0 ||
	       __atomic_load_n(&loop->post_head, __ATOMIC_RELAXED) != NULL;
}

int iou_loop_destroy(iou_loop *loop)
{
	if (!loop)
		return -EINVAL;
	/* Signal watchers keep no loop running, but they must be stopped. */
	if (loop->in_run || iou_loop_alive(loop) || loop->sigs)
		return -EBUSY;
	loop->destroying = true;
	/* The wake read is the kernel's until its CQE: cancel it and wait.
	 * If a wake-up was pending, the read completes with data rather than
	 * -ECANCELED and re-arms itself: cancel again, each turn. */
	for (int i = 0; i < 1000 && loop->wake_armed; i++) {
		if (iou__cancel_op(loop, &loop->wake_op, loop->wake_fd) < 0)
			break;
		iou_loop_run_once(loop, 10);
	}
	/* A post's callback may have run, and brought the application here,
	 * before that iou_loop_post() (or a stop) on another thread finished
	 * its wake-up: let it leave the loop first. */
	while (__atomic_load_n(&loop->posters, __ATOMIC_SEQ_CST))
		sched_yield();
	close(loop->wake_fd);
	iou__timers_free(loop);
	while (loop->free_writes) {
		void *next = *(void **)loop->free_writes;
		free(loop->free_writes);
		loop->free_writes = next;
	}
	iou__blk_cache_free(&loop->blocks);
	iou__tasks_free(loop);
#ifdef IOU_FAULT_INJECTION
	iou__fault_fini(loop);
#endif
	iou__be_destroy(loop);
	return 0;
}

void iou__op_submitted(iou_loop *loop)
{
	loop->active++;
}

void iou__op_done(iou_loop *loop)
{
	loop->active--;
}

/* A callback posted by iou_loop_post(), from any thread. */
struct iou__post {
	struct iou__post *next;
	void (*fn)(void *ud);
	void *ud;
};

/* Take every posted callback at once and run them oldest first. */
static int run_posts(iou_loop *loop)
{
	struct iou__post *p, *lifo;
	int n = 0;

	lifo = __atomic_exchange_n(&loop->post_head, NULL, __ATOMIC_SEQ_CST);
	for (p = NULL; lifo;) {
		struct iou__post *next = lifo->next;

		lifo->next = p;
		p = lifo;
		lifo = next;
	}
	while (p) {
		struct iou__post *next = p->next;

		p->fn(p->ud);
		free(p);
		p = next;
		n++;
	}
	return n;
}

/* How long the coming wait may block, in ms; -1 = until a completion. */
static int wait_budget(iou_loop *loop, int timeout_ms)
{
	int next;

	if (timeout_ms == 0 ||
	    __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&loop->post_head, __ATOMIC_RELAXED) ||
	    !iou__list_empty(&loop->deferred) || iou__tasks_ready(loop))
		return 0;
	next = iou__timers_next_ms(loop);
	if (next >= 0 && (timeout_ms < 0 || next < timeout_ms))
		return next;
	return timeout_ms;
}

/* The loop whose turn runs on this thread: a stop or post made from its
 * callbacks needs no wake-up (the wait is over, and the next turn's wait
 * sees the request), and writing one would end the next wait early. */
static _Thread_local iou_loop *turn_loop;

int iou_loop_run_once(iou_loop *loop, int timeout_ms)
{
	iou_loop *outer = turn_loop;
	int ret, n;

	if (!loop || timeout_ms < -1)
		return -EINVAL;
	if (loop->in_run)
		return -EBUSY;
	loop->in_run = true;
#ifdef IOU_FAULT_INJECTION
	iou__fault_turn(loop);
#endif
	iou__bufring_publish(loop);
	/* The wake-up read re-arms itself; if it found no SQE then, now. */
	if (!loop->wake_armed && !loop->destroying)
		wake_arm(loop);
	/* The clock moved while the last turn's callbacks ran: a timer due
	 * now must not wait a whole extra timeout. */
	if (iou__timers_next_ms(loop) >= 0)
		loop->now = iou__clock_ms();
	ret = iou__be_wait(loop, wait_budget(loop, timeout_ms));
	loop->now = iou__clock_ms();
	turn_loop = loop;
	n = iou__be_dispatch(loop);
	n += iou__timers_run(loop);
	n += run_posts(loop);
	/* Tasks first: what they queue goes out with this turn's submit. */
	iou__tasks_turn_end(loop);
	iou__streams_turn_end(loop);
	turn_loop = outer;
	/* This turn takes a stop request, whether made before it or by its
	 * callbacks; the next turn waits as usual. */
	loop->stop = __atomic_exchange_n(&loop->stop_requested, 0,
					 __ATOMIC_SEQ_CST) != 0;
#ifdef IOU_FAULT_INJECTION
	iou__fault_turn_end();
#endif
	loop->in_run = false;
	return ret < 0 ? ret : n;
}

int iou_loop_run(iou_loop *loop)
{
	if (!loop)
		return -EINVAL;
	while (iou_loop_alive(loop)) {
		int ret = iou_loop_run_once(loop, -1);

		if (ret < 0)
			return ret;
		if (loop->stop)
			return 1;
	}
	return 0;
}

static void wake(iou_loop *loop)
{
	uint64_t one = 1;

	if (turn_loop == loop)
		return;
	if (__atomic_exchange_n(&loop->wake_pending, 1, __ATOMIC_SEQ_CST))
		return; /* a write is already on its way */
	while (write(loop->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

void iou_loop_stop(iou_loop *loop)
{
	if (!loop)
		return;
	__atomic_add_fetch(&loop->posters, 1, __ATOMIC_SEQ_CST);
	/* seq_cst, as the wake-up's flag: see wake_complete() */
	__atomic_store_n(&loop->stop_requested, 1, __ATOMIC_SEQ_CST);
	wake(loop);
	__atomic_sub_fetch(&loop->posters, 1, __ATOMIC_SEQ_CST);
}

int iou_loop_post(iou_loop *loop, void (*fn)(void *ud), void *ud)
{
	struct iou__post *p;

	if (!loop || !fn)
		return -EINVAL;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->ud = ud;
	/* Counted before the push: once pushed, the callback may run and the
	 * loop be destroyed, which waits for this call to end. */
	__atomic_add_fetch(&loop->posters, 1, __ATOMIC_SEQ_CST);
	/* Push onto the list's head; run_posts() takes the whole list and
	 * reverses it, so each thread's posts run in the order made.  seq_cst:
	 * see wake_complete(). */
	p->next = __atomic_load_n(&loop->post_head, __ATOMIC_RELAXED);
	while (!__atomic_compare_exchange_n(&loop->post_head, &p->next, p, true,
					    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		;
	wake(loop);
	__atomic_sub_fetch(&loop->posters, 1, __ATOMIC_SEQ_CST);
	return 0;
}

uint64_t iou_loop_now(const iou_loop *loop)
{
	return loop ? loop->now : 0;
}
