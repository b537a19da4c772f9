/* SPDX-License-Identifier: MIT */
/* The receive side of a stream: one multishot recv into the loop's provided
 * buffers, their bytes kept in the stream's receive queue (rxq.c), and the
 * buffered reads on top (read, read_exactly, read_exactly_into, peek,
 * read_until, and the tasks' read view); a forward is served here as a
 * pending read, its bytes handed over by forward.c.
 *
 * Read top to bottom, the file follows the data path from the kernel to the
 * application: the multishot recv (armed, and paused while the stream is
 * full); a receive's completion (iou__recv_complete) queues the buffers it
 * filled (recv_take_buffers) and serves the pending read
 * (iou__read_progress, read_progress_once), whose callback gets the bytes
 * (deliver).  Read views and the reads ended early follow, and last the way
 * in: the public reads, down to iou__read_start.  A function comes before
 * those it leads to (the static ones are declared ahead). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void recv_take_buffers(iou_stream *s, uint32_t first, int res);
static bool read_progress_once(iou_stream *s);
static int end_error(const iou_stream *s);
static size_t copy_out(iou_stream *s, unsigned char *dst, size_t cap);
static void deliver(iou_stream *s, const unsigned char *p, size_t n,
		    bool keep);
static void into_finish(iou_stream *s, ssize_t res);
static bool view_progress(iou_stream *s);
static int view_take(iou_stream *s, const unsigned char **p, size_t *n);
static int read_fixed(iou_stream *s, size_t n, iou_read_cb cb, void *ud,
		      uint8_t kind);
static int read_refused(const iou_stream *s);

static size_t buffered(const iou_stream *s)
{
	return iou__rxq_len(&s->rxq);
}

static void consume(iou_stream *s, size_t n)
{
	iou__rxq_consume(&s->loop->pool, &s->rxq, n);
}

/* ---- the multishot recv ------------------------------------------------- */

/* The multishot recv takes at most the bytes the stream may still buffer
 * (kernels 6.16+): it ends by itself there, so even a flood that
 * filled the socket's receive queue takes no more than max_buffered (plus at
 * most one buffer without bundles) from the shared pool.  Older kernels
 * reject the limit with -EINVAL; then it is dropped for the loop and only the
 * cancel in recv_pause_if_full() stops the receive, bytes already queued in
 * the socket still come in. */
void iou__recv_arm(iou_stream *s)
{
	size_t limit;

	if (!(s->flags & IOU__S_RECV_WANTED) ||
	    (s->flags & (IOU__S_RECV_ARMED | IOU__S_STARVED | IOU__S_EOF |
			 IOU__S_RD_SHUT | IOU__S_CLOSING)) ||
	    s->rd_err || buffered(s) >= s->max_buffered)
		return;
	limit = s->loop->bufs.recv_limit ? s->max_buffered - buffered(s) : 0;
	if (iou__be_recv(s->loop, &s->recv_op, s->fd, limit) < 0) {
		iou__stream_poke(s);
		return;
	}
	s->flags &= ~IOU__S_RECV_LIMITED;
	if (limit)
		s->flags |= IOU__S_RECV_LIMITED;
	s->flags |= IOU__S_RECV_ARMED;
	s->inflight++;
	iou__op_submitted(s->loop);
}

/* Stop receiving while the stream holds max_buffered bytes: the socket's
 * receive queue fills and TCP pushes back on the peer. */
static void recv_pause_if_full(iou_stream *s)
{
	if (buffered(s) < s->max_buffered ||
	    (s->flags & (IOU__S_RECV_ARMED | IOU__S_RECV_CANCEL)) !=
		    IOU__S_RECV_ARMED)
		return;
	if (iou__cancel_op(s->loop, &s->recv_op, s->fd) == 0)
		s->flags |= IOU__S_RECV_CANCEL;
}

