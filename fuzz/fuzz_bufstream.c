/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the receive side of a stream (lib/receive.c over
 * lib/rxq.c, and the end-of-turn work of lib/stream.c), without a real
 * io_uring.  (fuzz_rxq.c fuzzes lib/rxq.c alone.)
 *
 * The REAL lib/receive.c, lib/forward.c, lib/send.c, lib/rxq.c,
 * lib/stream.c, lib/bufring.c, lib/uring_ops.c, lib/blkcache.c, lib/timer.c
 * and lib/errors.c are linked
 * (built with the fuzzer's flags into fuzz/obj/).
 * lib/loop.c is not: this file supplies its few internal functions
 * (iou__get_sqe, iou__op_submitted/done, iou__clock_ms) and a fake kernel
 * behind them:
 *
 *  - SQEs the library prepares are "submitted" at the start of each turn (or
 *    when the fake SQ is full): a multishot recv arms the stream's receive, a
 *    cancel ends it with -ECANCELED, a close completes with 0.
 *  - The peer writes bytes into a per-stream socket queue; a "kernel recv"
 *    step takes the next buffer from the provided-buffer ring exactly as the
 *    kernel does (from its own head up to the tail the library published),
 *    copies up to a fuzzer-chosen length into it and posts a CQE with
 *    IORING_CQE_F_BUFFER|F_MORE; -ENOBUFS when the ring is empty, res 0 at
 *    end of file, an error when the peer resets.
 *  - CQEs are dispatched in the next turn, then iou__streams_turn_end() runs,
 *    as in iou_loop_run_once().
 *
 *  - Sends (iou_forward() into a stream, possibly the same one) complete
 *    with the full length or, when the input says so, a part of it.
 *
 * A reference model (per stream: the flat array of bytes the library
 * accepted, the consumed offset, EOF/error/shutdown) predicts every read's
 * outcome: delivered bytes, end of file, IOU_EINCOMPLETE, IOU_EOVERFLOW,
 * errors, and the number of buffered bytes; forwarded bytes must reach the
 * target's socket in order and match.  Checked as well: no callback runs
 * from inside the call that queued it, a read that can be served is served
 * by the end of the turn, every provided buffer in circulation is in exactly
 * one place (the ring, a CQE, or one stream's queue; the pool grows at the
 * end of a turn by buffers never used before, up to its size) and the
 * library's counters agree (forwards hold no more buffers than their
 * budget), buffers given back are not touched again (ASan poisoning), and
 * after closing every stream nothing is leaked and every buffer in
 * circulation is back in
 * the ring.
 * Any difference: abort().
 *
 * iou__buf_recycle is wrapped (-Wl,--wrap=iou__buf_recycle), and the
 * pool's give_back pointed at the wrapper, to track buffer ownership at the
 * moment a buffer is given back.
 */
#include <errno.h>
#include <string.h>

#define FUZZ_NAME "fuzz_bufstream"
#include "fuzz.h"
#include "uring.h"
#include "internal.h" /* the streams on it */
#include "connect.h" /* with server.h: the hooks stubbed below */
#include "server.h"

#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif

#define MAX_STREAMS 3
#define MAX_SQES 16
#define MAX_OPS 4000
#define MAX_BUNDLE 4

/* ---- state -------------------------------------------------------------- */


enum { K_NONE, K_READ, K_EXACTLY, K_PEEK, K_UNTIL, K_FWD };

struct model {
	iou_stream *s;     /* NULL once freed */
	int idx;
	bool closing;      /* iou_close called */
	bool freed;        /* close callback ran */
	bool rd_shut;
	bool eof;          /* the library saw end of file */
	int err;           /* the library saw this receive error */
	struct bytes d;    /* every byte the library accepted */
	size_t cons;       /* consumed from d */
	size_t max_buffered;

	/* the pending read, as the model sees it */
	int kind;
	size_t n;          /* max or n */
	unsigned char sep[32];
	size_t seplen;
	unsigned chain;    /* the callback issues the same read again */
	int fwd_to;        /* K_FWD: the target stream */

	/* as the target of forwards */
	struct bytes out;  /* sent on this stream by the fake kernel */
	size_t out_acked;  /* bytes of out confirmed by forward callbacks */
	bool out_desync;   /* a failed forward left unknown bytes in out */

	/* the fake kernel's side */
	int fd;
	bool armed;        /* multishot recv in flight */
	bool bundle;
	bool no_more;      /* the next data CQE ends the multishot */
	struct bytes sock; /* written by the peer */
	size_t sock_off;   /* taken by recvs */
	bool sock_eof;
	int sock_err;
	bool ended;        /* the kernel posted EOF or an error */
	bool closed;       /* the close SQE was completed */
};

struct cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
	size_t off, len; /* recv data: sock[off .. off+len) */
	unsigned nbids;  /* provided buffers consumed, in ring order */
	uint16_t bids[MAX_BUNDLE];
};

enum { B_RING, B_KERNEL, B_LIB, B_IDLE /* not in circulation yet */ };

static iou_loop *loop;
static struct model m[MAX_STREAMS];
static int nstreams;
static struct io_uring_sqe sqes[MAX_SQES];
static unsigned nsqe;
static unsigned sqe_fail;   /* the next get_sqe calls fail */
static unsigned short_sends; /* the next sends send only part */
static struct cqe *cq;
static size_t cq_len, cq_cap;
static uint16_t khead;      /* the kernel's head in the buffer ring */
static uint8_t *bstate;     /* per buffer id */
static unsigned live;       /* buffers in circulation, as the model counts */
static bool poison;
static int in_api;          /* inside a call of the public API */
static int in_cb;

static void kernel_submit(void);

/* ---- the replaced parts of lib/loop.c ----------------------------------- */

struct io_uring_sqe *iou__get_sqe(iou_loop *l)
{
	(void)l;
	if (sqe_fail) {
		sqe_fail--;
		TRACE("  get_sqe: NULL (SQ full)\n");
		return NULL;
	}
	if (nsqe == MAX_SQES)
		kernel_submit(); /* a full SQ is flushed */
	memset(&sqes[nsqe], 0, sizeof(sqes[0]));
	return &sqes[nsqe++];
}

void iou__op_submitted(iou_loop *l)
{
	l->active++;
}

