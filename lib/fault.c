/* SPDX-License-Identifier: MIT */
/*
 * Fault injection: built only with ./configure --enable-fault-injection
 * (-DIOU_FAULT_INJECTION); a default build compiles this file to nothing.
 *
 * Driven by the environment, read when a loop is created:
 *   IOU_FAULT_SEED   seed of the fault sequence; unset: no faults at all
 *   IOU_FAULT_RATE   faults per 1000 chances, 0..1000, default 5; a chance
 *                    is a completion of a recv, send, accept or connect, a
 *                    send about to start, or an allocation during a turn
 *
 * The fault model.  Every fault is one the kernel (or libc) can really
 * produce, injected where it cannot break the engine's first invariant ("the
 * kernel owns an op until its last CQE"): no CQE is ever hidden, invented, or
 * stripped of IORING_CQE_F_MORE, so the library's view of which ops the
 * kernel still owns stays the kernel's own.
 *
 *  - recv (multishot): on a CQE that still has F_MORE, the op is cancelled
 *    for real (IORING_OP_ASYNC_CANCEL by user_data); the data CQEs before the
 *    kernel's final one are delivered untouched, and that final CQE (res <= 0:
 *    -ECANCELED, or EOF/an error that raced the cancel) is reported as
 *    -ECANCELED (a cancel the library never asked for), -ENOBUFS (the pool
 *    ran dry) or -ECONNRESET.  A final CQE that arrives on its own with
 *    res <= 0 may be turned into -ENOBUFS or -ECONNRESET directly.  A final
 *    CQE that carries data is never changed (that would drop bytes the
 *    kernel consumed).  Should a rewritten CQE carry a provided buffer
 *    (IORING_CQE_F_BUFFER; the kernel never posts one with an error), the
 *    buffer goes back to the ring here and the flag is cleared.
 *  - send/sendmsg: a short send is made before submission by shortening the
 *    SQE (len, or the msghdr's iovecs: the library rebuilds them for every
 *    send), so the kernel really sends fewer bytes and the stream stays
 *    byte-exact.  After the fact, a send's CQE (single-shot: always its last)
 *    may become -EPIPE, -ECONNRESET or -ECANCELED.  If the kernel had sent
 *    bytes, the peer sees a stream that stops after them, as after any send
 *    error; the library treats the stream's write side as failed.  -EAGAIN
 *    is not injected: every socket of the library is in blocking mode
 *    (accept without SOCK_NONBLOCK, connect's socket(), iou_stream_open
 *    clears O_NONBLOCK), for which io_uring waits for room itself (poll)
 *    and never completes a send with -EAGAIN; the case cannot arise.
 *  - accept (multishot): as recv, a real cancel, and the final CQE becomes
 *    -ECANCELED, -EMFILE (the library backs off) or -ECONNABORTED.  If that
 *    final CQE carries an accepted fd, the fd is closed here first.
 *  - connect: its CQE (single-shot) may become -ECONNREFUSED, -ETIMEDOUT,
 *    -ECANCELED or -ENETUNREACH, whatever the kernel's result.  The socket
 *    is the library's (lib/connect.c made it and closes it on any error),
 *    so a connect the kernel had completed is closed there, and the peer
 *    sees a connection that ends at once (counted apart: "connect had
 *    succeeded").  With more than one address the next one is tried, as
 *    after a real error; the application sees the last address's error.
 *  - allocations: every malloc/calloc/realloc of the library (loop_int.h
 *    wraps them) may return NULL while a loop with faults runs a turn on this
 *    thread (dispatch, timers, posted callbacks, end-of-turn work, and the
 *    application's calls from its callbacks): write records, spill and feed
 *    growth, forward copies, gathers, posts made from callbacks, accepted
 *    streams; and so may the mmap of a new task stack (lib/task.c).
 *    iou_loop_post() from other threads never fails by injection.
 * Other ops get no faults: shutdown and close (the library ignores their
 * results), the wake-up read (loop machinery, cancelled only by
 * iou_loop_destroy), cancels (user_data 0).
 *
 * IOU_FAULT_OLD_RECV (set, with a seed) makes the kernel refuse the
 * multishot recv's byte limit as kernels before 6.16 do (see below).
 *
 * Which op a CQE belongs to is learnt from the SQEs: before every submit the
 * pending SQEs are walked, their kind (IOU__FOP_*, from the opcode) recorded
 * by user_data (a small hash table, removed at the op's final CQE).
 *
 * On epoll (lib/epoll.c) the model and its invariants are the same, in the
 * backend's terms: a "CQE" is its completion record, which iou__ep_dispatch
 * passes to iou__fault_cqe() as uring.c does.  There are no SQEs: the
 * backend tells the kind of each recv, send, accept and connect it queues
 * (iou__fault_op()), and a send is shortened there too (iou__fault_send():
 * its len or the msghdr's iovecs, before the send/sendmsg syscall is ever
 * made).  The real cancel is iou__cancel_op(), which ends the op waiting on
 * its fd and queues its final -ECANCELED for the next dispatch; should the
 * op have ended already (its error queued in the same batch), that
 * final record is the one rewritten, as a CQE that raced the cancel.  A
 * final record with an error carries no buffer and no fd there.  Nor does
 * epoll complete a send with -EAGAIN: it waits for EPOLLOUT and retries.
 * IOU_FAULT_OLD_RECV is io_uring's alone (epoll honours the byte limit).
 */
