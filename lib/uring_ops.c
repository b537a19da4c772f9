/* SPDX-License-Identifier: MIT */
/* The operations of backend.h on io_uring: one SQE each, user_data the op.
 * (Apart from the engine in uring.c so that fuzz/fuzz_bufstream.c can put
 * its fake ring under them.)  A loop on epoll goes to epoll.c instead. */
#include <errno.h>
#include <sys/socket.h>

#include "epoll.h"
#include "uring.h"

int iou__be_recv(iou_loop *loop, struct iou__op *op, int fd, size_t limit)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_recv(loop, op, fd, limit);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	if (loop->bufs.bundle)
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	/* sqe->optlen in newer headers; liburing 2.3 names that word file_index */
	if (limit)
		sqe->file_index = limit < UINT32_MAX ? (uint32_t)limit : UINT32_MAX;
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)loop->bufs.bgid;
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_send(iou_loop *loop, struct iou__op *op, int fd, const void *buf,
		 size_t len)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_send(loop, op, fd, buf, len);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_sendmsg(iou_loop *loop, struct iou__op *op, int fd,
		    const struct msghdr *msg)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_sendmsg(loop, op, fd, msg);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_nop(iou_loop *loop, struct iou__op *op)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_nop(loop, op);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_shutdown(iou_loop *loop, struct iou__op *op, int fd, int how)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_shutdown(loop, op, fd, how);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_shutdown(sqe, fd, how);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_close(iou_loop *loop, struct iou__op *op, int fd)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_close(loop, op, fd);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_close(sqe, fd);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_accept(iou_loop *loop, struct iou__op *op, int fd)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_accept(loop, op, fd);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_connect(iou_loop *loop, struct iou__op *op, int fd,
		    const struct sockaddr *sa, unsigned addrlen)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_connect(loop, op, fd, sa, addrlen);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_connect(sqe, fd, sa, addrlen);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

int iou__be_read(iou_loop *loop, struct iou__op *op, int fd, void *buf,
		 size_t len)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_read(loop, op, fd, buf, len);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

/* Cancel requests complete with user_data 0, which dispatch ignores: the
 * cancelled op itself still gets its own (final) CQE. */
int iou__cancel_op(iou_loop *loop, struct iou__op *op, int fd)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_cancel_op(loop, op, fd);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_cancel(sqe, op, 0);
	io_uring_sqe_set_data64(sqe, 0);
	return 0;
}

int iou__cancel_fd(iou_loop *loop, int fd)
{
	struct io_uring_sqe *sqe;

	if (iou__on_epoll(loop))
		return iou__ep_cancel_fd(loop, fd);
	sqe = iou__get_sqe(loop);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, 0);
	return 0;
}