void iou__recv_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	iou_stream *s = IOU__CONTAINER_OF(op, iou_stream, recv_op);
	iou_loop *loop = s->loop;
	int res = cqe->res;

	if (cqe->flags & IOU__CQE_F_BUFFER)
		recv_take_buffers(s, iou__cqe_buf(cqe), res);
	if (!(cqe->flags & IOU__CQE_F_MORE)) {
		s->flags &= ~(IOU__S_RECV_ARMED | IOU__S_RECV_CANCEL);
		s->inflight--;
		iou__op_done(loop);
		if (s->flags & IOU__S_CLOSING) {
			iou__stream_op_done(s);
			return;
		}
		if (res == -ENOBUFS && !(s->flags & IOU__S_RD_SHUT)) {
			/* The pool ran dry: wait for buffers to come back. */
			s->flags |= IOU__S_STARVED;
			iou__list_add_tail(&loop->starved, &s->starved_link);
		} else if (res == -EINVAL && (s->flags & IOU__S_RECV_LIMITED)) {
			/* A kernel without the byte limit: arm without.  Per
			 * arm: other streams armed in the same turn get the
			 * same -EINVAL after the loop's flag is cleared. */
			loop->bufs.recv_limit = false;
			iou__stream_poke(s);
			return;
		} else {
			iou__stream_poke(s); /* re-arm if still wanted */
		}
	}
	if (res == 0)
		s->flags |= IOU__S_EOF;
	else if (res < 0 && res != -ENOBUFS && res != -ECANCELED && !s->rd_err)
		s->rd_err = res;
	/* A graceful close discards what comes: its pending read gets
	 * -ECANCELED (flush_progress), never the end of file. */
	if (s->flags & (IOU__S_CLOSING | IOU__S_FLUSHING))
		return;
	if (s->read_kind != IOU__RD_NONE)
		iou__read_progress(s);
	recv_pause_if_full(s);
}

/* Queue the buffers a receive filled: one, or with a bundle as many as the
 * bytes need, each full but the last, in ring order after the first.
 *
 * The CQE names only a bundle's first buffer.  The kernel takes a bundle
 * from consecutive ring slots, starting at that buffer's, and posts its CQE
 * before it takes buffers for the next receive: so when we get here, every
 * receive whose buffers were taken before this one's was handled, the ones
 * after it still hold theirs, and the slots of this bundle can have been
 * reused (buffers added at the tail) only for buffers we gave back from
 * this bundle itself, each after its own id was read.  The ids come from
 * slot_bid, which we wrote when we filled the slots: what the shared ring
 * memory says now does not matter. */
static void recv_take_buffers(iou_stream *s, uint32_t first, int res)
{
	iou_loop *loop = s->loop;
	uint32_t size = loop->pool.buf_size;
	uint32_t left = res > 0 ? (uint32_t)res : 0;
	bool keep = left && !(s->flags & (IOU__S_CLOSING | IOU__S_RD_SHUT |
					  IOU__S_FLUSHING));
	unsigned n = left ? (left + size - 1) / size : 1;
	unsigned pos = loop->bufs.pos[first]; /* before recycling changes it */

	loop->bufs.taken += n;
	for (unsigned i = 0; i < n; i++) {
		uint32_t bid = i ? iou__buf_at(loop, pos + i) : first;
		uint32_t len = left < size ? left : size;

		loop->bufs.out++;
		left -= len;
		if (keep)
			iou__rxq_push(&loop->pool, &s->rxq, bid, len);
		else
			iou__buf_recycle(loop, bid);
	}
	if (keep) {
		s->last_active = loop->now;
		if (!iou__list_linked(&s->holder_link))
			iou__list_add_tail(&loop->holders, &s->holder_link);
	}
}

/* ---- serving the pending read ------------------------------------------- */

/* A read callback typically issues the next read: serve it right after the
 * callback returned, while the bytes are at hand, instead of one read per
 * loop turn (a pipelining client would otherwise pay a turn per response).
 * Bounded, so that one stream cannot hold the loop. */
void iou__read_progress(iou_stream *s)
{
	for (int i = 0; i < 64 && s->read_kind != IOU__RD_NONE; i++) {
		/* A read issued in a callback that then closed the stream is
		 * failed by the close, never served. */
		if (s->flags & IOU__S_CLOSING)
			break;
		if (s->flags & IOU__S_READ_CANCEL) {
			iou__read_fail(s, -ECANCELED);
			continue;
		}
		if (!read_progress_once(s))
			break;
	}
}

/* Serve the pending read if the bytes are there.  Returns true when its
 * callback ran with data (which may have issued the next read). */
