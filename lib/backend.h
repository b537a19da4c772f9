/* SPDX-License-Identifier: MIT */
/* The kernel interface of the library, at the level of operations (as
 * libxev's backends, not readiness as redis's ae): streams, servers,
 * connects, signals and the loop start operations through these calls and
 * learn their results from a completion record; only the backend knows the
 * kernel's interface (lib/uring.c, lib/uring_ops.c, lib/bufring.c for
 * io_uring).  Never installed; included by internal.h. */
#ifndef IOU_BACKEND_H
#define IOU_BACKEND_H

#include <stdint.h>

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

#endif /* IOU_BACKEND_H */
