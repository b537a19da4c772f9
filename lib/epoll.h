/* SPDX-License-Identifier: MIT */
/* The epoll backend's entry points (epoll.c): backend.h's calls for a loop
 * that runs on epoll.  The io_uring side (uring.c, uring_ops.c) checks
 * iou__on_epoll() first and hands the call over; the branch is predicted
 * and costs the io_uring hot path nothing measurable.  Never installed. */
#ifndef IOU_EPOLL_H
#define IOU_EPOLL_H

#include "loop_int.h"

static inline bool iou__on_epoll(const iou_loop *loop)
{
	return __builtin_expect(loop->backend == IOU_BACKEND_EPOLL, 0);
}

int iou__ep_recv(iou_loop *loop, struct iou__op *op, int fd, size_t limit);
int iou__ep_send(iou_loop *loop, struct iou__op *op, int fd, const void *buf,
		 size_t len);
int iou__ep_sendmsg(iou_loop *loop, struct iou__op *op, int fd,
		    const struct msghdr *msg);
int iou__ep_nop(iou_loop *loop, struct iou__op *op);
int iou__ep_shutdown(iou_loop *loop, struct iou__op *op, int fd, int how);
int iou__ep_close(iou_loop *loop, struct iou__op *op, int fd);
int iou__ep_accept(iou_loop *loop, struct iou__op *op, int fd);
int iou__ep_connect(iou_loop *loop, struct iou__op *op, int fd,
		    const struct sockaddr *sa, unsigned addrlen);
int iou__ep_read(iou_loop *loop, struct iou__op *op, int fd, void *buf,
		 size_t len);
int iou__ep_cancel_op(iou_loop *loop, struct iou__op *op, int fd);
int iou__ep_cancel_fd(iou_loop *loop, int fd);
int iou__ep_create(const struct iou_loop_opts *opts, iou_loop **out);
void iou__ep_destroy(iou_loop *loop);
int iou__ep_wait(iou_loop *loop, int wait_ms);
int iou__ep_dispatch(iou_loop *loop);

#endif /* IOU_EPOLL_H */
