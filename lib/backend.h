/* SPDX-License-Identifier: MIT */
/* The kernel interface of the library, at the level of operations (as
 * libxev's backends, not readiness as redis's ae): streams, servers,
 * connects, signals and the loop start operations through these calls and
 * learn their results from a completion record; only the backend knows the
 * kernel's interface (lib/uring.c, lib/uring_ops.c, lib/bufring.c for
 * io_uring; lib/epoll.c for epoll, which the io_uring calls hand a loop on
 * epoll to, see epoll.h).  Never installed; included by loop_int.h. */
#ifndef IOU_BACKEND_H
#define IOU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "iou.h"

/* ---- completions -------------------------------------------------------- */

/* What an operation's completion reports: res as a syscall's (count, or
 * -errno; -ECANCELED when cancelled), and flags.  A multishot operation
 * (receive, accept) completes many times; every completion but its last has
 * IOU__CQE_F_MORE.  A receive into the pool has IOU__CQE_F_BUFFER and the
 * first buffer it filled (iou__cqe_buf()); with bundles the others follow in
 * ring order (iou__buf_at()).  The values are io_uring's, so that its
 * backend hands its flags over as they are. */
struct iou__cqe_rec {
	int32_t res;
	uint32_t flags;
};

#define IOU__CQE_F_BUFFER     (1U << 0)
#define IOU__CQE_F_MORE       (1U << 1)
#define IOU__CQE_BUFFER_SHIFT 16

static inline uint32_t iou__cqe_buf(const struct iou__cqe_rec *rec)
{
	return rec->flags >> IOU__CQE_BUFFER_SHIFT;
}

/* An operation the kernel may own.  Its owner embeds it and must not
 * release it before `complete` saw the final completion (the one without
 * IOU__CQE_F_MORE for multishot ops). */
struct iou__op {
	void (*complete)(struct iou__op *op, const struct iou__cqe_rec *rec);
};

/* The pool's buffers (loop_int.h, bufring.c for io_uring): a receive's
 * buffers are the stream's until it gives each back with iou__buf_recycle();
 * returns reach the kernel at iou__bufring_publish(), once per turn before
 * the wait; iou__bufring_grow() puts more of the pool in circulation. */

/* ---- operations --------------------------------------------------------- */

struct msghdr;
struct sockaddr;

/* Each call starts one operation on behalf of `op`, whose completion comes
 * to op->complete in a later turn, never from inside the call.  The caller
 * counts it in flight (iou__op_submitted) and keeps op (and the memory the
 * operation points at) until its final completion.  They return 0, or
 * -EAGAIN when the backend could not take the operation now (out of
 * memory): nothing started, try again later. */

/* A multishot receive on fd into the loop's pool: each completion has the
 * bytes in pool buffers (bundles: maybe several, see struct iou__cqe_rec),
 * 0 at end of file, or an error; -ENOBUFS when the pool had none to give
 * (the receive ends).  limit > 0: it ends by itself once that many bytes
 * came in (kernels before 6.16 fail it with -EINVAL: then arm without). */
int iou__be_recv(iou_loop *loop, struct iou__op *op, int fd, size_t limit);
/* Send on a connected socket, MSG_NOSIGNAL: bytes sent (maybe fewer than
 * asked) or an error. */
int iou__be_send(iou_loop *loop, struct iou__op *op, int fd, const void *buf,
		 size_t len);
int iou__be_sendmsg(iou_loop *loop, struct iou__op *op, int fd,
		    const struct msghdr *msg);
/* Completes with 0, in order with the ops started before it. */
int iou__be_nop(iou_loop *loop, struct iou__op *op);
int iou__be_shutdown(iou_loop *loop, struct iou__op *op, int fd, int how);
int iou__be_close(iou_loop *loop, struct iou__op *op, int fd);
/* A multishot accept: each completion is a new connection's fd
 * (SOCK_CLOEXEC, blocking) or an error. */
int iou__be_accept(iou_loop *loop, struct iou__op *op, int fd);
int iou__be_connect(iou_loop *loop, struct iou__op *op, int fd,
		    const struct sockaddr *sa, unsigned addrlen);
/* A read of fd into buf (the signalfd, the wake-up eventfd). */
int iou__be_read(iou_loop *loop, struct iou__op *op, int fd, void *buf,
		 size_t len);
/* Ask for op's end: it completes (its final completion) with -ECANCELED,
 * or with what it got before the cancel took; cancelling an op that ended
 * is harmless.  The cancel itself reports to nobody.  fd is the one op was
 * started on (epoll finds the op among that fd's, io_uring needs none). */
int iou__cancel_op(iou_loop *loop, struct iou__op *op, int fd);
/* The same for every op on fd. */
int iou__cancel_fd(iou_loop *loop, int fd);

/* ---- the loop's side ---------------------------------------------------- */

/* A loop (zeroed but for the pool and loop->bufs) with its backend set up
 * for opts (validated): 0, or -IOU_ENOURING, -IOU_ENOFEATURE, -errno. */
int iou__be_create(const struct iou_loop_opts *opts, iou_loop **out);
/* Release the backend and the loop's memory; no op may be in flight. */
void iou__be_destroy(iou_loop *loop);
/* Start what the turn queued and wait up to wait_ms (-1: until something
 * completes, 0: not at all) for completions.  0, or -errno (not for a
 * timeout or an interrupted wait). */
int iou__be_wait(iou_loop *loop, int wait_ms);
/* Run the complete function of every completion that came in; how many. */
int iou__be_dispatch(iou_loop *loop);

#endif /* IOU_BACKEND_H */
