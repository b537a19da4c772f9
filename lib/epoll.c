/* SPDX-License-Identifier: MIT */
/* The epoll backend: backend.h's operations, with io_uring's semantics,
 * over readiness, for where io_uring is blocked or too old (as libuv and
 * libxev keep one API over both).
 *
 * Operations queue up during the turn and start in iou__ep_wait(), as SQEs
 * do at the submit (the pool's returns are published by then).  Each one
 * is tried at once; one that would block waits on its fd, which is in
 * the epoll set (edge-triggered): a stream's socket from its first receive
 * or send until its close (OP_CLOSE), any other fd only while ops wait on
 * it, removed as the last one ends, before the library can learn of it and
 * close the fd.
 * Completions are queued and run by iou__ep_dispatch(), never from inside
 * the call that started the op.
 *
 * Socket I/O uses MSG_DONTWAIT, so the library's blocking sockets stay as
 * they are; connect and accept set O_NONBLOCK on their socket, and plain
 * reads (signalfd, eventfd) wait for readiness first (level-triggered).
 *
 * The multishot receive takes the pool's buffers in ring order from the
 * ring memory bufring.c fills (published at the end of each turn, as for
 * the kernel), one recvmsg into several of them per turn: a bundle, or one
 * buffer without bundles; -ENOBUFS when none is free; the byte limit is
 * always honoured.  A multishot accept takes up to ACCEPT_BATCH connections
 * a turn and ends at its first error (EMFILE: the server backs off). */
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "epoll.h"

#define RECV_IOV 16      /* buffers one recvmsg may fill (a bundle) */
#define ACCEPT_BATCH 16  /* connections one accept takes per turn */
#define EVENTS 128

/* Fault injection (lib/fault.c) hooks; nothing at all in a default build. */
#ifdef IOU_FAULT_INJECTION
#define FAULT_OP(loop, op, kind, fd) iou__fault_op(loop, op, kind, fd)
#define FAULT_SEND(loop, len, msg) iou__fault_send(loop, len, msg)
#define FAULT_CQE(loop, op, rec) \
	((loop)->fault ? iou__fault_cqe(loop, op, rec) : (void)0)
#else
#define FAULT_OP(loop, op, kind, fd) ((void)0)
#define FAULT_SEND(loop, len, msg) ((void)0)
#define FAULT_CQE(loop, op, rec) ((void)0)
#endif

enum { OP_RECV, OP_SEND, OP_SENDMSG, OP_NOP, OP_SHUTDOWN, OP_CLOSE,
       OP_ACCEPT, OP_CONNECT, OP_READ };

/* The backend's record of an op, from its start to its final completion's
 * dispatch: each armed receive has one, so it is kept small (48 bytes) and
 * allocated in blocks. */
struct ep_op {
	struct iou__op *op;
	struct ep_op *next;     /* submit queue, fd's queue or free list */
	uint64_t turn;          /* the last turn it read in */
	int fd;
	uint8_t kind;
	uint8_t reserve;        /* completion slots it may fill at once */
	bool cancelled;         /* asked before it started */
	bool started;           /* connect: in progress */
	union {
		struct { size_t limit, got; } recv;
		struct { const void *buf; size_t len; } send;
		const struct msghdr *msg;
		struct { void *buf; size_t len; } read;
		struct { const struct sockaddr *sa; unsigned len; } conn;
		int how;
	} u;
};

/* Per fd number (24 bytes: one for every connection). */
struct ep_fd {
	struct ep_op *rd, *wr;  /* ops waiting on it, oldest first */
	uint32_t mask;          /* in the epoll set with these; 0: not */
	bool rd_wait : 1, wr_wait : 1; /* known not ready (until an event) */
	bool hup : 1;           /* the peer closed or an error is pending:
				   a short read does not drain it */
	bool queued : 1;        /* on the ready list */
	bool stream : 1;        /* a stream's socket: stays in the set until
				   its close (the library's streams close
				   through OP_CLOSE alone) */
	bool stashed : 1;       /* stash holds a byte read past a receive's
				   limit, the next receive's first */
	unsigned char stash;
	uint8_t rd_bufs;        /* buffers to offer a read (0: RECV_IOV, as
				   for the first, like a bundle) */
};