#ifdef IOU_FAULT_INJECTION

#define IOU__FAULT_NO_WRAP /* this file calls the real allocators */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uring.h"

struct fault_op {
	uint64_t ud;       /* 0: free slot */
	uint8_t kind;      /* IOU__FOP_* */
	bool pending;      /* a fault waits for the op's final CQE */
	int fd;            /* the op's, for a real cancel */
	int pending_res;
	int pending_kind;
};

struct iou__fault {
	uint64_t rng;
	unsigned rate;     /* per 1000 */
	struct fault_op *tab;
	unsigned cap, len; /* cap a power of two */
	bool old_recv;     /* IOU_FAULT_OLD_RECV: act as a kernel before 6.16 */
};

static uint64_t totals[IOU__F_NKINDS];
static unsigned loops_seen;
static __thread struct iou__fault *current;

static const char *const names[IOU__F_NKINDS] = {
	[IOU__F_RECV_CANCELED] = "recv -ECANCELED (real cancel)",
	[IOU__F_RECV_ENOBUFS] = "recv -ENOBUFS",
	[IOU__F_RECV_RESET] = "recv -ECONNRESET",
	[IOU__F_SEND_SHORT] = "send shortened",
	[IOU__F_SEND_EPIPE] = "send -EPIPE",
	[IOU__F_SEND_RESET] = "send -ECONNRESET",
	[IOU__F_SEND_CANCELED] = "send -ECANCELED",
	[IOU__F_ACCEPT_CANCELED] = "accept -ECANCELED (real cancel)",
	[IOU__F_ACCEPT_EMFILE] = "accept -EMFILE",
	[IOU__F_ACCEPT_ABORTED] = "accept -ECONNABORTED",
	[IOU__F_ACCEPT_FD_CLOSED] = "accepted fd closed",
	[IOU__F_CONNECT_REFUSED] = "connect -ECONNREFUSED",
	[IOU__F_CONNECT_TIMEDOUT] = "connect -ETIMEDOUT",
	[IOU__F_CONNECT_CANCELED] = "connect -ECANCELED",
	[IOU__F_CONNECT_UNREACH] = "connect -ENETUNREACH",
	[IOU__F_CONNECT_WAS_OK] = "connect had succeeded",
	[IOU__F_ALLOC] = "allocation failed",
};

const char *iou__fault_name(int kind)
{
	return kind >= 0 && kind < IOU__F_NKINDS ? names[kind] : "?";
}

void iou__fault_totals(uint64_t out[IOU__F_NKINDS])
{
	for (int i = 0; i < IOU__F_NKINDS; i++)
		out[i] = __atomic_load_n(&totals[i], __ATOMIC_RELAXED);
}

static void count(int kind)
{
	__atomic_add_fetch(&totals[kind], 1, __ATOMIC_RELAXED);
}

