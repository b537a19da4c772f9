/* SPDX-License-Identifier: MIT */
/* The send side of a stream: the ordered write queue (write, write_all,
 * feed/drain, forward pieces), gathering queued writes into one sendmsg,
 * the send's completion and the callbacks it runs, and write deadlines.
 *
 * Read top to bottom, the file follows the data path from the kernel to the
 * application: a send's completion (iou__send_complete) credits the bytes
 * to the writes the send covered (writes_sent), and each finished write
 * runs its callback (write_finish); then the next send starts
 * (iou__start_send).  After write deadlines comes the way in: the calls
 * that queue writes, down to the pooled records they live in.  A function
 * comes before those it leads to (the static ones are declared ahead). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { W_SOME, W_ALL, W_DRAIN, W_FORWARD };

static void writes_sent(iou_stream *s, size_t res);
static void write_finish(iou_stream *s, ssize_t res);
static unsigned gather_writes(iou_stream *s);
static int queue_user_write(iou_stream *s, const void *buf, size_t len,
			    iou_write_cb cb, void *ud, uint8_t kind);
static int user_write_new(iou_stream *s, iou_write_cb cb, void *ud,
			  uint8_t kind, struct iou__write **out);
static int write_check(const iou_stream *s);
static void wq_append(iou_stream *s, struct iou__write *w);

/* ---- a send's completion ------------------------------------------------ */

void iou__send_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	iou_stream *s = IOU__CONTAINER_OF(op, iou_stream, send_op);
	int res = cqe->res;

	s->inflight--;
	iou__op_done(s->loop);
	/* SEND_ARMED stays set while callbacks run, so that writes they queue
	 * wait for the loop below instead of racing the ones being credited. */
	if (res < 0) {
		if (!s->wr_err)
			s->wr_err = res;
	} else {
		if (res > 0)
			s->last_active = s->loop->now; /* sending is progress */
		writes_sent(s, (size_t)res);
	}
	/* The first error fails the rest: a cut's error rather than the
	 * -ECANCELED of the send it cancelled. */
	if (s->wr_err)
		iou__fail_writes(s, s->wr_err);
	s->flags &= ~IOU__S_SEND_ARMED;
	if (s->flags & IOU__S_CLOSING) {
		iou__stream_op_done(s);
		return;
	}
	if (s->flags & IOU__S_FLUSHING)
		iou__stream_poke(s);
	if (s->wq_head) {
		iou__start_send(s);
	} else if (s->gather) {
		/* nothing left to send: an idle stream keeps no gather list */
		iou__blk_put(&s->loop->blocks, s->gather, s->gather->cap);
		s->gather = NULL;
	}
	iou__shutdown_write_if_due(s);
}

/* Credit `res` sent bytes to the writes the send covered, in order. */
static void writes_sent(iou_stream *s, size_t res)
{
	for (unsigned i = 0; i < s->send_n && s->wq_head; i++) {
		struct iou__write *w = s->wq_head;
		size_t take = w->len - w->done;

		if (take > res)
			take = res;
		w->done += take;
		s->wq_bytes -= take;
		res -= take;
		if (w->done == w->len || (w->kind == W_SOME && (take || !i))) {
			write_finish(s, (ssize_t)w->done);
			continue;
		}
		break; /* a short send: the rest goes in the next one */
	}
}

void iou__fail_writes(iou_stream *s, int err)
{
	while (s->wq_head)
		write_finish(s, err);
}

/* Pop the head write and run its callback with `res`. */
static void write_finish(iou_stream *s, ssize_t res)
{
	struct iou__write *w = s->wq_head;

	s->wq_head = w->next;
	if (!s->wq_head)
		s->wq_tail = NULL;
	s->wq_bytes -= w->len - w->done;
	if (w->kind == W_FORWARD) {
		if (w->bid != IOU__SEG_NONE) {
			iou__buf_recycle(s->loop, w->bid);
			s->loop->bufs.fwd_held--;
		}
		if (w->cb_stream)
			iou__forward_done(w->cb_stream, w, res);
	} else {
		if (w->cb)
			w->cb(s, res, w->ud);
	}
	iou__write_put(s->loop, w);
}

/* ---- the next send ------------------------------------------------------ */

void iou__stream_flush(iou_stream *s)
{
	if (s->wq_head && !(s->flags & IOU__S_SEND_ARMED))
		iou__start_send(s);
}