/* An idle connection costs a record and an fd entry: 72 bytes with these
 * (lib/internal.h keeps the stream within what is left of 512). */
_Static_assert(sizeof(struct ep_op) <= 48, "an idle connection's record");
_Static_assert(sizeof(struct ep_fd) <= 24, "an idle connection's fd entry");

#define OPS_BLOCK 64 /* records allocated at once */

struct ops_block {
	struct ops_block *next;
	struct ep_op ops[OPS_BLOCK];
};

struct ep_cqe {
	struct ep_op *e;
	int32_t res;
	uint32_t flags;
};

struct iou__ep {
	iou_loop loop;
	int epfd;
	uint64_t turn;
	bool polled;            /* the last turn called epoll_wait */
	uint16_t head;          /* next ring slot to take a buffer from */
	/* The tables that grow with the connections are mappings (map_grow) */
	struct ep_fd *fds;
	unsigned nfds;
	struct ep_op *sq_head, *sq_tail;
	struct ep_op *free_ops;
	struct ops_block *blocks;
	/* completions: queued, and the batch being dispatched */
	struct ep_cqe *cq, *cq_run;
	unsigned ncq, cq_cap, run_cap, reserved;
	int *ready;             /* fds to read on without a new event */
	unsigned nready, ready_cap;
	struct epoll_event ev[EVENTS];
};

static struct iou__ep *ep_of(iou_loop *loop)
{
	return IOU__CONTAINER_OF(loop, struct iou__ep, loop);
}

/* ---- records ------------------------------------------------------------ */

/* A mapping's length for cap entries (the kernel rounds to its page). */
static size_t map_bytes(unsigned cap, size_t size)
{
	return ((size_t)cap * size + 4095) & ~(size_t)4095;
}

/* A table of *cap entries of size bytes grown to at least want: an
 * anonymous mapping, doubled with mremap, so that growing copies nothing,
 * new entries are zero, and only the pages written to are resident (the
 * heap would keep every outgrown copy). */
static int map_grow(void **p, unsigned *cap, unsigned want, size_t size)
{
	size_t old = map_bytes(*cap, size), bytes = old ? old : 4096;
	void *q;

	if (want <= *cap)
		return 0;
	while (bytes < (size_t)want * size)
		bytes *= 2;
#ifdef IOU_FAULT_INJECTION
	if (iou__fault_map_fails())
		return -ENOMEM;
#endif
	if (old)
		q = mremap(*p, old, bytes, MREMAP_MAYMOVE);
	else
		q = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED)
		return -ENOMEM;
	*p = q;
	*cap = (unsigned)(bytes / size);
	return 0;
}

static void map_free(void *p, unsigned cap, size_t size)
{
	if (cap)
		munmap(p, map_bytes(cap, size));
}

/* Room for every completion the ops may queue before a dispatch: so that
 * queueing one never fails. */
static int cq_reserve(struct iou__ep *ep, unsigned n)
{
	unsigned want = ep->reserved + n;

	if (map_grow((void **)&ep->cq, &ep->cq_cap, want, sizeof(*ep->cq)) ||
	    map_grow((void **)&ep->cq_run, &ep->run_cap, want,
		     sizeof(*ep->cq_run)))
		return -ENOMEM;
	return 0;
}

/* An entry for fd, and room for every fd on the ready list (ready_cap >=
 * nfds, once this succeeded: ready_add() needs no check). */
static int fd_reserve(struct iou__ep *ep, int fd)
{
	if (fd < 0 || ((unsigned)fd < ep->nfds && ep->nfds <= ep->ready_cap))
		return 0;
	if (map_grow((void **)&ep->fds, &ep->nfds, (unsigned)fd + 1,
		     sizeof(*ep->fds)) ||
	    map_grow((void **)&ep->ready, &ep->ready_cap, ep->nfds,
		     sizeof(*ep->ready)))
		return -ENOMEM;
	return 0;
}