void iou__op_done(iou_loop *l)
{
	CHECK(l->active > 0, "active underflow");
	l->active--;
}

uint64_t iou__clock_ms(void)
{
	return loop ? loop->now : 0;
}

void iou__server_conn_closed(iou_server *srv, iou_stream *s)
{
	(void)srv;
	(void)s;
	fail("iou__server_conn_closed without a server");
}

uint64_t iou__server_idle_check(iou_stream *s)
{
	(void)s;
	fail("iou__server_idle_check without a server");
	return 0;
}

void iou__connect_cancel(iou_stream *s)
{
	(void)s;
	fail("iou__connect_cancel without a connect");
}

/* The fake loop runs on io_uring: the ops never hand over to epoll. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define NOT_EPOLL(name, ...) \
	int name(__VA_ARGS__) { fail(#name " on the fake io_uring loop"); return -1; }
NOT_EPOLL(iou__ep_recv, iou_loop *l, struct iou__op *op, int fd, size_t limit)
NOT_EPOLL(iou__ep_send, iou_loop *l, struct iou__op *op, int fd, const void *b,
	  size_t len)
NOT_EPOLL(iou__ep_sendmsg, iou_loop *l, struct iou__op *op, int fd,
	  const struct msghdr *msg)
NOT_EPOLL(iou__ep_nop, iou_loop *l, struct iou__op *op)
NOT_EPOLL(iou__ep_shutdown, iou_loop *l, struct iou__op *op, int fd, int how)
NOT_EPOLL(iou__ep_close, iou_loop *l, struct iou__op *op, int fd)
NOT_EPOLL(iou__ep_accept, iou_loop *l, struct iou__op *op, int fd)
NOT_EPOLL(iou__ep_connect, iou_loop *l, struct iou__op *op, int fd,
	  const struct sockaddr *sa, unsigned len)
NOT_EPOLL(iou__ep_read, iou_loop *l, struct iou__op *op, int fd, void *b,
	  size_t len)
NOT_EPOLL(iou__ep_cancel_op, iou_loop *l, struct iou__op *op, int fd)
NOT_EPOLL(iou__ep_cancel_fd, iou_loop *l, int fd)
#pragma GCC diagnostic pop

/* No ring to register the buffer ring with: iou__bufring_setup() runs for
 * real otherwise (-Wl,--wrap=io_uring_register_buf_ring). */
int __wrap_io_uring_register_buf_ring(struct io_uring *ring,
				      struct io_uring_buf_reg *reg,
				      unsigned int flags);

int __wrap_io_uring_register_buf_ring(struct io_uring *ring,
				      struct io_uring_buf_reg *reg,
				      unsigned int flags)
{
	(void)ring;
	(void)flags;
	CHECK(reg->ring_entries == loop->bufs.buf_count, "bad ring_entries");
	return 0;
}

/* ---- buffer ownership --------------------------------------------------- */

void __real_iou__buf_recycle(iou_loop *l, unsigned bid);
void __wrap_iou__buf_recycle(iou_loop *l, unsigned bid);

void __wrap_iou__buf_recycle(iou_loop *l, unsigned bid)
{
	CHECK(bid < l->bufs.buf_count, "recycle of bad buffer id %u", bid);
	CHECK(bstate[bid] == B_LIB, "buffer %u recycled but not held (state %d)",
	      bid, bstate[bid]);
	bstate[bid] = B_RING;
	__real_iou__buf_recycle(l, bid);
	if (l->bufs.nidle && l->bufs.idle[l->bufs.nidle - 1] == bid &&
	    l->bufs.live == live - 1) {
		/* the pool shrinks: the buffer left circulation */
		bstate[bid] = B_IDLE;
		live--;
	}
	if (poison)
		ASAN_POISON_MEMORY_REGION(iou__buf_addr(l, bid), l->pool.buf_size);
}

/* The receive queue (rxq.c) gives buffers back through the pool's pointer,
 * which the real set-up points at a function of its own. */
static void give_back(struct iou__pool *pool, uint32_t bid)
{
	__wrap_iou__buf_recycle(IOU__CONTAINER_OF(pool, iou_loop, pool), bid);
}

static struct model *model_of_op(uint64_t ud, int *which)
{
	for (int i = 0; i < nstreams; i++) {
		if (!m[i].s)
			continue;
		if (ud == (uint64_t)(uintptr_t)&m[i].s->recv_op) {
			*which = 0;
			return &m[i];
		}
		if (ud == (uint64_t)(uintptr_t)&m[i].s->aux_op) {
			*which = 2;
			return &m[i];
		}
		if (ud == (uint64_t)(uintptr_t)&m[i].s->send_op) {
			*which = 1;
			return &m[i];
		}
	}
	return NULL;
}

/* ---- the fake kernel ---------------------------------------------------- */

static unsigned taken_n;           /* buffers taken for the next CQE */
static uint16_t taken[MAX_BUNDLE];

static void post(uint64_t ud, int res, uint32_t flags, size_t off, size_t len)
{
	if (cq_len == cq_cap) {
		cq_cap = cq_cap ? cq_cap * 2 : 64;
		cq = realloc(cq, cq_cap * sizeof(*cq));
		CHECK(cq, "out of memory");
	}
	cq[cq_len] = (struct cqe){ ud, res, flags, off, len, taken_n, { 0 } };
	memcpy(cq[cq_len].bids, taken, sizeof(taken));
	cq_len++;
	taken_n = 0;
}

static void end_recv(struct model *md, int res)
{
	md->armed = false;
	post((uint64_t)(uintptr_t)&md->s->recv_op, res, 0, 0, 0);
}