void iou__start_send(iou_stream *s)
{
	struct iou__write *w = s->wq_head;
	unsigned n = gather_writes(s);
	int ret;

	if (n > 1) {
		ret = iou__be_sendmsg(s->loop, &s->send_op, s->fd,
				      &s->gather->msg);
	} else {
		n = 1;
		if (w->len == 0) /* an empty drain: keeps the order */
			ret = iou__be_nop(s->loop, &s->send_op);
		else
			ret = iou__be_send(s->loop, &s->send_op, s->fd,
					   w->buf + w->done, w->len - w->done);
	}
	if (ret < 0) {
		iou__stream_poke(s); /* try again at the end of the turn */
		return;
	}
	s->send_n = (uint16_t)n;
	s->flags |= IOU__S_SEND_ARMED;
	s->inflight++;
	iou__op_submitted(s->loop);
}

/* Prepare the gathered iovecs for the queued writes; 0 if not worth it. */
static unsigned gather_writes(iou_stream *s)
{
	struct iou__gather *g = s->gather;
	struct iou__write *w;
	unsigned n = 0;

	if (!s->wq_head->next || !s->wq_head->len)
		return 0;
	if (!g) {
		size_t cap;

		g = s->gather = iou__blk_get(&s->loop->blocks, sizeof(*g), &cap);
		if (!g)
			return 0;
		g->cap = cap;
	}
	for (w = s->wq_head; w && w->len && n < IOU__GATHER_MAX; w = w->next) {
		g->iov[n].iov_base = (void *)(w->buf + w->done);
		g->iov[n].iov_len = w->len - w->done;
		n++;
	}
	memset(&g->msg, 0, sizeof(g->msg));
	g->msg.msg_iov = g->iov;
	g->msg.msg_iovlen = n;
	return n;
}

/* ---- write deadlines ---------------------------------------------------- */

/* The earliest write deadline, 0 if none.  A write past its deadline has
 * stalled: the send in flight is cancelled and every queued write fails
 * (writes complete in order, so the queue is timed out as a whole). */
uint64_t iou__writes_deadline_check(iou_stream *s)
{
	uint64_t next = 0;

	for (struct iou__write *w = s->wq_head; w; w = w->next) {
		if (!w->deadline)
			continue;
		if (w->deadline <= s->loop->now) {
			if (!s->wr_err)
				s->wr_err = -ETIMEDOUT;
			if (!(s->flags & IOU__S_SEND_ARMED))
				iou__fail_writes(s, s->wr_err);
			else if (iou__cancel_inflight_send(s) < 0)
				return s->loop->now + 1; /* no memory: again */
			return 0;
		}
		if (!next || w->deadline < next)
			next = w->deadline;
	}
	return next;
}

void iou__stream_cancel_writes(iou_stream *s, int err)
{
	bool flushing = s->flags & IOU__S_FLUSHING;

	if ((s->flags & IOU__S_CLOSING) || (!s->wq_head && !flushing))
		return;
	if (!s->wr_err)
		s->wr_err = err;
	/* A deadline that passed now, handled on a coming turn by the timer:
	 * the send in flight is cancelled (again, while that finds no
	 * memory), a graceful close closes at once.  Without memory for the
	 * timer, the writes end as they would have. */
	if (iou__stream_timer_reserve(s) < 0)
		return;
	if (flushing)
		s->close_deadline = s->loop->now;
	else
		s->wq_head->deadline = s->loop->now;
	iou__stream_timer_at(s, s->loop->now);
}

/* ---- onto the write queue ----------------------------------------------- */

int iou_write(iou_stream *s, const void *buf, size_t len, iou_write_cb cb,
	      void *ud)
{
	return queue_user_write(s, buf, len, cb, ud, W_SOME);
}

int iou_write_all(iou_stream *s, const void *buf, size_t len, iou_write_cb cb,
		  void *ud)
{
	return queue_user_write(s, buf, len, cb, ud, W_ALL);
}

static int queue_user_write(iou_stream *s, const void *buf, size_t len,
			    iou_write_cb cb, void *ud, uint8_t kind)
{
	struct iou__write *w;
	int ret;

	if (!s || !buf || !len || len > UINT32_MAX)
		return -EINVAL;
	ret = user_write_new(s, cb, ud, kind, &w);
	if (ret < 0)
		return ret;
	w->buf = buf;
	w->len = len;
	return iou__stream_queue_write(s, w);
}