static struct ep_op *op_alloc(struct iou__ep *ep)
{
	struct ep_op *e = ep->free_ops;
	struct ops_block *b;

	if (e) {
		ep->free_ops = e->next;
		return e;
	}
	b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	b->next = ep->blocks;
	ep->blocks = b;
	for (unsigned i = 1; i < OPS_BLOCK; i++) {
		b->ops[i].next = ep->free_ops;
		ep->free_ops = &b->ops[i];
	}
	return &b->ops[0];
}

/* A record for op, queued to start at the coming wait; NULL when out of
 * memory (the caller returns -EAGAIN). */
static struct ep_op *op_new(iou_loop *loop, struct iou__op *op, int kind,
			    int fd, unsigned reserve)
{
	struct iou__ep *ep = ep_of(loop);
	struct ep_op *e;

	if (fd_reserve(ep, fd) < 0 || cq_reserve(ep, reserve) < 0 ||
	    !(e = op_alloc(ep)))
		return NULL;
	memset(e, 0, sizeof(*e));
	e->op = op;
	e->kind = (uint8_t)kind;
	e->fd = fd;
	e->reserve = (uint8_t)reserve;
	e->turn = UINT64_MAX;
	ep->reserved += reserve;
	if (ep->sq_tail)
		ep->sq_tail->next = e;
	else
		ep->sq_head = e;
	ep->sq_tail = e;
	return e;
}

static void post(struct iou__ep *ep, struct ep_op *e, int32_t res,
		 uint32_t flags)
{
	ep->cq[ep->ncq++] = (struct ep_cqe){ e, res, flags };
}

/* ---- the epoll set ------------------------------------------------------ */

static void unlink_op(struct ep_op **list, struct ep_op *e)
{
	while (*list != e)
		list = &(*list)->next;
	*list = e->next;
}

static void fail_waiting(struct iou__ep *ep, struct ep_fd *f, int err)
{
	while (f->rd) {
		struct ep_op *e = f->rd;

		f->rd = e->next;
		post(ep, e, err, 0);
	}
	while (f->wr) {
		struct ep_op *e = f->wr;

		f->wr = e->next;
		post(ep, e, err, 0);
	}
}

/* Put fd in the epoll set for what its ops wait for, or take it out once
 * none does; should the kernel refuse, they end with its error.  A
 * stream's socket, once in, stays with both directions until its close:
 * a receive re-armed or a send that waits costs no epoll_ctl, and the
 * events it gets meanwhile keep rd_wait and wr_wait true to the socket
 * (edge-triggered: EPOLLOUT comes only after a send found it full). */
static void fd_update(struct iou__ep *ep, int fd)
{
	struct ep_fd *f = &ep->fds[fd];
	struct epoll_event ev = { .data.u64 = (uint64_t)fd };
	uint32_t mask = 0;
	int ctl;

	if (f->rd && f->rd->kind == OP_READ)
		mask = EPOLLIN; /* level: a read may leave more behind */
	else if (f->stream && (f->rd || f->wr || f->mask))
		mask = EPOLLET | EPOLLIN | EPOLLRDHUP | EPOLLOUT;
	else if (f->rd || f->wr)
		mask = EPOLLET | (f->rd ? EPOLLIN | EPOLLRDHUP : 0) |
		       (f->wr ? EPOLLOUT : 0);
	if (mask == f->mask)
		return;
	ctl = !mask ? EPOLL_CTL_DEL : f->mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	ev.events = mask;
	if (epoll_ctl(ep->epfd, ctl, fd, &ev) < 0 && ctl != EPOLL_CTL_DEL) {
		int err = -errno;

		fail_waiting(ep, f, err);
		if (f->mask)
			epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, &ev);
		mask = 0;
	}
	f->mask = mask;
	if (!mask) /* out of the set: nothing known about it any more */
		f->rd_wait = f->wr_wait = f->hup = f->stream = false;
}