/* splitmix64 */
static uint64_t next(struct iou__fault *f)
{
	uint64_t z = (f->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static bool roll(struct iou__fault *f)
{
	return f->rate && next(f) % 1000 < f->rate;
}

static unsigned pick(struct iou__fault *f, unsigned n)
{
	return (unsigned)(next(f) % n);
}

void iou__fault_init(iou_loop *loop)
{
	const char *seed = getenv("IOU_FAULT_SEED");
	const char *rate = getenv("IOU_FAULT_RATE");
	struct iou__fault *f;

	loop->fault = NULL;
	if (!seed || !*seed)
		return;
	f = calloc(1, sizeof(*f));
	if (!f)
		return;
	/* Loops of one process get distinct, reproducible sequences. */
	f->rng = strtoull(seed, NULL, 0) * 0x100000001b3ull +
		 __atomic_fetch_add(&loops_seen, 1, __ATOMIC_RELAXED);
	f->rate = 5;
	if (rate && *rate) {
		unsigned long r = strtoul(rate, NULL, 0);

		f->rate = r > 1000 ? 1000 : (unsigned)r;
	}
	f->old_recv = getenv("IOU_FAULT_OLD_RECV") != NULL;
	loop->fault = f;
}

void iou__fault_fini(iou_loop *loop)
{
	struct iou__fault *f = loop->fault;

	if (!f)
		return;
	if (current == f)
		current = NULL;
	free(f->tab);
	free(f);
	loop->fault = NULL;
}

/* ---- op table: user_data -> op kind ------------------------------------ */

static unsigned slot_of(const struct iou__fault *f, uint64_t ud)
{
	uint64_t h = ud * 0x9e3779b97f4a7c15ull;

	return (unsigned)(h >> 32) & (f->cap - 1);
}

static struct fault_op *find(struct iou__fault *f, uint64_t ud)
{
	if (!f->cap)
		return NULL;
	for (unsigned i = slot_of(f, ud);; i = (i + 1) & (f->cap - 1)) {
		if (f->tab[i].ud == ud)
			return &f->tab[i];
		if (!f->tab[i].ud)
			return NULL;
	}
}

static bool grow(struct iou__fault *f)
{
	unsigned cap = f->cap ? f->cap * 2 : 256;
	struct fault_op *old = f->tab, *tab = calloc(cap, sizeof(*tab));
	unsigned oldcap = f->cap;

	if (!tab)
		return false;
	f->tab = tab;
	f->cap = cap;
	for (unsigned i = 0; i < oldcap; i++) {
		if (old[i].ud) {
			unsigned j = slot_of(f, old[i].ud);

			while (tab[j].ud)
				j = (j + 1) & (cap - 1);
			tab[j] = old[i];
		}
	}
	free(old);
	return true;
}

static void record(struct iou__fault *f, uint64_t ud, int kind, int fd)
{
	struct fault_op *e = find(f, ud);
	unsigned i;

	if (!e) {
		if ((f->len + 1) * 2 > f->cap && !grow(f))
			return; /* unknown op: it simply gets no faults */
		for (i = slot_of(f, ud); f->tab[i].ud; i = (i + 1) & (f->cap - 1))
			;
		e = &f->tab[i];
		f->len++;
	}
	memset(e, 0, sizeof(*e));
	e->ud = ud;
	e->kind = (uint8_t)kind;
	e->fd = fd;
}

/* Linear probing: delete by shifting the following run back. */
static void forget(struct iou__fault *f, struct fault_op *e)
{
	unsigned mask = f->cap - 1, i = (unsigned)(e - f->tab), j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (!f->tab[j].ud)
			break;
		unsigned k = slot_of(f, f->tab[j].ud);

		/* Move j to i unless its home k lies cyclically in (i, j]. */
		if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
			f->tab[i] = f->tab[j];
			i = j;
		}
	}
	f->tab[i].ud = 0;
	f->len--;
}

/* ---- before submission --------------------------------------------------- */

/* Shorten a sendmsg's iovecs to `k` bytes in all. */
static void shorten_msg(struct msghdr *msg, size_t k)
{
	size_t n = 0;

	while (n < msg->msg_iovlen && k > msg->msg_iov[n].iov_len) {
		k -= msg->msg_iov[n].iov_len;
		n++;
	}
	if (n < msg->msg_iovlen) {
		msg->msg_iov[n].iov_len = k;
		msg->msg_iovlen = n + 1;
	}
}

/* Maybe cut a send of len >= 2 bytes to 1..len-1. */
static bool short_len(struct iou__fault *f, size_t *len)
{
	if (*len < 2 || *len - 1 > UINT32_MAX || !roll(f))
		return false;
	*len = 1 + pick(f, (unsigned)(*len - 1));
	count(IOU__F_SEND_SHORT);
	return true;
}