static bool read_progress_once(iou_stream *s)
{
	size_t have = buffered(s), n = 0;
	const unsigned char *p;
	int err = 0;

	switch (s->read_kind) {
	case IOU__RD_SOME:
		/* Everything buffered (up to max), not only the first
		 * receive's bytes: one run, copied only if it spans buffers. */
		if (have) {
			n = have < s->read_n ? have : s->read_n;
			break;
		}
		err = end_error(s);
		break;
	case IOU__RD_EXACTLY:
	case IOU__RD_PEEK:
		if (have >= s->read_n)
			n = s->read_n;
		else
			err = end_error(s);
		break;
	case IOU__RD_UNTIL: {
		ssize_t found = iou__rxq_find(&s->loop->pool, &s->rxq, s->sep,
					      s->seplen, s->read_n,
					      &s->scan_pos);

		if (found < 0)
			err = (int)found;
		else if (found == 0)
			err = have >= s->read_n ? -IOU_EOVERFLOW : end_error(s);
		n = found > 0 ? (size_t)found : 0;
		break;
	}
	case IOU__RD_INTO:
		/* Into the caller's buffer as the bytes arrive: the stream's
		 * own buffer stays small, so n needs no max_buffered limit. */
		s->into_got += copy_out(s, s->into_buf + s->into_got,
					s->read_n - s->into_got);
		if (s->into_got == s->read_n) {
			into_finish(s, (ssize_t)s->read_n);
			return true;
		}
		err = end_error(s);
		if (err == -IOU_EINCOMPLETE && !s->into_got)
			into_finish(s, 0); /* a clean end of file */
		else if (err)
			into_finish(s, err);
		return false;
	case IOU__RD_VIEW:
		if (have)
			return view_progress(s);
		err = end_error(s);
		break;
	case IOU__RD_FORWARD:
		if (have) {
			iou__forward_progress(s);
			return false;
		}
		err = end_error(s);
		if (err == -IOU_EINCOMPLETE) {
			iou__read_fail(s, 0); /* plain end of file */
			return false;
		}
		break;
	default:
		return false;
	}
	if (n) {
		p = iou__rxq_contiguous(&s->loop->pool, &s->rxq, n);
		if (!p) {
			iou__read_fail(s, -ENOMEM);
			return false;
		}
		deliver(s, p, n, s->read_kind == IOU__RD_PEEK);
		return true;
	}
	if (err == -IOU_EINCOMPLETE && !have) {
		/* End of file with nothing buffered: between messages, not
		 * inside one. */
		deliver(s, NULL, 0, true);
		return false;
	}
	if (err)
		iou__read_fail(s, err);
	return false;
}

/* End of the bytes: what a read that wants more gets instead. */
static int end_error(const iou_stream *s)
{
	if (s->rd_err)
		return s->rd_err;
	if (s->flags & IOU__S_EOF)
		return -IOU_EINCOMPLETE;
	if (s->flags & (IOU__S_RD_SHUT | IOU__S_CLOSING))
		return -IOU_ECLOSED;
	return 0;
}

/* Move up to cap buffered bytes to dst and consume them; the count. */
static size_t copy_out(iou_stream *s, unsigned char *dst, size_t cap)
{
	size_t done = 0;

	while (done < cap) {
		const unsigned char *p;
		size_t len;

		iou__rxq_first(&s->loop->pool, &s->rxq, &p, &len);
		if (!len)
			break;
		if (len > cap - done)
			len = cap - done;
		memcpy(dst + done, p, len);
		consume(s, len);
		done += len;
	}
	if (done)
		iou__recv_resume(s);
	return done;
}

static void deliver(iou_stream *s, const unsigned char *p, size_t n,
		    bool keep)
{
	iou_read_cb cb = s->read_cb;
	void *ud = s->read_ud;

	iou__read_clear(s);
	s->flags |= IOU__S_DELIVERING;
	s->delivering = keep ? 0 : n;
	cb(s, (ssize_t)n, p, ud);
	s->flags &= ~IOU__S_DELIVERING;
	s->delivering = 0;
	if (!keep) {
		consume(s, n);
		iou__recv_resume(s);
	}
}

void iou__read_fail(iou_stream *s, int err)
{
	uint8_t kind = s->read_kind;
	void *ud = s->read_ud;

	/* Cancelled first (iou_read_cancel(), a graceful close): whatever
	 * ends the read now (its deadline, its forward's target closing, the
	 * peer), the callback the application was promised.  A forward whose
	 * bytes are on their way reports their send. */
	if ((s->flags & (IOU__S_READ_CANCEL | IOU__S_FLUSHING)) &&
	    kind != IOU__RD_FORWARDING)
		err = -ECANCELED;
	if (kind == IOU__RD_INTO) {
		into_finish(s, err);
	} else if (kind == IOU__RD_FORWARD || kind == IOU__RD_FORWARDING) {
		iou_write_cb cb = s->fwd_cb;

		if (s->fwd_req)
			s->fwd_req->cb_stream = NULL; /* its send ends alone */
		iou__read_clear(s);
		cb(s, err, ud);
	} else {
		iou_read_cb cb = s->read_cb;

		iou__read_clear(s);
		cb(s, err, NULL, ud);
	}
}