static void kernel_submit(void)
{
	unsigned n = nsqe;

	nsqe = 0;
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = &sqes[i];
		struct model *md;
		int which;

		switch (sqe->opcode) {
		case IORING_OP_RECV:
			md = model_of_op(sqe->user_data, &which);
			CHECK(md && which == 0, "recv with a foreign user_data");
			CHECK(!md->armed, "stream %d: second recv armed", md->idx);
			CHECK(sqe->ioprio & IORING_RECV_MULTISHOT,
			      "recv not multishot");
			CHECK(sqe->flags & IOSQE_BUFFER_SELECT,
			      "recv without buffer select");
			CHECK(sqe->buf_group == loop->bufs.bgid, "bad buf_group");
			CHECK(sqe->fd == md->fd, "recv on the wrong fd");
			CHECK(!md->closed, "recv after close");
			md->armed = true;
			md->bundle = sqe->ioprio & IORING_RECVSEND_BUNDLE;
			TRACE("  k: stream %d recv armed\n", md->idx);
			break;
		case IORING_OP_ASYNC_CANCEL:
			if (sqe->cancel_flags & IORING_ASYNC_CANCEL_FD) {
				for (int j = 0; j < nstreams; j++) {
					if (m[j].s && m[j].fd == sqe->fd &&
					    m[j].armed)
						end_recv(&m[j], -ECANCELED);
				}
			} else {
				md = model_of_op(sqe->addr, &which);
				if (md && which == 0 && md->armed)
					end_recv(md, -ECANCELED);
			}
			TRACE("  k: cancel (flags %x fd %d)\n", sqe->cancel_flags,
			      sqe->fd);
			/* the cancel's own CQE: user_data 0, ignored */
			post(sqe->user_data, 0, 0, 0, 0);
			break;
		case IORING_OP_CLOSE:
			md = model_of_op(sqe->user_data, &which);
			CHECK(md && which == 2, "close with a foreign user_data");
			CHECK(sqe->fd == md->fd, "close of the wrong fd");
			CHECK(!md->armed, "close while the recv is in flight");
			md->closed = true;
			TRACE("  k: stream %d closed\n", md->idx);
			post(sqe->user_data, 0, 0, 0, 0);
			break;
		case IORING_OP_NOP:
			post(sqe->user_data, 0, 0, 0, 0);
			break;
		case IORING_OP_SEND:
		case IORING_OP_SENDMSG: {
			struct iovec one, *iov = &one;
			size_t niov = 1, total = 0, res;

			md = model_of_op(sqe->user_data, &which);
			CHECK(md && which == 1, "send with a foreign user_data");
			CHECK(sqe->fd == md->fd && !md->closed, "send on a bad fd");
			if (sqe->opcode == IORING_OP_SEND) {
				one.iov_base = (void *)(uintptr_t)sqe->addr;
				one.iov_len = sqe->len;
			} else {
				const struct msghdr *msg =
					(const void *)(uintptr_t)sqe->addr;

				iov = msg->msg_iov;
				niov = msg->msg_iovlen;
			}
			for (size_t k = 0; k < niov; k++)
				total += iov[k].iov_len;
			res = total;
			if (short_sends && total > 1) {
				short_sends--;
				res = total / 2;
			}
			for (size_t k = 0, left = res; k < niov && left; k++) {
				size_t c = iov[k].iov_len < left ? iov[k].iov_len
								 : left;

				bytes_add(&md->out, iov[k].iov_base, c);
				left -= c;
			}
			TRACE("  k: stream %d sends %zu of %zu bytes\n", md->idx,
			      res, total);
			post(sqe->user_data, (int)res, 0, 0, 0);
			break;
		}
		case IORING_OP_SHUTDOWN:
			post(sqe->user_data, 0, 0, 0, 0);
			break;
		default:
			fail("unexpected SQE opcode %u", sqe->opcode);
		}
	}
}

static unsigned ring_avail(void)
{
	uint16_t tail = __atomic_load_n(&loop->bufs.br->tail, __ATOMIC_ACQUIRE);

	return (uint16_t)(tail - khead);
}

/* Take the next published buffer, as the kernel does. */
static unsigned take_buffer(void)
{
	struct io_uring_buf *b = &loop->bufs.br->bufs[khead & loop->bufs.mask];
	unsigned bid = b->bid;

	CHECK(bid < loop->bufs.buf_count, "ring holds bad buffer id %u", bid);
	CHECK(b->addr == (uint64_t)(uintptr_t)iou__buf_addr(loop, bid),
	      "ring entry of buffer %u has a wrong address", bid);
	CHECK(b->len == loop->pool.buf_size, "ring entry of buffer %u: len %u",
	      bid, b->len);
	CHECK(bstate[bid] == B_RING, "buffer %u in the ring twice", bid);
	bstate[bid] = B_KERNEL;
	CHECK(taken_n < MAX_BUNDLE, "bundle too long");
	taken[taken_n++] = (uint16_t)bid;
	khead++;
	if (poison)
		ASAN_UNPOISON_MEMORY_REGION(iou__buf_addr(loop, bid),
					    loop->pool.buf_size);
	/* garbage past the bytes received */
	memset(iou__buf_addr(loop, bid), 0xA5, loop->pool.buf_size);
	return bid;
}

/* One event on the stream's multishot recv: data (up to `chunk` bytes,
 * spread over up to `nbufs` buffers in bundle mode), EOF, an error, or
 * -ENOBUFS.  Returns whether a CQE was posted. */
static bool kernel_recv(struct model *md, size_t chunk, unsigned nbufs,
			bool eof_with_buffer)
{
	size_t avail;
	uint32_t flags;
	unsigned first, bsz = loop->pool.buf_size;

	if (!md->s || !md->armed)
		return false;
	if (md->sock_err) {
		md->ended = true;
		end_recv(md, md->sock_err);
		return true;
	}
	avail = md->sock.len - md->sock_off;
	if (!avail) {
		if (!md->sock_eof)
			return false;
		md->ended = true;
		md->armed = false;
		if (eof_with_buffer && ring_avail()) {
			/* the kernel may consume a buffer for a 0-byte read */
			first = take_buffer();
			post((uint64_t)(uintptr_t)&md->s->recv_op, 0,
			     IORING_CQE_F_BUFFER |
				     (first << IORING_CQE_BUFFER_SHIFT),
			     0, 0);
		} else {
			post((uint64_t)(uintptr_t)&md->s->recv_op, 0, 0, 0, 0);
		}
		return true;
	}
	if (!ring_avail()) {
		end_recv(md, -ENOBUFS);
		return true;
	}
	if (!md->bundle)
		nbufs = 1;
	if (chunk > avail)
		chunk = avail;
	if (chunk > (size_t)nbufs * bsz)
		chunk = (size_t)nbufs * bsz;
	size_t done = 0;
	first = UINT32_MAX;
	while (done < chunk && ring_avail()) {
		unsigned bid = take_buffer();
		size_t k = chunk - done < bsz ? chunk - done : bsz;

		if (first == UINT32_MAX)
			first = bid;
		memcpy(iou__buf_addr(loop, bid),
		       md->sock.p + md->sock_off + done, k);
		done += k;
	}
	flags = IORING_CQE_F_BUFFER | (first << IORING_CQE_BUFFER_SHIFT);
	if (md->no_more) {
		md->no_more = false;
		md->armed = false;
	} else {
		flags |= IORING_CQE_F_MORE;
	}
	post((uint64_t)(uintptr_t)&md->s->recv_op, (int)done, flags,
	     md->sock_off, done);
	md->sock_off += done;
	TRACE("  k: stream %d gets %zu bytes in buffer %u%s\n", md->idx, done,
	      first, flags & IORING_CQE_F_MORE ? "" : " (no MORE)");
	return true;
}