/* The same for a sendmsg's iovecs: the library's own, rebuilt for every
 * send, so that cutting them changes no other send. */
static void short_msg(struct iou__fault *f, const struct msghdr *msg)
{
	size_t total = 0, k;

	for (size_t i = 0; i < msg->msg_iovlen; i++)
		total += msg->msg_iov[i].iov_len;
	k = total;
	if (short_len(f, &k))
		shorten_msg((struct msghdr *)msg, k);
}

static void maybe_short_send(struct iou__fault *f, struct io_uring_sqe *sqe)
{
	if (sqe->opcode == IORING_OP_SEND) {
		size_t len = sqe->len;

		if (short_len(f, &len))
			sqe->len = (uint32_t)len;
	} else if (sqe->opcode == IORING_OP_SENDMSG) {
		short_msg(f, (const struct msghdr *)(uintptr_t)sqe->addr);
	}
}

static int kind_of(uint8_t opcode)
{
	switch (opcode) {
	case IORING_OP_RECV:
		return IOU__FOP_RECV;
	case IORING_OP_SEND:
	case IORING_OP_SENDMSG:
		return IOU__FOP_SEND;
	case IORING_OP_ACCEPT:
		return IOU__FOP_ACCEPT;
	case IORING_OP_CONNECT:
		return IOU__FOP_CONNECT;
	default:
		return IOU__FOP_OTHER;
	}
}

void iou__fault_sq(iou_loop *loop)
{
	struct iou__fault *f = loop->fault;
	struct io_uring_sq *sq = &iou__uring(loop)->ring.sq;

	if (!f)
		return;
	for (unsigned h = sq->sqe_head; h != sq->sqe_tail; h++) {
		struct io_uring_sqe *sqe = &sq->sqes[h & sq->ring_mask];

		if (!sqe->user_data)
			continue; /* cancels */
		record(f, sqe->user_data, kind_of(sqe->opcode), sqe->fd);
		maybe_short_send(f, sqe);
		/* Kernels before 6.16 reject a recv's byte limit (optlen, the
		 * word liburing 2.3 calls file_index) with -EINVAL at prep;
		 * a non-zero addr2 makes a newer one do the same. */
		if (f->old_recv && sqe->opcode == IORING_OP_RECV &&
		    sqe->file_index)
			sqe->addr2 = 1;
	}
}

/* The epoll backend, which has no SQEs, tells what it starts. */
void iou__fault_op(iou_loop *loop, struct iou__op *op, int kind, int fd)
{
	if (loop->fault)
		record(loop->fault, (uint64_t)(uintptr_t)op, kind, fd);
}

void iou__fault_send(iou_loop *loop, size_t *len, const struct msghdr *msg)
{
	struct iou__fault *f = loop->fault;

	if (!f)
		return;
	if (msg)
		short_msg(f, msg);
	else
		short_len(f, len);
}

/* ---- CQEs -------------------------------------------------------------- */

/* The CQE is about to report an error: give back a provided buffer it
 * carries (the library counts a received buffer as out, then recycles). */
static void drop_buffer(iou_loop *loop, struct iou__cqe_rec *cqe)
{
	if (cqe->flags & IOU__CQE_F_BUFFER) {
		loop->bufs.out++;
		iou__buf_recycle(loop, iou__cqe_buf(cqe));
		cqe->flags &= ~(IOU__CQE_F_BUFFER |
				(~0u << IOU__CQE_BUFFER_SHIFT));
	}
}

static void cancel_for_real(iou_loop *loop, struct iou__op *op, int fd,
			    const int *res, const int *kinds, unsigned n)
{
	unsigned i = pick(loop->fault, n);
	struct fault_op *e;

	if (iou__cancel_op(loop, op, fd) < 0)
		return;
	/* Getting the SQE may have flushed the SQ, which may have grown the
	 * table: look the op up again. */
	e = find(loop->fault, (uint64_t)(uintptr_t)op);
	if (!e)
		return;
	e->pending = true;
	e->pending_res = res[i];
	e->pending_kind = kinds[i];
}