static void ready_add(struct iou__ep *ep, int fd)
{
	struct ep_fd *f = &ep->fds[fd];

	/* ready_cap >= nfds: grown with the fd table */
	if (f->queued)
		return;
	f->queued = true;
	ep->ready[ep->nready++] = fd;
}

/* ---- running ops -------------------------------------------------------- */

/* Post a receive's bytes (the buffers from the ring's head on); true: its
 * limit is reached, the receive ended. */
static bool recv_post(struct iou__ep *ep, struct ep_op *e, size_t len)
{
	struct iou__bufring *b = &ep->loop.bufs;
	uint32_t size = ep->loop.pool.buf_size;
	uint32_t flags = IOU__CQE_F_BUFFER |
			 b->slot_bid[ep->head & b->mask] << IOU__CQE_BUFFER_SHIFT;
	bool end;

	ep->head = (uint16_t)(ep->head + (len + size - 1) / size);
	e->u.recv.got += len;
	end = e->u.recv.limit && e->u.recv.got >= e->u.recv.limit;
	post(ep, e, (int32_t)len, end ? flags : flags | IOU__CQE_F_MORE);
	return end;
}

/* One recvmsg into the free buffers at the ring's head.  true: the op
 * ended.
 *
 * A read that fills what it offered leaves the socket's state unknown: the
 * fd goes on the ready list and the next turn reads again.  When the byte
 * limit cut the offer, that read would belong to the next receive (the
 * stream's re-arm, in a request-response most often a futile EAGAIN):
 * instead, one byte past the limit is asked for, into the fd's stash, and
 * handed to the next receive first.  A short read then says "emptied". */
static bool run_recv(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	iou_loop *loop = &ep->loop;
	struct iou__bufring *b = &loop->bufs;
	uint32_t size = loop->pool.buf_size;
	uint16_t tail = __atomic_load_n(&b->br->tail, __ATOMIC_RELAXED);
	unsigned avail = (uint16_t)(tail - ep->head), n;
	struct iovec iov[RECV_IOV + 1];
	struct msghdr msg = { .msg_iov = iov };
	size_t want = 0, left = SIZE_MAX, asked;
	bool stashed = f->stashed;
	unsigned char probe;
	ssize_t ret = 0;
	int err = EAGAIN;

	if (e->turn == ep->turn) { /* one read per op and turn */
		ready_add(ep, e->fd);
		return false;
	}
	if (!avail) {
		post(ep, e, -ENOBUFS, 0);
		return true;
	}
	/* At most half of the free buffers (and RECV_IOV): when few are
	 * free, a stream with a flood must leave some to the others.  And
	 * no more than the fd's last reads suggest: each iovec costs the
	 * kernel time to import and to walk (16 of them: 6% more per 16 KiB
	 * read than 1). */
	n = b->bundle ? (avail + 1) / 2 : 1;
	if (n > (f->rd_bufs ? f->rd_bufs : RECV_IOV))
		n = f->rd_bufs ? f->rd_bufs : RECV_IOV;
	if (e->u.recv.limit)
		left = e->u.recv.limit - e->u.recv.got;
	do { /* n >= 1 and left >= 1: at least one */
		uint16_t bid = b->slot_bid[(uint16_t)(ep->head +
					     msg.msg_iovlen) & b->mask];
		struct iovec *v = &iov[msg.msg_iovlen++];

		v->iov_base = iou__buf_addr(loop, bid);
		v->iov_len = left - want < size ? left - want : size;
		want += v->iov_len;
	} while (msg.msg_iovlen < n && want < left);
	if (stashed) { /* the last receive's byte past its limit first */
		*(unsigned char *)iov[0].iov_base = f->stash;
		iov[0].iov_base = (unsigned char *)iov[0].iov_base + 1;
		iov[0].iov_len--;
		f->stashed = false;
	}
	asked = want - stashed;
	if (want == left && asked) {
		iov[msg.msg_iovlen].iov_base = &probe;
		iov[msg.msg_iovlen++].iov_len = 1;
		asked++;
	}
	if (asked > 0) { /* else only the stash fits */
		do
			ret = recvmsg(e->fd, &msg, MSG_DONTWAIT);
		while (ret < 0 && errno == EINTR);
		err = ret < 0 ? errno : 0;
	}
	if (err == EAGAIN || err == EWOULDBLOCK) {
		if (asked)
			f->rd_wait = true;
		if (!stashed)
			return false;
		e->turn = ep->turn;
		return recv_post(ep, e, 1);
	}
	e->turn = ep->turn;
	if (ret <= 0) { /* end of file, or an error: the receive ends */
		if (stashed) /* left >= 2 here: the byte does not end it */
			recv_post(ep, e, 1);
		post(ep, e, -err, 0);
		return true;
	}
	/* A short read emptied the socket: a new edge comes with new data
	 * (but not for a FIN or an error seen already). */
	if ((size_t)ret < asked && !f->hup)
		f->rd_wait = true;
	else
		ready_add(ep, e->fd);
	/* Next time: what this read needed and one more, or all it may take
	 * after it filled what it offered. */
	f->rd_bufs = (uint8_t)((size_t)ret < asked
		? ((size_t)ret + stashed + size - 1) / size + 1 : RECV_IOV);
	if (f->rd_bufs > RECV_IOV)
		f->rd_bufs = RECV_IOV;
	if ((size_t)ret + stashed > want) {
		f->stash = probe;
		f->stashed = true;
		ret--;
	}
	return recv_post(ep, e, (size_t)ret + stashed);
}