/* ---- the reference model ------------------------------------------------ */

static size_t buffered(const struct model *md)
{
	return md->d.len - md->cons;
}

/* What ends a read that wants more bytes, 0 if nothing yet. */
static int end_code(const struct model *md)
{
	if (md->err)
		return md->err;
	if (md->eof)
		return -IOU_EINCOMPLETE;
	if (md->rd_shut)
		return -IOU_ECLOSED;
	return 0;
}

/* What a read_exactly/peek/read_until that wants more gets: end of file
 * with nothing buffered is a clean end (0), with some a truncated message. */
static int end_res(const struct model *md, size_t b)
{
	int code = end_code(md);

	return code == -IOU_EINCOMPLETE && !b ? 0 : code;
}

/* Length of the bytes up to and including the first separator within the
 * first min(buffered, max) bytes, or 0. */
static size_t until_len(const struct model *md)
{
	size_t span = buffered(md) < md->n ? buffered(md) : md->n;
	const unsigned char *hit;

	if (span < md->seplen)
		return 0;
	hit = memmem(md->d.p + md->cons, span, md->sep, md->seplen);
	return hit ? (size_t)(hit - (md->d.p + md->cons)) + md->seplen : 0;
}

/* Whether the pending read can be served (or failed) now. */
static bool ready(const struct model *md)
{
	size_t b = buffered(md);

	if (md->closing)
		return true;
	switch (md->kind) {
	case K_READ:
		return b > 0 || end_code(md);
	case K_EXACTLY:
	case K_PEEK:
		return b >= md->n || end_code(md);
	case K_UNTIL:
		return until_len(md) || b >= md->n || end_code(md);
	case K_FWD:
		/* bytes handed to the target wait for its send */
		if (md->s->read_kind == IOU__RD_FORWARDING)
			return false;
		return b > 0 || end_code(md) || m[md->fwd_to].closing;
	}
	return false;
}

static void issue(struct model *md, int kind, size_t n, const void *sep,
		  size_t seplen, unsigned chain);
static void do_take(struct model *md, size_t cap);

static void read_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct model *md = ud;
	size_t b = buffered(md), want = 0;
	int kind = md->kind;

	CHECK(md->s == s, "callback for the wrong stream");
	CHECK(!in_api, "stream %d: read callback ran inside an API call",
	      md->idx);
	CHECK(kind != K_NONE, "stream %d: callback without a pending read",
	      md->idx);
	TRACE("  cb: stream %d kind %d n %zu -> %zd (buffered %zu)\n", md->idx,
	      kind, md->n, res, b);
	md->kind = K_NONE;
	if (md->closing) {
		CHECK(res == -ECANCELED, "stream %d: closing, read got %zd",
		      md->idx, res);
		return;
	}
	switch (kind) {
	case K_READ:
		if (b) {
			/* every buffered byte, up to n */
			CHECK(res == (ssize_t)(b < md->n ? b : md->n),
			      "stream %d: read(%zu) with %zu buffered got %zd",
			      md->idx, md->n, b, res);
			want = (size_t)res;
		} else if (md->err) {
			CHECK(res == md->err, "stream %d: read got %zd, want %d",
			      md->idx, res, md->err);
		} else if (md->eof) {
			CHECK(res == 0, "stream %d: read at EOF got %zd",
			      md->idx, res);
		} else {
			CHECK(md->rd_shut && res == -IOU_ECLOSED,
			      "stream %d: read with nothing buffered got %zd",
			      md->idx, res);
		}
		break;
	case K_EXACTLY:
	case K_PEEK:
		if (b >= md->n) {
			CHECK(res == (ssize_t)md->n,
			      "stream %d: read_exactly/peek(%zu) with %zu buffered "
			      "got %zd", md->idx, md->n, b, res);
			want = md->n;
		} else {
			CHECK(end_code(md) && res == end_res(md, b),
			      "stream %d: read_exactly/peek(%zu) with %zu buffered "
			      "got %zd, want %d", md->idx, md->n, b, res,
			      end_res(md, b));
		}
		break;
	case K_UNTIL:
		want = until_len(md);
		if (want) {
			CHECK(res == (ssize_t)want,
			      "stream %d: read_until(max %zu) got %zd, want %zu",
			      md->idx, md->n, res, want);
		} else if (b >= md->n) {
			CHECK(res == -IOU_EOVERFLOW,
			      "stream %d: read_until(max %zu) with %zu buffered, no "
			      "separator, got %zd", md->idx, md->n, b, res);
		} else {
			CHECK(end_code(md) && res == end_res(md, b),
			      "stream %d: read_until(max %zu) with %zu buffered got "
			      "%zd, want %d", md->idx, md->n, b, res, end_res(md, b));
		}
		break;
	}
	if (want) {
		CHECK(data && memcmp(data, md->d.p + md->cons, want) == 0,
		      "stream %d: delivered bytes differ", md->idx);
		if (kind != K_PEEK)
			md->cons += want;
	} else {
		CHECK(!data, "stream %d: data with result %zd", md->idx, res);
	}
	if (res >= 0) {
		/* While bytes are delivered the buffer cannot be taken. */
		unsigned char tmp[4];

		in_api++;
		CHECK(iou_take_buffer(s, tmp, sizeof(tmp)) == -EBUSY,
		      "stream %d: take_buffer inside a read callback", md->idx);
		in_api--;
	} else if (md->chain) {
		/* After a failed read (IOU_EINCOMPLETE...) the bytes that
		 * arrived are the application's to take. */
		do_take(md, md->chain * 5);
	}
	/* Pipelining: the next read straight from the callback. */
	if (md->chain && res > 0 && !md->rd_shut) {
		in_cb++;
		issue(md, kind, md->n, md->sep, md->seplen, md->chain - 1);
		in_cb--;
	}
}

