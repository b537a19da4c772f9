/* SPDX-License-Identifier: MIT */
/* The ring engine: set-up with feature fallbacks, SQE acquisition, one
 * submit-and-wait per turn, batched CQE dispatch, cross-thread wake-up. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Fault injection (lib/fault.c) hooks; nothing at all in a default build. */
#ifdef IOU_FAULT_INJECTION
#define FAULT_SQ(loop) iou__fault_sq(loop)
#else
#define FAULT_SQ(loop) ((void)0)
#endif

#define DEFAULT_QUEUE_DEPTH 512
#define DEFAULT_BUF_SIZE 16384
#define DEFAULT_BUF_COUNT 1024
#define MAX_CQ_ENTRIES 65536u

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
	return (o->flags & ~(IOU_LOOP_NO_DEFER_TASKRUN | IOU_LOOP_NO_RECV_BUNDLE)) == 0;
}

/* The errors of a seccomp filter (EPERM in Docker's default profile, ENOSYS
 * in others), of kernel.io_uring_disabled or of a kernel without io_uring.
 * A filter may refuse io_uring_enter or io_uring_register while
 * io_uring_setup works: io_uring is blocked then, the kernel is not old. */
static bool uring_blocked(int ret)
{
	return ret == -EPERM || ret == -ENOSYS;
}

/* Try the best ring set-up first and fall back step by step, as kernels
 * before 6.1 refuse DEFER_TASKRUN and those before 5.19 COOP_TASKRUN. */
static int ring_init(iou_loop *loop, unsigned depth, unsigned flags)
{
	static const unsigned tries[] = {
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
			IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
			IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SUBMIT_ALL,
		0,
	};
	int ret = -EINVAL;

	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;

		if ((flags & IOU_LOOP_NO_DEFER_TASKRUN) &&
		    (tries[i] & IORING_SETUP_DEFER_TASKRUN))
			continue;
		memset(&p, 0, sizeof(p));
		/* Multishot ops post many CQEs per SQE: give the CQ room, up to
		 * the kernel's limit (IORING_MAX_CQ_ENTRIES, 65536), past which
		 * it refuses CQSIZE with -EINVAL. */
		p.flags = tries[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = depth <= MAX_CQ_ENTRIES / 8 ? depth * 8
							  : MAX_CQ_ENTRIES;
		ret = io_uring_queue_init_params(depth, &loop->ring, &p);
		if (ret == 0) {
			loop->setup_flags = tries[i];
			return 0;
		}
		if (ret != -EINVAL)
			break;
	}
	if (uring_blocked(ret))
		return -IOU_ENOURING;
	return ret;
}

/* Multishot recv and accept came with 6.0, as did IORING_OP_SEND_ZC: the
 * opcode probe is the cheapest reliable witness of that kernel.  Not
 * io_uring_get_probe_ring(): its NULL hides why the probe failed. */
static int probe_features(iou_loop *loop)
{
	struct io_uring_probe *probe;
	int ret, ok;

	probe = calloc(1, sizeof(*probe) + 256 * sizeof(probe->ops[0]));
	if (!probe)
		return -ENOMEM;
	ret = io_uring_register_probe(&loop->ring, probe, 256);
	ok = ret >= 0 && io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
	free(probe);
	if (uring_blocked(ret))
		return -IOU_ENOURING;
	/* Before 5.6 there is no probe at all (-EINVAL). */
	return ok ? 0 : -IOU_ENOFEATURE;
}

/* Setup alone proves little: a filter on io_uring_enter would only show in
 * the first iou_loop_run*().  One enter that waits for nothing, once per
 * loop, while the ring is still empty. */
static int enter_check(iou_loop *loop)
{
	int ret = io_uring_get_events(&loop->ring);

	if (uring_blocked(ret))
		return -IOU_ENOURING;
	if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
		return 0; /* transient, as in ring_wait() */
	return ret < 0 ? ret : 0;
}

/* ---- SQ overflow -------------------------------------------------------- */

