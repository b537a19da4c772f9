/* SPDX-License-Identifier: MIT */
/* The io_uring backend's engine: ring set-up with feature fallbacks, SQE
 * acquisition with an overflow queue (no caller ever sees a full SQ), one
 * submit-and-wait per turn, batched CQE dispatch.  The operations are in
 * uring_ops.c, the provided-buffer ring in bufring.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "epoll.h"
#include "uring.h"

/* Fault injection (lib/fault.c) hooks; nothing at all in a default build. */
#ifdef IOU_FAULT_INJECTION
#define FAULT_SQ(loop) iou__fault_sq(loop)
#else
#define FAULT_SQ(loop) ((void)0)
#endif

#define MAX_CQ_ENTRIES 65536u

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
static int ring_init(struct iou__uring *u, unsigned depth, unsigned flags)
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
		ret = io_uring_queue_init_params(depth, &u->ring, &p);
		if (ret == 0) {
			u->setup_flags = tries[i];
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
static int probe_features(struct iou__uring *u)
{
	struct io_uring_probe *probe;
	int ret, ok;

	probe = calloc(1, sizeof(*probe) + 256 * sizeof(probe->ops[0]));
	if (!probe)
		return -ENOMEM;
	ret = io_uring_register_probe(&u->ring, probe, 256);
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
static int enter_check(struct iou__uring *u)
{
	int ret = io_uring_get_events(&u->ring);

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

static struct io_uring_sqe *ovf_push(struct iou__uring *u)
{
	struct iou__sqe_chunk *c = u->ovf_tail;
	struct io_uring_sqe *sqe;

	if (!c || c->n == SQE_CHUNK) {
		c = u->ovf_spare;
		if (c)
			u->ovf_spare = NULL;
		else if (!(c = malloc(sizeof(*c))))
			return NULL;
		c->next = NULL;
		c->n = 0;
		if (u->ovf_tail) {
			u->ovf_tail->next = c;
		} else {
			u->ovf_head = c;
			u->ovf_first = 0;
		}
		u->ovf_tail = c;
	}
	sqe = &c->sqes[c->n++];
	memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

/* Copy the oldest waiting SQE into the ring slot `to`. */
static void ovf_pop(struct iou__uring *u, struct io_uring_sqe *to)
{
	struct iou__sqe_chunk *c = u->ovf_head;

	*to = c->sqes[u->ovf_first++];
	if (u->ovf_first < c->n)
		return;
	/* Drained (a tail chunk too: the next push starts a new one). */
	u->ovf_head = c->next;
	if (!u->ovf_head)
		u->ovf_tail = NULL;
	u->ovf_first = 0;
	if (u->ovf_spare)
		free(c);
	else
		u->ovf_spare = c;
}

/* Move waiting SQEs into the ring, submitting whenever it is full; stops
 * when none wait, or when the ring is full and the kernel took nothing
 * (they go out in a later turn). */
static void sq_flush(struct iou__uring *u)
{
	for (;;) {
		struct io_uring_sqe *sqe = NULL;

		if (u->ovf_head)
			sqe = io_uring_get_sqe(&u->ring);
		if (sqe) {
			ovf_pop(u, sqe);
			continue;
		}
		if (io_uring_sq_space_left(&u->ring))
			return; /* nothing waits */
		FAULT_SQ(&u->loop);
		if (io_uring_submit(&u->ring) <= 0)
			return;
		if (!u->ovf_head)
			return;
	}
}

static void ovf_free(struct iou__uring *u)
{
	while (u->ovf_head) {
		struct iou__sqe_chunk *c = u->ovf_head;

		u->ovf_head = c->next;
		free(c);
	}
	free(u->ovf_spare);
	u->ovf_tail = u->ovf_spare = NULL;
}

/* A full SQ is submitted, or the SQE waits in the overflow queue: no caller
 * ever sees SQ pressure.  Once one SQE waits there, every later one does,
 * so SQEs reach the kernel in the order they were made. */
struct io_uring_sqe *iou__get_sqe(iou_loop *loop)
{
	struct iou__uring *u = iou__uring(loop);
	struct io_uring_sqe *sqe;

	if (!u->ovf_head && (sqe = io_uring_get_sqe(&u->ring)))
		return sqe;
	sq_flush(u);
	if (!u->ovf_head && (sqe = io_uring_get_sqe(&u->ring)))
		return sqe;
	return ovf_push(u); /* NULL: out of memory */
}


int iou__be_create(const struct iou_loop_opts *opts, iou_loop **out)
{
	struct iou__uring *u;
	iou_loop *loop;
	int ret;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	loop = &u->loop;
	loop->backend = IOU_BACKEND_URING;
	ret = ring_init(u, opts->queue_depth, opts->flags);
	if (ret < 0)
		goto err_free;
	ret = enter_check(u);
	if (ret < 0)
		goto err_ring;
	ret = probe_features(u);
	if (ret < 0)
		goto err_ring;
	/* Saves the fd lookup on every io_uring_enter; optional (5.18+). */
	io_uring_register_ring_fd(&u->ring);

	ret = iou__bufring_setup(loop, opts->buf_size, opts->buf_count);
	if (ret < 0)
		goto err_ring;
	/* Receive bundles (6.10+): one CQE for several buffers' worth. */
	loop->bufs.bundle = (u->ring.features & IORING_FEAT_RECVSEND_BUNDLE) &&
			    !(opts->flags & IOU_LOOP_NO_RECV_BUNDLE);
	loop->bufs.recv_limit = true;
	*out = loop;
	return 0;

err_ring:
	io_uring_queue_exit(&u->ring);
err_free:
	free(u);
	return ret;
}

void iou__be_destroy(iou_loop *loop)
{
	struct iou__uring *u = iou__uring(loop);

	if (iou__on_epoll(loop)) {
		iou__ep_destroy(loop);
		return;
	}
	io_uring_queue_exit(&u->ring);
	iou__bufring_teardown(loop); /* the kernel holds none of it now */
	ovf_free(u);
	free(u);
}

_Static_assert(IOU__CQE_F_BUFFER == IORING_CQE_F_BUFFER &&
	       IOU__CQE_F_MORE == IORING_CQE_F_MORE &&
	       IOU__CQE_BUFFER_SHIFT == IORING_CQE_BUFFER_SHIFT,
	       "the completion record's flags are io_uring's");

int iou__be_dispatch(iou_loop *loop)
{
	struct io_uring *ring = &iou__uring(loop)->ring;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	if (iou__on_epoll(loop))
		return iou__ep_dispatch(loop);
	io_uring_for_each_cqe(ring, head, cqe) {
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
	io_uring_cq_advance(ring, n);
	return (int)n;
}

static int ring_wait(struct iou__uring *u, int wait_ms)
{
	struct io_uring_cqe *cqe;
	int ret;

	FAULT_SQ(&u->loop);
	if (wait_ms == 0) {
		ret = io_uring_submit_and_get_events(&u->ring);
	} else if (wait_ms < 0) {
		ret = io_uring_submit_and_wait(&u->ring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = wait_ms / 1000,
			.tv_nsec = (long long)(wait_ms % 1000) * 1000000,
		};
		ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1,
						       &ts, NULL);
	}
	if (ret == -ETIME || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
		return 0;
	return ret < 0 ? ret : 0;
}

int iou__be_wait(iou_loop *loop, int wait_ms)
{
	struct iou__uring *u = iou__uring(loop);

	if (iou__on_epoll(loop))
		return iou__ep_wait(loop, wait_ms);
	/* SQEs that found the ring full go out with this turn's submit;
	 * should some still wait, the wait does not block. */
	sq_flush(u);
	return ring_wait(u, u->ovf_head ? 0 : wait_ms);
}