static void fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct model *md = ud, *t = &m[md->fwd_to];
	size_t b = buffered(md);

	CHECK(md->s == s, "forward callback for the wrong stream");
	CHECK(!in_api, "stream %d: forward callback inside an API call",
	      md->idx);
	CHECK(md->kind == K_FWD, "stream %d: forward callback without a "
	      "forward", md->idx);
	TRACE("  fwd cb: stream %d -> %d max %zu -> %zd (buffered %zu)\n",
	      md->idx, t->idx, md->n, res, b);
	md->kind = K_NONE;
	if (md->closing && res <= 0) {
		/* The target may close first: IOU_ECLOSED.  (A send that
		 * completed before the close ran is reported: res > 0.) */
		CHECK(res == -ECANCELED || (t->closing && res == -IOU_ECLOSED),
		      "stream %d: closing, forward got %zd", md->idx, res);
		t->out_desync = true; /* its bytes may still go out */
		return;
	}
	if (res > 0) {
		CHECK((size_t)res <= b && (size_t)res <= md->n,
		      "stream %d: forward(%zu) with %zu buffered got %zd",
		      md->idx, md->n, b, res);
		if (!t->out_desync) {
			CHECK(t->out.len >= t->out_acked + (size_t)res,
			      "stream %d: forward of %zd acked, %zu sent", md->idx,
			      res, t->out.len - t->out_acked);
			CHECK(memcmp(t->out.p + t->out_acked, md->d.p + md->cons,
				     (size_t)res) == 0,
			      "stream %d: forwarded bytes differ", md->idx);
			t->out_acked += (size_t)res;
		}
		md->cons += (size_t)res;
		return;
	}
	if (res == 0) {
		CHECK(b == 0 && md->eof && !md->err,
		      "stream %d: forward got 0 with %zu buffered", md->idx, b);
		return;
	}
	/* A failure after the bytes were handed over loses them. */
	size_t now = md->d.len - iou_buffered(s);

	CHECK(now >= md->cons && now - md->cons <= md->n,
	      "stream %d: failed forward consumed %zu", md->idx, now - md->cons);
	if (now != md->cons) {
		CHECK(res == -ECANCELED, "stream %d: forward lost bytes with %zd",
		      md->idx, res);
		t->out_desync = true;
		md->cons = now;
	} else {
		CHECK(res == -ECANCELED || res == -IOU_ECLOSED ||
			      (b == 0 && res == end_code(md)),
		      "stream %d: forward got %zd (buffered %zu)", md->idx, res,
		      b);
	}
}

static void issue_forward(struct model *md, struct model *t, size_t max)
{
	int ret, busy = md->kind != K_NONE,
		 closed = md->rd_shut || md->closing || t->closing;

	in_api++;
	ret = iou_forward(md->s, t->s, max, fwd_cb, md);
	in_api--;
	TRACE("  forward: stream %d -> %d max %zu -> %d\n", md->idx, t->idx,
	      max, ret);
	if (busy || closed) {
		CHECK((busy && ret == -EBUSY) || (closed && ret == -IOU_ECLOSED),
		      "stream %d: forward returned %d (busy %d closed %d)",
		      md->idx, ret, busy, closed);
		return;
	}
	CHECK(ret == 0, "stream %d: forward returned %d", md->idx, ret);
	md->kind = K_FWD;
	md->n = max;
	md->fwd_to = t->idx;
}

static void close_cb(iou_stream *s, void *ud)
{
	struct model *md = ud;

	CHECK(md->s == s && md->closing && !md->freed,
	      "stream %d: bad close callback", md->idx);
	CHECK(md->kind == K_NONE, "stream %d: freed with a read pending",
	      md->idx);
	md->freed = true;
}

/* Issue a read and check what the call returned. */
static void issue(struct model *md, int kind, size_t n, const void *sep,
		  size_t seplen, unsigned chain)
{
	iou_stream *s = md->s;
	int ret, inval = 0, busy = md->kind != K_NONE,
		 closed = md->rd_shut || md->closing;

	switch (kind) {
	case K_READ:
		inval = n == 0;
		break;
	case K_EXACTLY:
	case K_PEEK:
		inval = n == 0 || n > md->max_buffered;
		break;
	case K_UNTIL:
		inval = seplen == 0 || n < seplen || n > md->max_buffered;
		break;
	}
	in_api++;
	switch (kind) {
	case K_READ:
		ret = iou_read(s, n, read_cb, md);
		break;
	case K_EXACTLY:
		ret = iou_read_exactly(s, n, read_cb, md);
		break;
	case K_PEEK:
		ret = iou_peek(s, n, read_cb, md);
		break;
	default:
		ret = iou_read_until(s, sep, seplen, n, read_cb, md);
		break;
	}
	in_api--;
	TRACE("  issue: stream %d kind %d n %zu seplen %zu -> %d\n", md->idx,
	      kind, n, seplen, ret);
	if (inval) {
		CHECK(ret == -EINVAL, "stream %d: invalid read returned %d",
		      md->idx, ret);
		return;
	}
	if (busy || closed) {
		CHECK((busy && ret == -EBUSY) || (closed && ret == -IOU_ECLOSED),
		      "stream %d: read returned %d (busy %d closed %d)", md->idx,
		      ret, busy, closed);
		return;
	}
	CHECK(ret == 0, "stream %d: read returned %d", md->idx, ret);
	md->kind = kind;
	md->n = n;
	if (kind == K_UNTIL) {
		if (sep != md->sep)
			memcpy(md->sep, sep, seplen);
		md->seplen = seplen;
	}
	md->chain = chain;
}