int iou_feed(iou_stream *s, const void *data, size_t len)
{
	int ret;

	/* The fed bytes leave as one write, whose send takes a 32-bit
	 * length; the subtraction cannot wrap as a sum could. */
	if (!s || (!data && len) || len > UINT32_MAX - s->feed_len)
		return -EINVAL;
	ret = write_check(s);
	if (ret < 0)
		return ret;
	if (iou__blk_grow(&s->loop->blocks, &s->feed, &s->feed_cap, s->feed_len,
			  s->feed_len + len) < 0)
		return -ENOMEM;
	if (len)
		memcpy(s->feed + s->feed_len, data, len);
	s->feed_len += len;
	return 0;
}

size_t iou_fed(const iou_stream *s)
{
	return s ? s->feed_len : 0;
}

int iou_drain(iou_stream *s, iou_write_cb cb, void *ud)
{
	if (!s)
		return -EINVAL;
	return iou__queue_drain(s, cb, ud);
}

/* Queue the fed bytes (none: an empty write that keeps the order). */
int iou__queue_drain(iou_stream *s, iou_write_cb cb, void *ud)
{
	struct iou__write *w;
	int ret;

	ret = user_write_new(s, cb, ud, W_DRAIN, &w);
	if (ret < 0)
		return ret;
	if (s->feed_len) {
		w->owned = s->feed;
		w->owned_cap = s->feed_cap;
		w->buf = s->feed;
		w->len = s->feed_len;
		s->feed = NULL;
		s->feed_len = s->feed_cap = 0;
	}
	return iou__stream_queue_write(s, w);
}

/* A write record for the application, or an error (closed, out of
 * memory) with nothing changed. */
static int user_write_new(iou_stream *s, iou_write_cb cb, void *ud,
			  uint8_t kind, struct iou__write **out)
{
	struct iou__write *w;
	int ret = write_check(s);

	if (ret < 0)
		return ret;
	w = iou__write_get(s->loop);
	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->ud = ud;
	w->kind = kind;
	w->cb_stream = s;
	*out = w;
	return 0;
}

static int write_check(const iou_stream *s)
{
	if (s->flags & (IOU__S_CLOSING | IOU__S_WR_SHUT))
		return -IOU_ECLOSED;
	if ((s->flags & IOU__S_CONNECTING) || s->fd < 0)
		return -ENOTCONN; /* also: inside a failed connect's callback */
	return s->wr_err;
}

int iou__stream_queue_forward(iou_stream *to, const unsigned char *p,
			      size_t len, uint32_t bid, size_t copy_cap,
			      struct iou__write **out)
{
	struct iou__write *w = iou__write_get(to->loop);

	if (!w)
		return -ENOMEM;
	w->kind = W_FORWARD;
	w->buf = p;
	w->len = len;
	w->bid = bid;
	if (bid == IOU__SEG_NONE) { /* a copy from iou__blk_get */
		w->owned = (unsigned char *)p;
		w->owned_cap = copy_cap;
	}
	*out = w;
	wq_append(to, w);
	return 0;
}

/* Application writes start at the end of the turn, so that all the writes
 * of one turn leave in one sendmsg. */
int iou__stream_queue_write(iou_stream *s, struct iou__write *w)
{
	wq_append(s, w);
	if (!(s->flags & IOU__S_SEND_ARMED))
		iou__stream_poke(s);
	return 0;
}

static void wq_append(iou_stream *s, struct iou__write *w)
{
	w->next = NULL;
	if (s->wq_tail)
		s->wq_tail->next = w;
	else
		s->wq_head = w;
	s->wq_tail = w;
	s->wq_bytes += w->len - w->done;
	if (s->write_timeout_ms) {
		w->deadline = iou__clock_ms() + s->write_timeout_ms;
		iou__stream_timer_at(s, w->deadline);
	}
}

/* ---- write records ------------------------------------------------------ */

struct iou__write *iou__write_get(iou_loop *loop)
{
	struct iou__write *w = loop->free_writes;

	if (w) {
		loop->free_writes = w->next;
	} else {
		w = malloc(sizeof(*w));
		if (!w)
			return NULL;
		loop->n_writes++;
	}
	memset(w, 0, sizeof(*w));
	return w;
}

void iou__write_put(iou_loop *loop, struct iou__write *w)
{
	iou__blk_put(&loop->blocks, w->owned, w->owned_cap);
	w->next = loop->free_writes;
	loop->free_writes = w;
}