static void into_finish(iou_stream *s, ssize_t res)
{
	iou_read_into_cb cb = s->into_cb;
	size_t got = s->into_got;
	void *ud = s->read_ud;

	iou__read_clear(s);
	cb(s, res, got, ud);
}

/* The kind's fields share a union: only its own are released. */
void iou__read_clear(iou_stream *s)
{
	if (s->read_kind == IOU__RD_UNTIL) {
		if (s->sep != s->sep_inline)
			iou__blk_put(&s->loop->blocks, s->sep, s->sep_cap);
	} else if (s->read_kind == IOU__RD_FORWARD ||
		   s->read_kind == IOU__RD_FORWARDING) {
		iou__list_del(&s->fwd_link);
	}
	s->read_kind = IOU__RD_NONE;
	s->flags &= ~IOU__S_READ_CANCEL;
	s->read_deadline = 0; /* the stream's timer finds nothing then */
}

/* Receiving stopped for backpressure resumes once bytes were consumed. */
void iou__recv_resume(iou_stream *s)
{
	if ((s->flags & IOU__S_RECV_WANTED) &&
	    !(s->flags & (IOU__S_RECV_ARMED | IOU__S_STARVED)) &&
	    buffered(s) < s->max_buffered)
		iou__stream_poke(s);
}

/* ---- read views --------------------------------------------------------- */

/* Whether the callback ran with bytes (as read_progress_once()). */
static bool view_progress(iou_stream *s)
{
	const unsigned char *p;
	size_t n;

	if (view_take(s, &p, &n) < 0) {
		iou__read_fail(s, -ENOMEM);
		return false;
	}
	iou__recv_resume(s);
	deliver(s, p, n, true); /* taken out already: nothing to consume */
	return true;
}

/* Take the first contiguous bytes (at most read_n) out of the stream into
 * the view's record: from then on they are the holder's, whatever happens
 * to the stream (a close gives its buffers back, new receives reuse them). */
static int view_take(iou_stream *s, const unsigned char **p, size_t *n)
{
	struct iou__pool *pool = &s->loop->pool;
	struct iou__bufring *b = &s->loop->bufs;
	struct iou__held *h = s->view_dst;
	size_t len;

	iou__rxq_first(pool, &s->rxq, p, &len);
	if (len > s->read_n)
		len = s->read_n;
	*h = (struct iou__held){ .bid = IOU__SEG_NONE };
	if (b->fwd_held < b->fwd_max && iou__rxq_head_is(pool, &s->rxq, len)) {
		h->bid = iou__rxq_detach_head(pool, &s->rxq);
		b->fwd_held++;
	} else {
		h->blk = iou__rxq_detach_spill(&s->rxq, len, &h->cap);
		if (!h->blk) {
			h->blk = iou__blk_get(&s->loop->blocks, len, &h->cap);
			if (!h->blk)
				return -ENOMEM;
			memcpy(h->blk, *p, len);
			*p = h->blk;
			consume(s, len);
		}
	}
	*n = len;
	return 0;
}

void iou__held_release(iou_loop *loop, struct iou__held *h)
{
	if (h->bid != IOU__SEG_NONE) {
		iou__buf_recycle(loop, h->bid);
		loop->bufs.fwd_held--;
	} else {
		iou__blk_put(&loop->blocks, h->blk, h->cap);
	}
	*h = (struct iou__held){ .bid = IOU__SEG_NONE };
}

/* ---- reads ended early -------------------------------------------------- */

/* The pending read's deadline: its bytes stay buffered.  Bytes of a
 * forward already queued on its target are the target's write deadline's
 * business. */
void iou__read_deadline_passed(iou_stream *s)
{
	if (s->read_kind == IOU__RD_NONE || s->read_kind == IOU__RD_FORWARDING)
		return;
	iou__read_fail(s, -ETIMEDOUT); /* -ECANCELED if cancelled first */
}

int iou_read_cancel(iou_stream *s)
{
	if (!s)
		return -EINVAL;
	if (s->read_kind == IOU__RD_NONE)
		return -ENOENT;
	if (s->read_kind == IOU__RD_FORWARDING)
		return -EBUSY;
	s->flags |= IOU__S_READ_CANCEL;
	iou__stream_poke(s); /* the callback runs at the end of the turn */
	return 0;
}

/* ---- the public reads --------------------------------------------------- */