static void apply_final(iou_loop *loop, struct iou__cqe_rec *cqe, int res,
			int kind, int op_kind)
{
	if (op_kind == IOU__FOP_ACCEPT && cqe->res >= 0) {
		close(cqe->res);
		count(IOU__F_ACCEPT_FD_CLOSED);
	} else if (cqe->res > 0) {
		return; /* received bytes are never dropped */
	}
	drop_buffer(loop, cqe);
	cqe->res = res;
	count(kind);
}

void iou__fault_cqe(iou_loop *loop, struct iou__op *op,
		    struct iou__cqe_rec *cqe)
{
	static const int recv_res[] = { -ECANCELED, -ENOBUFS, -ECONNRESET };
	static const int recv_kind[] = { IOU__F_RECV_CANCELED,
					 IOU__F_RECV_ENOBUFS,
					 IOU__F_RECV_RESET };
	static const int acc_res[] = { -ECANCELED, -EMFILE, -ECONNABORTED };
	static const int acc_kind[] = { IOU__F_ACCEPT_CANCELED,
					IOU__F_ACCEPT_EMFILE,
					IOU__F_ACCEPT_ABORTED };
	static const int send_res[] = { -EPIPE, -ECONNRESET, -ECANCELED };
	static const int send_kind[] = { IOU__F_SEND_EPIPE, IOU__F_SEND_RESET,
					 IOU__F_SEND_CANCELED };
	static const int conn_res[] = { -ECONNREFUSED, -ETIMEDOUT, -ECANCELED,
					-ENETUNREACH };
	static const int conn_kind[] = { IOU__F_CONNECT_REFUSED,
					 IOU__F_CONNECT_TIMEDOUT,
					 IOU__F_CONNECT_CANCELED,
					 IOU__F_CONNECT_UNREACH };
	struct iou__fault *f = loop->fault;
	struct fault_op *e = find(f, (uint64_t)(uintptr_t)op);
	bool final = !(cqe->flags & IOU__CQE_F_MORE);
	int op_kind;

	if (!e)
		return;
	op_kind = e->kind;
	if (final) {
		bool pending = e->pending;
		int res = e->pending_res, kind = e->pending_kind;

		forget(f, e);
		if (pending) {
			apply_final(loop, cqe, res, kind, op_kind);
			return;
		}
	} else if (e->pending) {
		return; /* cancelled: its final CQE is on its way */
	}
	if (!roll(f))
		return;
	switch (op_kind) {
	case IOU__FOP_RECV:
		if (!final) {
			cancel_for_real(loop, op, e->fd, recv_res, recv_kind, 3);
		} else {
			unsigned i = 1 + pick(f, 2); /* -ENOBUFS, -ECONNRESET */

			apply_final(loop, cqe, recv_res[i], recv_kind[i], op_kind);
		}
		break;
	case IOU__FOP_ACCEPT:
		if (!final) {
			cancel_for_real(loop, op, e->fd, acc_res, acc_kind, 3);
		} else {
			unsigned i = 1 + pick(f, 2); /* -EMFILE, -ECONNABORTED */

			apply_final(loop, cqe, acc_res[i], acc_kind[i], op_kind);
		}
		break;
	case IOU__FOP_SEND:
		if (final) {
			unsigned i = pick(f, 3);

			cqe->res = send_res[i];
			count(send_kind[i]);
		}
		break;
	case IOU__FOP_CONNECT:
		if (final) {
			unsigned i = pick(f, 4);

			if (cqe->res == 0)
				count(IOU__F_CONNECT_WAS_OK);
			cqe->res = conn_res[i];
			count(conn_kind[i]);
		}
		break;
	default:
		break;
	}
}

/* ---- allocations ------------------------------------------------------- */

void iou__fault_turn(iou_loop *loop)
{
	current = loop->fault;
}

void iou__fault_turn_end(void)
{
	current = NULL;
}

static bool alloc_fails(void)
{
	if (!current || !roll(current))
		return false;
	count(IOU__F_ALLOC);
	return true;
}

bool iou__fault_map_fails(void)
{
	return alloc_fails();
}

void *iou__fault_malloc(size_t n)
{
	return alloc_fails() ? NULL : malloc(n);
}

void *iou__fault_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : calloc(n, size);
}

void *iou__fault_realloc(void *p, size_t n)
{
	return alloc_fails() ? NULL : realloc(p, n);
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int iou__fault_not_built;
#endif /* IOU_FAULT_INJECTION */