static void do_take(struct model *md, size_t cap)
{
	unsigned char *dst = malloc(cap ? cap : 1);
	size_t b = buffered(md);
	ssize_t ret;

	CHECK(dst, "out of memory");
	in_api++;
	ret = iou_take_buffer(md->s, cap ? dst : NULL, cap);
	in_api--;
	TRACE("  take: stream %d cap %zu -> %zd\n", md->idx, cap, ret);
	if (md->kind != K_NONE) {
		CHECK(ret == -EBUSY, "stream %d: take_buffer with a read pending "
		      "returned %zd", md->idx, ret);
	} else {
		size_t want = cap < b ? cap : b;

		CHECK(ret == (ssize_t)want,
		      "stream %d: take_buffer(%zu) with %zu buffered returned %zd",
		      md->idx, cap, b, ret);
		CHECK(!want || memcmp(dst, md->d.p + md->cons, want) == 0,
		      "stream %d: take_buffer bytes differ", md->idx);
		md->cons += want;
	}
	free(dst);
}

/* ---- turns and invariants ----------------------------------------------- */

static void sync_idle(void);

static void check_invariants(void)
{
	unsigned count = loop->bufs.buf_count, held = 0, lent = 0, in_ring;
	uint8_t *seen = calloc(count, 1);

	CHECK(seen, "out of memory");
	sync_idle();
	for (int i = 0; i < nstreams; i++) {
		struct model *md = &m[i];
		iou_stream *s = md->s;
		size_t bytes = 0;

		if (!s)
			continue;
		for (uint32_t bid = s->rxq.head; bid != IOU__SEG_NONE;
		     bid = loop->pool.segs[bid].next) {
			const struct iou__seg *g = &loop->pool.segs[bid];

			CHECK(bid < count, "stream %d: bad buffer id %u", i, bid);
			CHECK(!seen[bid], "buffer %u queued twice", bid);
			CHECK(bstate[bid] == B_LIB,
			      "stream %d queues buffer %u, state %d", i, bid,
			      bstate[bid]);
			CHECK(g->off < g->len && g->len <= loop->pool.buf_size,
			      "stream %d: buffer %u off %u len %u", i, bid,
			      g->off, g->len);
			if (g->next == IOU__SEG_NONE)
				CHECK(s->rxq.tail == bid, "stream %d: bad tail", i);
			seen[bid] = 1;
			held++;
			bytes += g->len - g->off;
		}
		for (struct iou__write *w = s->wq_head; w; w = w->next) {
			if (w->kind != 3 /* W_FORWARD */ || w->bid == IOU__SEG_NONE)
				continue;
			CHECK(w->bid < count && !seen[w->bid] &&
				      bstate[w->bid] == B_LIB,
			      "stream %d: forward write holds buffer %u", i,
			      w->bid);
			seen[w->bid] = 1;
			held++;
			lent++;
		}
		CHECK(bytes == s->rxq.seg_bytes, "stream %d: seg_bytes %zu, counted %zu",
		      i, s->rxq.seg_bytes, bytes);
		CHECK(iou__list_linked(&s->holder_link) ||
			      s->rxq.head == IOU__SEG_NONE,
		      "stream %d: holds buffers but is not in holders", i);
		if (!md->closing) {
			/* bytes handed to a forward's target are not buffered */
			size_t fwd = s->read_kind == IOU__RD_FORWARDING
					     ? s->fwd_total : 0;

			CHECK(iou_buffered(s) + fwd == buffered(md),
			      "stream %d: library buffers %zu (+%zu forwarded) "
			      "bytes, model %zu", i, iou_buffered(s), fwd,
			      buffered(md));
		}
		unsigned queued = 0;
		for (unsigned k = 0; k < nsqe; k++) {
			int which;

			if (sqes[k].user_data &&
			    model_of_op(sqes[k].user_data, &which) == md)
				queued++;
		}
		CHECK(s->inflight == (unsigned)md->armed + queued,
		      "stream %d: inflight %u, kernel has %d, SQ has %u", i,
		      s->inflight, md->armed, queued);
	}
	{
		uint64_t want = 0;

		for (int i = 0; i < nstreams; i++)
			if (m[i].s)
				want += 1 + m[i].s->inflight;
		CHECK(loop->active == want, "loop->active %llu, want %llu",
		      (unsigned long long)loop->active,
		      (unsigned long long)want);
	}
	in_ring = (uint16_t)(loop->bufs.br->tail + loop->bufs.pending - khead);
	for (unsigned k = 0; k < in_ring; k++) {
		struct io_uring_buf *b =
			&loop->bufs.br->bufs[(uint16_t)(khead + k) & loop->bufs.mask];

		CHECK(b->bid < count, "ring entry with bad buffer id %u", b->bid);
		CHECK(!seen[b->bid], "buffer %u both in the ring and held, or "
		      "twice in the ring", b->bid);
		CHECK(bstate[b->bid] == B_RING, "buffer %u in the ring, state %d",
		      b->bid, bstate[b->bid]);
		seen[b->bid] = 1;
	}
	CHECK(in_ring + held == live,
	      "buffers: %u in the ring + %u held != %u live (leak)", in_ring,
	      held, live);
	CHECK(loop->bufs.out == held, "bufs.out %u, held %u", loop->bufs.out,
	      held);
	CHECK(loop->bufs.fwd_held == lent && lent <= loop->bufs.fwd_max,
	      "forwards hold %u buffers, counted %u, budget %u",
	      loop->bufs.fwd_held, lent, loop->bufs.fwd_max);
	free(seen);
}

/* Buffers that left the idle stack joined the ring; the stack holds idle
 * buffers only, each once, and the counts agree. */
static void sync_idle(void)
{
	unsigned count = loop->bufs.buf_count, n = 0;
	uint8_t *on_stack = calloc(count, 1);

	CHECK(on_stack, "out of memory");
	CHECK(loop->bufs.nidle + loop->bufs.live == count &&
		      loop->bufs.idle_clean <= loop->bufs.nidle,
	      "idle %u (clean %u) + live %u != %u", loop->bufs.nidle,
	      loop->bufs.idle_clean, loop->bufs.live, count);
	for (unsigned i = 0; i < loop->bufs.nidle; i++) {
		unsigned bid = loop->bufs.idle[i];

		CHECK(bid < count && !on_stack[bid] && bstate[bid] == B_IDLE,
		      "idle stack holds buffer %u (state %d)", bid,
		      bid < count ? bstate[bid] : -1);
		on_stack[bid] = 1;
	}
	for (unsigned bid = 0; bid < count; bid++) {
		if (bstate[bid] == B_IDLE && !on_stack[bid]) {
			bstate[bid] = B_RING;
			n++;
		}
	}
	CHECK(live + n == loop->bufs.live, "%u buffers joined, live %u -> %u",
	      n, live, loop->bufs.live);
	live = loop->bufs.live;
	free(on_stack);
}