int iou_read(iou_stream *s, size_t max, iou_read_cb cb, void *ud)
{
	if (!s || !cb || !max)
		return -EINVAL;
	return iou__read_start(s, IOU__RD_SOME, max, cb, ud);
}

int iou_read_exactly(iou_stream *s, size_t n, iou_read_cb cb, void *ud)
{
	return read_fixed(s, n, cb, ud, IOU__RD_EXACTLY);
}

int iou_peek(iou_stream *s, size_t n, iou_read_cb cb, void *ud)
{
	return read_fixed(s, n, cb, ud, IOU__RD_PEEK);
}

static int read_fixed(iou_stream *s, size_t n, iou_read_cb cb, void *ud,
		      uint8_t kind)
{
	if (!s || !cb || !n || n > s->max_buffered)
		return -EINVAL;
	return iou__read_start(s, kind, n, cb, ud);
}

int iou_read_exactly_into(iou_stream *s, void *buf, size_t n,
			  iou_read_into_cb cb, void *ud)
{
	int ret;

	if (!s || !buf || !cb || !n || n > SSIZE_MAX)
		return -EINVAL;
	ret = iou__read_start(s, IOU__RD_INTO, n, NULL, ud);
	if (ret == 0) {
		s->into_cb = cb;
		s->into_buf = buf;
		s->into_got = 0;
	}
	return ret;
}

int iou_read_until(iou_stream *s, const void *sep, size_t seplen, size_t max,
		   iou_read_cb cb, void *ud)
{
	int ret;

	if (!s || !sep || !cb || !seplen || max < seplen ||
	    max > s->max_buffered)
		return -EINVAL;
	ret = read_refused(s);
	if (ret < 0)
		return ret;
	/* The union's fields are free: no read is pending. */
	if (seplen > IOU__SEP_INLINE) {
		s->sep = iou__blk_get(&s->loop->blocks, seplen, &s->sep_cap);
		if (!s->sep)
			return -ENOMEM;
	} else {
		s->sep = s->sep_inline;
	}
	memcpy(s->sep, sep, seplen);
	s->seplen = (uint32_t)seplen;
	s->scan_pos = 0;
	ret = iou__read_start(s, IOU__RD_UNTIL, max, cb, ud);
	if (ret < 0 && s->sep != s->sep_inline)
		iou__blk_put(&s->loop->blocks, s->sep, s->sep_cap);
	return ret;
}

int iou__read_view(iou_stream *s, size_t max, struct iou__held *h,
		   iou_read_cb cb, void *ud)
{
	int ret;

	if (!s || !h || !cb || !max)
		return -EINVAL;
	ret = iou__read_start(s, IOU__RD_VIEW, max, cb, ud);
	if (ret == 0)
		s->view_dst = h;
	return ret;
}

/* Nothing of the stream changes unless this succeeds: a refused read must
 * leave the pending one (its callback included) alone. */
int iou__read_start(iou_stream *s, uint8_t kind, size_t n, iou_read_cb cb,
		   void *ud)
{
	int ret = read_refused(s);

	if (ret < 0)
		return ret;
	if (s->read_timeout_ms) {
		s->read_deadline = iou__clock_ms() + s->read_timeout_ms;
		iou__stream_timer_at(s, s->read_deadline);
	}
	s->read_kind = kind;
	s->read_cb = cb;
	s->read_n = n;
	s->read_ud = ud;
	s->flags |= IOU__S_RECV_WANTED;
	iou__stream_poke(s);
	return 0;
}

/* Why a new read is refused now, or 0. */
static int read_refused(const iou_stream *s)
{
	if (s->flags & (IOU__S_CLOSING | IOU__S_RD_SHUT | IOU__S_FLUSHING))
		return -IOU_ECLOSED;
	if ((s->flags & IOU__S_CONNECTING) || s->fd < 0)
		return -ENOTCONN;
	return s->read_kind != IOU__RD_NONE ? -EBUSY : 0;
}

/* Inside a read callback the bytes it got count as consumed already (they
 * are, once it returns): what is left for the next read.  A task resumed
 * from that callback sees the same. */
size_t iou_buffered(const iou_stream *s)
{
	return s ? buffered(s) - s->delivering : 0;
}

ssize_t iou_take_buffer(iou_stream *s, void *dst, size_t cap)
{
	if (!s || (!dst && cap))
		return -EINVAL;
	if (s->read_kind != IOU__RD_NONE || (s->flags & IOU__S_DELIVERING))
		return -EBUSY;
	return (ssize_t)copy_out(s, dst, cap);
}
