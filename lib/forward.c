/* SPDX-License-Identifier: MIT */
/* Forwarding: the one place that knows both sides of streams.  A forward is
 * a pending read of `from` (receive.c serves it) whose bytes, a whole pool
 * buffer or a copy, are queued on the write queue of `to` (send side); the
 * last piece's send completion ends the forward.
 *
 * Read top to bottom, as receive.c and send.c: the bytes that came in are
 * queued on the target (iou__forward_progress, forward_piece), the last
 * piece's send completion runs the forward's callback (iou__forward_done);
 * then a closing target's forwards fail, and last the way in,
 * iou_forward(). */
#include <errno.h>
#include <string.h>

#include "internal.h"

static int forward_piece(iou_stream *s, iou_stream *to, size_t max,
			 struct iou__write **w, size_t *len);

/* Hand every buffered byte (up to read_n) to `to` at once, so that its
 * writer sends them with one sendmsg; the last piece carries the callback. */
void iou__forward_progress(iou_stream *s)
{
	iou_stream *to = s->fwd_to;
	struct iou__write *w, *last = NULL;
	size_t total = 0, len;
	int ret = 0;

	if (to->flags & (IOU__S_CLOSING | IOU__S_WR_SHUT)) {
		iou__read_fail(s, -IOU_ECLOSED);
		return;
	}
	if (to->wr_err) {
		iou__read_fail(s, to->wr_err);
		return;
	}
	for (int i = 0; i < IOU__GATHER_MAX && total < s->read_n &&
			iou__rxq_len(&s->rxq);
	     i++) {
		ret = forward_piece(s, to, s->read_n - total, &w, &len);
		if (ret < 0)
			break;
		total += len;
		last = w;
	}
	if (!last) {
		iou__read_fail(s, ret);
		return;
	}
	last->cb_stream = s;
	s->fwd_total = total;
	s->read_kind = IOU__RD_FORWARDING;
	s->fwd_req = last;
	iou__stream_flush(to);
	iou__recv_resume(s);
}

/* Queue the first bytes (at most max) on `to`: a whole received buffer is
 * handed over as it is while forwards hold fewer than their budget of pool
 * buffers; spilled bytes, part of a buffer, or any past the budget are
 * copied (a target whose peer stops reading keeps what it was given, and
 * must not keep the pool from every other stream). */
static int forward_piece(iou_stream *s, iou_stream *to, size_t max,
			 struct iou__write **w, size_t *len)
{
	struct iou__bufring *b = &s->loop->bufs;
	const unsigned char *p;
	int ret;

	/* Queue the write before taking the bytes out of the stream: if that
	 * fails (no memory for the record), the bytes stay where they were
	 * instead of being lost from the middle of the stream. */
	iou__rxq_first(&s->loop->pool, &s->rxq, &p, len);
	if (*len > max)
		*len = max;
	if (b->fwd_held < b->fwd_max &&
	    iou__rxq_head_is(&s->loop->pool, &s->rxq, *len)) {
		ret = iou__stream_queue_forward(to, p, *len, s->rxq.head, 0, w);
		if (ret == 0) {
			iou__rxq_detach_head(&s->loop->pool, &s->rxq);
			b->fwd_held++;
		}
	} else {
		size_t cap;
		unsigned char *copy = iou__blk_get(&s->loop->blocks, *len, &cap);

		if (!copy)
			return -ENOMEM;
		memcpy(copy, p, *len);
		ret = iou__stream_queue_forward(to, copy, *len, IOU__SEG_NONE,
						cap, w);
		if (ret == 0)
			iou__rxq_consume(&s->loop->pool, &s->rxq, *len);
		else
			iou__blk_put(&s->loop->blocks, copy, cap);
	}
	return ret;
}

void iou__forward_done(iou_stream *from, struct iou__write *w, ssize_t res)
{
	iou_write_cb cb = from->fwd_cb;
	void *ud = from->read_ud;

	(void)w;
	iou__read_clear(from);
	cb(from, res < 0 ? res : (ssize_t)from->fwd_total, ud);
}

/* A forward keeps a pointer to its target, so the target must not be freed
 * under it: a closing target fails the forwards still waiting for bytes.
 * Rescan from the head after each callback, which may change the list. */
void iou__forward_sources_fail(iou_stream *to, int err)
{
	for (;;) {
		struct iou__list *n;
		iou_stream *from = NULL;

		for (n = to->fwd_sources.next; n != &to->fwd_sources; n = n->next) {
			iou_stream *f = IOU__CONTAINER_OF(n, iou_stream, fwd_link);

			if (f->read_kind == IOU__RD_FORWARD) {
				from = f;
				break;
			}
		}
		if (!from)
			return;
		iou__read_fail(from, err);
	}
}

int iou_forward(iou_stream *from, iou_stream *to, size_t max, iou_write_cb cb,
		void *ud)
{
	int ret;

	if (!from || !to || !cb || !max || from->loop != to->loop)
		return -EINVAL;
	if (to->flags & (IOU__S_CLOSING | IOU__S_WR_SHUT))
		return -IOU_ECLOSED;
	if ((to->flags & IOU__S_CONNECTING) || to->fd < 0)
		return -ENOTCONN;
	if (from->read_kind != IOU__RD_NONE)
		return -EBUSY;
	ret = iou__read_start(from, IOU__RD_FORWARD, max, NULL, ud);
	if (ret == 0) {
		from->fwd_cb = cb;
		from->fwd_to = to;
		from->fwd_req = NULL;
		iou__list_add_tail(&to->fwd_sources, &from->fwd_link);
	}
	return ret;
}