/* One loop turn, as iou_loop_run_once(): publish returned buffers, submit,
 * dispatch the CQEs, end-of-turn work. */
static void turn_once(void)
{
	iou__bufring_publish(loop);
	kernel_submit();
	loop->now++;
	for (size_t i = 0; i < cq_len; i++) {
		struct cqe c = cq[i];
		struct iou__cqe_rec cqe = { c.res, c.flags };
		struct iou__op *op = (struct iou__op *)(uintptr_t)c.user_data;
		struct model *md;
		int which;

		if (!op)
			continue;
		md = model_of_op(c.user_data, &which);
		CHECK(md, "CQE for an unknown op");
		TRACE("  cqe: stream %d op %d res %d flags %x\n", md->idx, which,
		      c.res, c.flags);
		if (which == 0) {
			if (c.flags & IORING_CQE_F_BUFFER) {
				CHECK(c.nbids && c.bids[0] == c.flags >>
						IORING_CQE_BUFFER_SHIFT, "bad CQE");
				for (unsigned k = 0; k < c.nbids; k++) {
					CHECK(bstate[c.bids[k]] == B_KERNEL,
					      "bad CQE buffer");
					bstate[c.bids[k]] = B_LIB;
				}
			}
			if (c.res > 0 && !md->closing && !md->rd_shut)
				bytes_add(&md->d, md->sock.p + c.off, c.len);
			else if (c.res == 0)
				md->eof = true;
			else if (c.res < 0 && c.res != -ENOBUFS &&
				 c.res != -ECANCELED && !md->err)
				md->err = c.res;
		}
		op->complete(op, &cqe);
		if (which == 2 && md->freed)
			md->s = NULL;
	}
	cq_len = 0;
	iou__streams_turn_end(loop);
	/* the pool grows only at the end of a turn, by idle buffers */
	CHECK(loop->bufs.live >= live && loop->bufs.live <= loop->bufs.buf_count,
	      "live buffers %u -> %u of %u", live, loop->bufs.live,
	      loop->bufs.buf_count);
	if (loop->bufs.live > live)
		sync_idle();
}

/* A turn, then more while streams left work for the next one (the real loop
 * does not block then); afterwards every servable read was served. */
static void turn(void)
{
	turn_once();
	for (int i = 0; i < 16 && !iou__list_empty(&loop->deferred); i++)
		turn_once();
	check_invariants();
	for (int i = 0; i < nstreams; i++) {
		struct model *md = &m[i];

		if (md->s && md->kind != K_NONE)
			CHECK(!ready(md), "stream %d: read kind %d n %zu can be "
			      "served (buffered %zu, eof %d, err %d) but is still "
			      "pending", i, md->kind, md->n, buffered(md), md->eof,
			      md->err);
	}
}

/* ---- the driver --------------------------------------------------------- */

static void setup(void)
{
	unsigned b0 = u8(), b1 = u8(), b2 = u8();
	unsigned size = 1 + b0 % 48, count = 1u << (b1 % 7);
	struct iou__bufring *b = &loop->bufs;
	int ret;

	nstreams = 1 + b2 % MAX_STREAMS;
	/* The real set-up; only the registration with the ring is faked. */
	ret = iou__bufring_setup(loop, size, count);
	CHECK(ret == 0, "iou__bufring_setup: %d", ret);
	loop->pool.give_back = give_back;
	b->bundle = (b2 / MAX_STREAMS) & 1;
	bstate = calloc(count, 1);
	CHECK(bstate, "out of memory");
	live = b->live;
	memset(bstate + live, B_IDLE, count - live);
	/* periods of a few turns: the pool shrinks and grows again */
	b->quiet_ms = 1 + b0 % 64;
	b->live_min = 1 + b2 % 4;
	b->period_end = b->quiet_ms;
	khead = 0;
	poison = size % 8 == 0;
	if (poison)
		ASAN_POISON_MEMORY_REGION(loop->pool.base, (size_t)size * count);
	TRACE("setup: buf_size %u count %u bundle %d streams %d\n", size, count,
	      b->bundle, nstreams);

	for (int i = 0; i < nstreams; i++) {
		struct iou_stream_opts o;
		struct model *md = &m[i];
		int ret;

		iou_stream_opts_init(&o);
		o.nodelay = 0;
		o.max_buffered = 1 + u16() % 3000;
		md->idx = i;
		md->fd = 1000 + i; /* never used in a system call */
		md->max_buffered = o.max_buffered;
		ret = iou__stream_new(loop, md->fd, &o, &md->s);
		CHECK(ret == 0, "iou__stream_new: %d", ret);
		TRACE("stream %d: max_buffered %zu\n", i, md->max_buffered);
	}
}

static void op_read(struct model *md, unsigned op)
{
	unsigned chain = u8() % 4;
	size_t n;

	switch (op) {
	case 8:
		issue(md, K_READ, 1 + u8(), NULL, 0, chain);
		break;
	case 9:
		n = u16() % 3100;
		issue(md, K_EXACTLY, n, NULL, 0, chain);
		break;
	case 10:
		n = u16() % 3100;
		issue(md, K_PEEK, n, NULL, 0, chain);
		break;
	default: {
		unsigned char sep[20];
		size_t seplen = 1 + u8() % 20;

		for (size_t i = 0; i < seplen; i++)
			sep[i] = (unsigned char)u8();
		n = u16() % 3100;
		issue(md, K_UNTIL, n, sep, seplen, chain);
		break;
	}
	}
}