static bool run_accept(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	if (e->turn == ep->turn) {
		ready_add(ep, e->fd);
		return false;
	}
	e->turn = ep->turn;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(e->fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0) {
			post(ep, e, fd, IOU__CQE_F_MORE);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			f->rd_wait = true;
			return false;
		} else if (errno != EINTR) {
			post(ep, e, -errno, 0);
			return true;
		}
	}
	ready_add(ep, e->fd);
	return false;
}

static bool run_read(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	ssize_t ret;

	if (!f->mask || f->rd_wait) /* maybe a blocking fd: readiness first */
		return false;
	do
		ret = read(e->fd, e->u.read.buf, e->u.read.len);
	while (ret < 0 && errno == EINTR);
	if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		f->rd_wait = true;
		return false;
	}
	/* level-triggered: an event comes if more is left */
	f->rd_wait = true;
	post(ep, e, ret < 0 ? -errno : (int32_t)ret, 0);
	return true;
}

static bool run_send(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	ssize_t ret;

	do {
		if (e->kind == OP_SEND)
			ret = send(e->fd, e->u.send.buf, e->u.send.len,
				   MSG_NOSIGNAL | MSG_DONTWAIT);
		else
			ret = sendmsg(e->fd, e->u.msg,
				      MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (ret < 0 && errno == EINTR);
	if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		f->wr_wait = true;
		return false;
	}
	post(ep, e, ret < 0 ? -errno : (int32_t)ret, 0);
	return true;
}

static bool run_connect(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (e->started) {
		if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		post(ep, e, -err, 0);
		return true;
	}
	if (fcntl(e->fd, F_SETFL, O_NONBLOCK) < 0) {
		post(ep, e, -errno, 0);
		return true;
	}
	if (connect(e->fd, e->u.conn.sa, e->u.conn.len) == 0) {
		post(ep, e, 0, 0);
		return true;
	}
	if (errno != EINPROGRESS) {
		post(ep, e, -errno, 0);
		return true;
	}
	e->started = true;
	f->wr_wait = true;
	return false;
}

static bool run_wr(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	return e->kind == OP_CONNECT ? run_connect(ep, f, e)
				     : run_send(ep, f, e);
}

static bool run_rd(struct iou__ep *ep, struct ep_fd *f, struct ep_op *e)
{
	if (e->kind == OP_RECV)
		return run_recv(ep, f, e);
	if (e->kind == OP_ACCEPT)
		return run_accept(ep, f, e);
	return run_read(ep, f, e);
}

/* Run the ops waiting on fd, oldest first, as far as it is ready. */
static void run_fd(struct iou__ep *ep, int fd)
{
	struct ep_fd *f = &ep->fds[fd];

	while (f->rd && !f->rd_wait) {
		struct ep_op *e = f->rd;

		if (!run_rd(ep, f, e))
			break;
		f->rd = e->next;
	}
	while (f->wr && !f->wr_wait) {
		struct ep_op *e = f->wr;

		if (!run_wr(ep, f, e))
			break;
		f->wr = e->next;
	}
	fd_update(ep, fd);
}

static void queue_on(struct ep_op **list, struct ep_op *e)
{
	e->next = NULL;
	while (*list)
		list = &(*list)->next;
	*list = e;
}

static void run_close(struct iou__ep *ep, struct ep_op *e)
{
	struct ep_fd *f = &ep->fds[e->fd];

	/* Out of the set before the fd goes: a reused number must not
	 * inherit anything. */
	fail_waiting(ep, f, -ECANCELED);
	f->stream = f->stashed = false;
	f->rd_bufs = 0;
	fd_update(ep, e->fd);
	post(ep, e, close(e->fd) < 0 ? -errno : 0, 0);
}

/* Start one op taken from the submit queue. */
static void start(struct iou__ep *ep, struct ep_op *e)
{
	struct ep_fd *f;
	int ret;

	if (e->cancelled) {
		post(ep, e, -ECANCELED, 0);
		return;
	}
	switch (e->kind) {
	case OP_NOP:
		post(ep, e, 0, 0);
		return;
	case OP_SHUTDOWN:
		ret = shutdown(e->fd, e->u.how);
		post(ep, e, ret < 0 ? -errno : 0, 0);
		return;
	case OP_CLOSE:
		run_close(ep, e);
		return;
	}
	f = &ep->fds[e->fd];
	if (e->kind == OP_ACCEPT) {
		/* a blocking listener would block the loop's accept4 */
		int fl = fcntl(e->fd, F_GETFL);

		if (fl < 0 || (!(fl & O_NONBLOCK) &&
			       fcntl(e->fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
			post(ep, e, -errno, 0);
			return;
		}
	}
	if (e->kind == OP_RECV || e->kind == OP_SEND ||
	    e->kind == OP_SENDMSG)
		f->stream = true;
	if (e->kind == OP_SEND || e->kind == OP_SENDMSG ||
	    e->kind == OP_CONNECT)
		queue_on(&f->wr, e);
	else
		queue_on(&f->rd, e);
	if (e->kind == OP_READ && !f->mask) {
		/* maybe a blocking fd: in the set first, read on an event */
		fd_update(ep, e->fd);
		if (f->mask)
			f->rd_wait = true;
		return;
	}
	run_fd(ep, e->fd);
}

/* ---- operations --------------------------------------------------------- */

int iou__ep_recv(iou_loop *loop, struct iou__op *op, int fd, size_t limit)
{
	struct ep_op *e = op_new(loop, op, OP_RECV, fd, 2);

	if (!e)
		return -EAGAIN;
	e->u.recv.limit = limit;
	FAULT_OP(loop, op, IOU__FOP_RECV, fd);
	return 0;
}

int iou__ep_send(iou_loop *loop, struct iou__op *op, int fd, const void *buf,
		 size_t len)
{
	struct ep_op *e = op_new(loop, op, OP_SEND, fd, 1);

	if (!e)
		return -EAGAIN;
	e->u.send.buf = buf;
	e->u.send.len = len;
	FAULT_OP(loop, op, IOU__FOP_SEND, fd);
	FAULT_SEND(loop, &e->u.send.len, NULL);
	return 0;
}

int iou__ep_sendmsg(iou_loop *loop, struct iou__op *op, int fd,
		    const struct msghdr *msg)
{
	struct ep_op *e = op_new(loop, op, OP_SENDMSG, fd, 1);

	if (!e)
		return -EAGAIN;
	e->u.msg = msg;
	FAULT_OP(loop, op, IOU__FOP_SEND, fd);
	FAULT_SEND(loop, NULL, msg);
	return 0;
}

int iou__ep_nop(iou_loop *loop, struct iou__op *op)
{
	return op_new(loop, op, OP_NOP, -1, 1) ? 0 : -EAGAIN;
}

int iou__ep_shutdown(iou_loop *loop, struct iou__op *op, int fd, int how)
{
	struct ep_op *e = op_new(loop, op, OP_SHUTDOWN, fd, 1);

	if (!e)
		return -EAGAIN;
	e->u.how = how;
	return 0;
}

int iou__ep_close(iou_loop *loop, struct iou__op *op, int fd)
{
	return op_new(loop, op, OP_CLOSE, fd, 1) ? 0 : -EAGAIN;
}

int iou__ep_accept(iou_loop *loop, struct iou__op *op, int fd)
{
	if (!op_new(loop, op, OP_ACCEPT, fd, ACCEPT_BATCH + 1))
		return -EAGAIN;
	FAULT_OP(loop, op, IOU__FOP_ACCEPT, fd);
	return 0;
}

int iou__ep_connect(iou_loop *loop, struct iou__op *op, int fd,
		    const struct sockaddr *sa, unsigned addrlen)
{
	struct ep_op *e = op_new(loop, op, OP_CONNECT, fd, 1);

	if (!e)
		return -EAGAIN;
	e->u.conn.sa = sa;
	e->u.conn.len = addrlen;
	FAULT_OP(loop, op, IOU__FOP_CONNECT, fd);
	return 0;
}

int iou__ep_read(iou_loop *loop, struct iou__op *op, int fd, void *buf,
		 size_t len)
{
	struct ep_op *e = op_new(loop, op, OP_READ, fd, 1);

	if (!e)
		return -EAGAIN;
	e->u.read.buf = buf;
	e->u.read.len = len;
	return 0;
}

static bool cancellable(const struct ep_op *e)
{
	return e->kind != OP_NOP && e->kind != OP_SHUTDOWN &&
	       e->kind != OP_CLOSE;
}

/* An op waiting on its fd ends now (its completion still comes in a
 * later dispatch); one not started yet, when the wait starts it. */
static void cancel(struct iou__ep *ep, struct ep_op *e)
{
	struct ep_fd *f = &ep->fds[e->fd];
	struct ep_op *w;

	for (w = f->rd; w && w != e; w = w->next)
		;
	if (w) {
		unlink_op(&f->rd, e);
	} else {
		for (w = f->wr; w && w != e; w = w->next)
			;
		if (!w) {
			e->cancelled = true; /* still in the submit queue */
			return;
		}
		unlink_op(&f->wr, e);
	}
	post(ep, e, -ECANCELED, 0);
	fd_update(ep, e->fd);
}

/* op is waiting on fd, or not started yet; or it ended (then its
 * record, if still there, is in neither place: nothing to do). */
int iou__ep_cancel_op(iou_loop *loop, struct iou__op *op, int fd)
{
	struct iou__ep *ep = ep_of(loop);
	struct ep_op *e;

	if (fd < 0 || (unsigned)fd >= ep->nfds)
		return 0;
	for (e = ep->fds[fd].rd; e && e->op != op; e = e->next)
		;
	if (!e)
		for (e = ep->fds[fd].wr; e && e->op != op; e = e->next)
			;
	if (!e)
		for (e = ep->sq_head; e && e->op != op; e = e->next)
			;
	if (e && cancellable(e))
		cancel(ep, e);
	return 0;
}

int iou__ep_cancel_fd(iou_loop *loop, int fd)
{
	struct iou__ep *ep = ep_of(loop);
	struct ep_op *e;

	if (fd < 0 || (unsigned)fd >= ep->nfds)
		return 0;
	for (e = ep->sq_head; e; e = e->next)
		if (e->fd == fd && cancellable(e))
			e->cancelled = true;
	while (ep->fds[fd].rd)
		cancel(ep, ep->fds[fd].rd);
	while (ep->fds[fd].wr)
		cancel(ep, ep->fds[fd].wr);
	return 0;
}

/* ---- the loop's side ---------------------------------------------------- */

int iou__ep_create(const struct iou_loop_opts *opts, iou_loop **out)
{
	struct iou__ep *ep = calloc(1, sizeof(*ep));
	iou_loop *loop;
	int ret;

	if (!ep)
		return -ENOMEM;
	loop = &ep->loop;
	loop->backend = IOU_BACKEND_EPOLL;
	ep->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ep->epfd < 0) {
		ret = -errno;
		free(ep);
		return ret;
	}
	/* The same ring memory as for the kernel, read by us alone. */
	ret = iou__bufring_setup(loop, opts->buf_size, opts->buf_count);
	if (ret < 0) {
		close(ep->epfd);
		free(ep);
		return ret;
	}
	loop->bufs.bundle = !(opts->flags & IOU_LOOP_NO_RECV_BUNDLE);
	loop->bufs.recv_limit = true;
	*out = loop;
	return 0;
}

void iou__ep_destroy(iou_loop *loop)
{
	struct iou__ep *ep = ep_of(loop);

	close(ep->epfd);
	iou__bufring_teardown(loop);
	while (ep->blocks) {
		struct ops_block *b = ep->blocks;

		ep->blocks = b->next;
		free(b);
	}
	map_free(ep->fds, ep->nfds, sizeof(*ep->fds));
	map_free(ep->cq, ep->cq_cap, sizeof(*ep->cq));
	map_free(ep->cq_run, ep->run_cap, sizeof(*ep->cq_run));
	map_free(ep->ready, ep->ready_cap, sizeof(*ep->ready));
	free(ep);
}

int iou__ep_wait(iou_loop *loop, int wait_ms)
{
	struct iou__ep *ep = ep_of(loop);
	unsigned nready;
	int n;

	ep->turn++;
	while (ep->sq_head) {
		struct ep_op *e = ep->sq_head;

		ep->sq_head = e->next;
		if (!ep->sq_head)
			ep->sq_tail = NULL;
		start(ep, e);
	}
	/* fds left ready by the last turn (a bundle's worth read, say) */
	nready = ep->nready;
	ep->nready = 0;
	for (unsigned i = 0; i < nready; i++) {
		int fd = ep->ready[i];

		ep->fds[fd].queued = false;
		run_fd(ep, fd);
	}
	/* Completions wait already: every other turn skips the poll (a
	 * write done at once costs no extra epoll_wait), and the others do
	 * not block. */
	if (ep->ncq && ep->polled) {
		ep->polled = false;
		return 0;
	}
	if (ep->ncq || ep->nready)
		wait_ms = 0;
	n = epoll_wait(ep->epfd, ep->ev, EVENTS, wait_ms);
	ep->polled = true;
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		int fd = (int)ep->ev[i].data.u64;
		uint32_t ev = ep->ev[i].events;
		struct ep_fd *f = &ep->fds[fd];

		if (!f->mask)
			continue;
		if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			f->hup = true;
		if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			f->rd_wait = false;
		if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			f->wr_wait = false;
		run_fd(ep, fd);
	}
	return 0;
}

int iou__ep_dispatch(iou_loop *loop)
{
	struct iou__ep *ep = ep_of(loop);
	struct ep_cqe *run = ep->cq;
	unsigned n = ep->ncq, cap;

	/* This batch only: what its callbacks cause comes in a later one. */
	ep->cq = ep->cq_run;
	ep->cq_run = run;
	cap = ep->cq_cap;
	ep->cq_cap = ep->run_cap;
	ep->run_cap = cap;
	ep->ncq = 0;
	for (unsigned i = 0; i < n; i++) {
		struct ep_cqe c = ep->cq_run[i];
		struct iou__op *op = c.e->op;
		struct iou__cqe_rec rec = { c.res, c.flags };

		if (!(c.flags & IOU__CQE_F_MORE)) {
			ep->reserved -= c.e->reserve;
			c.e->next = ep->free_ops;
			ep->free_ops = c.e;
		}
		FAULT_CQE(loop, op, &rec);
		op->complete(op, &rec);
	}
	return (int)n;
}