/* SQEs made while the ring was full and the kernel took none (it refuses
 * SQEs when it cannot allocate requests, for one) wait here, in order, for
 * room; as libxev's io_uring backend does with its unqueued list.  Chunks,
 * so an SQE handed out never moves until it is copied into the ring. */
#define SQE_CHUNK 64

struct iou__sqe_chunk {
	struct iou__sqe_chunk *next;
	unsigned n;                 /* SQEs handed out of this chunk */
	struct io_uring_sqe sqes[SQE_CHUNK];
};

static struct io_uring_sqe *ovf_push(iou_loop *loop)
{
	struct iou__sqe_chunk *c = loop->ovf_tail;
	struct io_uring_sqe *sqe;

	if (!c || c->n == SQE_CHUNK) {
		c = loop->ovf_spare;
		if (c)
			loop->ovf_spare = NULL;
		else if (!(c = malloc(sizeof(*c))))
			return NULL;
		c->next = NULL;
		c->n = 0;
		if (loop->ovf_tail) {
			loop->ovf_tail->next = c;
		} else {
			loop->ovf_head = c;
			loop->ovf_first = 0;
		}
		loop->ovf_tail = c;
	}
	sqe = &c->sqes[c->n++];
	memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

/* Copy the oldest waiting SQE into the ring slot `to`. */
static void ovf_pop(iou_loop *loop, struct io_uring_sqe *to)
{
	struct iou__sqe_chunk *c = loop->ovf_head;

	*to = c->sqes[loop->ovf_first++];
	if (loop->ovf_first < c->n)
		return;
	/* Drained (a tail chunk too: the next push starts a new one). */
	loop->ovf_head = c->next;
	if (!loop->ovf_head)
		loop->ovf_tail = NULL;
	loop->ovf_first = 0;
	if (loop->ovf_spare)
		free(c);
	else
		loop->ovf_spare = c;
}

/* Move waiting SQEs into the ring, submitting whenever it is full; stops
 * when none wait, or when the ring is full and the kernel took nothing
 * (they go out in a later turn). */
static void sq_flush(iou_loop *loop)
{
	for (;;) {
		struct io_uring_sqe *sqe = NULL;

		if (loop->ovf_head)
			sqe = io_uring_get_sqe(&loop->ring);
		if (sqe) {
			ovf_pop(loop, sqe);
			continue;
		}
		if (io_uring_sq_space_left(&loop->ring))
			return; /* nothing waits */
		FAULT_SQ(loop);
		if (io_uring_submit(&loop->ring) <= 0)
			return;
		if (!loop->ovf_head)
			return;
	}
}

static void ovf_free(iou_loop *loop)
{
	while (loop->ovf_head) {
		struct iou__sqe_chunk *c = loop->ovf_head;

		loop->ovf_head = c->next;
		free(c);
	}
	free(loop->ovf_spare);
	loop->ovf_tail = loop->ovf_spare = NULL;
}

/* A full SQ is submitted, or the SQE waits in the overflow queue: no caller
 * ever sees SQ pressure.  Once one SQE waits there, every later one does,
 * so SQEs reach the kernel in the order they were made. */
struct io_uring_sqe *iou__get_sqe(iou_loop *loop)
{
	struct io_uring_sqe *sqe;

	if (!loop->ovf_head && (sqe = io_uring_get_sqe(&loop->ring)))
		return sqe;
	sq_flush(loop);
	if (!loop->ovf_head && (sqe = io_uring_get_sqe(&loop->ring)))
		return sqe;
	return ovf_push(loop); /* NULL: out of memory */
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
	loop = calloc(1, sizeof(*loop));
	if (!loop)
		return -ENOMEM;
	loop->wake_fd = -1;
	loop->wake_op.complete = wake_complete;
	iou__list_init(&loop->starved);
	iou__list_init(&loop->deferred);
	iou__list_init(&loop->holders);

	ret = ring_init(loop, opts->queue_depth, opts->flags);
	if (ret < 0)
		goto err_free;
	ret = enter_check(loop);
	if (ret < 0)
		goto err_ring;
	ret = probe_features(loop);
	if (ret < 0)
		goto err_ring;
	/* Saves the fd lookup on every io_uring_enter; optional (5.18+). */
	io_uring_register_ring_fd(&loop->ring);

