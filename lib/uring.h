/* SPDX-License-Identifier: MIT */
/* The io_uring backend's private header (uring.c, uring_ops.c, bufring.c,
 * fault.c, and tests of the engine): the one place besides them that sees
 * liburing.  Never installed. */
#ifndef IOU_URING_H
#define IOU_URING_H

#include <liburing.h>

#include "loop_int.h"

/* liburing 2.3's headers predate some kernel constants. */
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif

struct iou__sqe_chunk;

/* A loop on io_uring: the loop and its ring in one allocation, so that
 * getting from one to the other costs nothing. */
struct iou__uring {
	iou_loop loop;
	struct io_uring ring;
	unsigned setup_flags;
	/* SQEs waiting for room in the ring, oldest first (uring.c) */
	struct iou__sqe_chunk *ovf_head, *ovf_tail, *ovf_spare;
	unsigned ovf_first;         /* next SQE to copy in ovf_head */
};

static inline struct iou__uring *iou__uring(iou_loop *loop)
{
	return IOU__CONTAINER_OF(loop, struct iou__uring, loop);
}

/* uring.c */
/* An SQE to fill at once (before the next call): from the ring, or, when
 * the ring is full and the kernel takes nothing, from the loop's overflow
 * queue, submitted as room appears.  NULL only when out of memory. */
struct io_uring_sqe *iou__get_sqe(iou_loop *loop);

#endif /* IOU_URING_H */