static void run_ops(void)
{
	static const int errs[] = { -ECONNRESET, -ETIMEDOUT, -EPIPE,
				    -EHOSTUNREACH };

	for (int k = 0; k < MAX_OPS && in_n; k++) {
		unsigned b = u8(), op = b & 15;
		struct model *md = &m[(b >> 4) % nstreams];

		TRACE("op %u stream %d\n", op, md->idx);

		if (!md->s || md->closing) {
			if (op == 7)
				turn();
			continue;
		}
		switch (op) {
		case 0:
		case 1: {
			size_t len = 1 + u8() % 64;

			if (md->sock_eof || md->sock_err)
				break;
			if (len > in_n)
				len = in_n;
			bytes_add(&md->sock, in_p, len);
			in_p += len;
			in_n -= len;
			break;
		}
		case 2:
		case 3: {
			unsigned p = u8(), q = u8(), nbufs = 1 + (p >> 6);

			kernel_recv(md, 1 + q % (loop->pool.buf_size * nbufs),
				    nbufs, p & 1);
			break;
		}
		case 4:
			md->sock_eof = true;
			break;
		case 5: {
			unsigned p = u8();

			if (p & 0x80)
				md->no_more = true;
			else if (!md->sock_eof && !md->sock_err)
				md->sock_err = errs[p % 4];
			break;
		}
		case 6: {
			struct model *t = &m[u8() % nstreams];
			size_t max = 1 + u16() % 3100;

			if (t->s)
				issue_forward(md, t, max);
			break;
		}
		case 7:
			turn();
			break;
		case 8:
		case 9:
		case 10:
		case 11:
			op_read(md, op);
			break;
		case 12:
			do_take(md, u16() % 3100);
			break;
		case 13:
			if (u8() % 4 == 0) {
				int ret;

				in_api++;
				ret = iou_shutdown(md->s, SHUT_RD);
				in_api--;
				CHECK(ret == 0, "shutdown: %d", ret);
				md->rd_shut = true;
			}
			break;
		case 14: {
			unsigned p = u8();

			sqe_fail = p % 4;
			short_sends = (p >> 2) % 4;
			break;
		}
		case 15:
			if (u8() % 8 == 0) {
				int ret;

				in_api++;
				ret = iou_close(md->s, close_cb, md);
				in_api--;
				CHECK(ret == 0, "close: %d", ret);
				TRACE("  close: stream %d\n", md->idx);
				md->closing = true;
			}
			break;
		}
	}
}

/* The peer's bytes keep arriving as long as the streams take them; then a
 * read still pending must be one the bytes cannot serve. */
static void drain(void)
{
	sqe_fail = 0;
	for (int round = 0; round < 10000; round++) {
		bool any = false;

		for (int i = 0; i < nstreams; i++)
			any |= kernel_recv(&m[i], loop->pool.buf_size, 2, false);
		any |= nsqe > 0 || !iou__list_empty(&loop->deferred);
		turn();
		if (!any)
			break;
	}
	for (int i = 0; i < nstreams; i++) {
		struct model *md = &m[i];

		if (!md->s || md->closing || md->kind == K_NONE)
			continue;
		CHECK(md->sock_off == md->sock.len && !md->sock_err &&
			      !(md->sock_eof && !md->ended),
		      "stream %d: read kind %d n %zu waits (buffered %zu) while "
		      "the socket has %zu bytes%s%s, recv armed %d",
		      i, md->kind, md->n, buffered(md),
		      md->sock.len - md->sock_off,
		      md->sock_eof && !md->ended ? " and EOF" : "",
		      md->sock_err ? " and an error" : "", md->armed);
	}
}

static void close_all(void)
{
	sqe_fail = 0;
	for (int i = 0; i < nstreams; i++) {
		struct model *md = &m[i];

		if (md->s && !md->closing) {
			CHECK(iou_close(md->s, close_cb, md) == 0, "close");
			md->closing = true;
		}
	}
	for (int round = 0; round < 100; round++) {
		bool left = false;

		turn();
		for (int i = 0; i < nstreams; i++)
			left |= m[i].s != NULL;
		if (!left)
			break;
	}
	for (int i = 0; i < nstreams; i++)
		CHECK(m[i].freed && !m[i].s, "stream %d not freed", i);
	iou__bufring_publish(loop);
	CHECK(loop->active == 0, "loop->active %llu after closing everything",
	      (unsigned long long)loop->active);
	CHECK(loop->bufs.out == 0 && loop->bufs.pending == 0 &&
		      ring_avail() == live,
	      "buffers not all back: out %u, ring %u of %u", loop->bufs.out,
	      ring_avail(), live);
	CHECK(iou__list_empty(&loop->starved) && iou__list_empty(&loop->holders) &&
		      iou__list_empty(&loop->deferred),
	      "loop lists not empty");
	CHECK(nsqe == 0 && cq_len == 0, "SQEs or CQEs left");
	{
		unsigned n = 0;

		for (void *w = loop->free_writes; w; w = *(void **)w)
			n++;
		CHECK(n == loop->n_writes, "write records: %u of %u free", n,
		      loop->n_writes);
	}
}

static void teardown(void)
{
	if (poison)
		ASAN_UNPOISON_MEMORY_REGION(loop->pool.base,
					    (size_t)loop->pool.buf_size *
						    loop->bufs.buf_count);
	iou__bufring_teardown(loop);
	iou__timers_free(loop);
	while (loop->free_writes) {
		void *next = *(void **)loop->free_writes;

		free(loop->free_writes);
		loop->free_writes = next;
	}
	iou__blk_cache_free(&loop->blocks);
	free(iou__uring(loop));
	loop = NULL;
	for (int i = 0; i < MAX_STREAMS; i++) {
		free(m[i].d.p);
		free(m[i].sock.p);
		free(m[i].out.p);
	}
	memset(m, 0, sizeof(m));
	free(cq);
	cq = NULL;
	cq_len = cq_cap = 0;
	free(bstate);
	bstate = NULL;
	nsqe = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	in_p = data;
	in_n = size;
	{ /* the loop inside its backend's state, as iou__be_create() makes it */
		struct iou__uring *u = calloc(1, sizeof(*u));

		CHECK(u, "out of memory");
		loop = &u->loop;
	}
	loop->wake_fd = -1;
	iou__list_init(&loop->starved);
	iou__list_init(&loop->deferred);
	iou__list_init(&loop->holders);
	memset(m, 0, sizeof(m));
	sqe_fail = short_sends = 0;
	in_api = in_cb = 0;

	setup();
	run_ops();
	turn();
	drain();
	close_all();
	teardown();
	return 0;
}