	ret = iou__bufring_setup(loop, opts->buf_size, opts->buf_count);
	if (ret < 0)
		goto err_ring;
	/* Receive bundles (6.10+): one CQE for several buffers' worth. */
	loop->bufs.bundle = (loop->ring.features & IORING_FEAT_RECVSEND_BUNDLE) &&
			    !(opts->flags & IOU_LOOP_NO_RECV_BUNDLE);
	loop->bufs.recv_limit = true;
	loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->wake_fd < 0) {
		ret = -errno;
		goto err_bufs;
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
err_bufs:
	iou__bufring_teardown(loop);
err_ring:
	io_uring_queue_exit(&loop->ring);
err_free:
	free(loop);
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
		if (iou__cancel_op(loop, &loop->wake_op) < 0)
			break;
		iou_loop_run_once(loop, 10);
	}
	/* A post's callback may have run, and brought the application here,
	 * before that iou_loop_post() (or a stop) on another thread finished
	 * its wake-up: let it leave the loop first. */
	while (__atomic_load_n(&loop->posters, __ATOMIC_SEQ_CST))
		sched_yield();
	io_uring_queue_exit(&loop->ring);
	iou__bufring_teardown(loop);
	close(loop->wake_fd);
	iou__timers_free(loop);
	while (loop->free_writes) {
		void *next = *(void **)loop->free_writes;
		free(loop->free_writes);
		loop->free_writes = next;
	}
	iou__blk_cache_free(&loop->blocks);
	iou__tasks_free(loop);
	ovf_free(loop);
#ifdef IOU_FAULT_INJECTION
	iou__fault_fini(loop);
#endif
	free(loop);
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

_Static_assert(IOU__CQE_F_BUFFER == IORING_CQE_F_BUFFER &&
	       IOU__CQE_F_MORE == IORING_CQE_F_MORE &&
	       IOU__CQE_BUFFER_SHIFT == IORING_CQE_BUFFER_SHIFT,
	       "the completion record's flags are io_uring's");

static int dispatch_cqes(iou_loop *loop)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&loop->ring, head, cqe) {
		struct iou__op *op = io_uring_cqe_get_data(cqe);
		/* io_uring's flag bits are the record's (backend.h) */
		struct iou__cqe_rec rec = { cqe->res, cqe->flags };

		n++;
		if (!op)
			continue;
#ifdef IOU_FAULT_INJECTION
		if (loop->fault)
			iou__fault_cqe(loop, op, &rec);
#endif
		op->complete(op, &rec);
	}
	io_uring_cq_advance(&loop->ring, n);
	return (int)n;
}

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

	if (timeout_ms == 0 || loop->ovf_head ||
	    __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&loop->post_head, __ATOMIC_RELAXED) ||
	    !iou__list_empty(&loop->deferred) || iou__tasks_ready(loop))
		return 0;
	next = iou__timers_next_ms(loop);
	if (next >= 0 && (timeout_ms < 0 || next < timeout_ms))
		return next;
	return timeout_ms;
}

static int ring_wait(iou_loop *loop, int wait_ms)
{
	struct io_uring_cqe *cqe;
	int ret;

	FAULT_SQ(loop);
	if (wait_ms == 0) {
		ret = io_uring_submit_and_get_events(&loop->ring);
	} else if (wait_ms < 0) {
		ret = io_uring_submit_and_wait(&loop->ring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = wait_ms / 1000,
			.tv_nsec = (long long)(wait_ms % 1000) * 1000000,
		};
		ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1,
						       &ts, NULL);
	}
	if (ret == -ETIME || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
		return 0;
	return ret < 0 ? ret : 0;
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
	/* SQEs that found the ring full go out with this turn's submit;
	 * should some still wait, the wait does not block. */
	sq_flush(loop);
	ret = ring_wait(loop, wait_budget(loop, timeout_ms));
	loop->now = iou__clock_ms();
	turn_loop = loop;
	n = dispatch_cqes(loop);
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
