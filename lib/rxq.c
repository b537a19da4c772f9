/* SPDX-License-Identifier: MIT */
/* The receive queue: received pool buffers in order, and the spill that
 * makes bytes spanning buffers contiguous (rxq.h).  Pure: it knows nothing
 * of rings or streams, so Check tests and a fuzzer drive it directly. */
#include <errno.h>
#include <string.h>

#include "rxq.h"

void iou__rxq_init(struct iou__rxq *q)
{
	memset(q, 0, sizeof(*q));
	q->head = q->tail = IOU__SEG_NONE;
}

void iou__rxq_push(struct iou__pool *pool, struct iou__rxq *q, uint32_t bid,
		   uint32_t len)
{
	struct iou__seg *g = &pool->segs[bid];

	g->next = IOU__SEG_NONE;
	g->off = 0;
	g->len = len;
	if (q->tail == IOU__SEG_NONE)
		q->head = bid;
	else
		pool->segs[q->tail].next = bid;
	q->tail = bid;
	q->seg_bytes += len;
}

uint32_t iou__rxq_detach_head(struct iou__pool *pool, struct iou__rxq *q)
{
	uint32_t bid = q->head;
	const struct iou__seg *g = &pool->segs[bid];

	q->seg_bytes -= g->len - g->off;
	q->head = g->next;
	if (q->head == IOU__SEG_NONE)
		q->tail = IOU__SEG_NONE;
	return bid;
}

unsigned char *iou__rxq_detach_spill(struct iou__rxq *q, size_t len,
				     size_t *cap)
{
	unsigned char *blk = q->spill;

	if (!len || len != q->spill_len)
		return NULL;
	*cap = q->spill_cap;
	q->spill = NULL;
	q->spill_off = q->spill_len = q->spill_cap = 0;
	return blk;
}

void iou__rxq_first(const struct iou__pool *pool, const struct iou__rxq *q,
		    const unsigned char **p, size_t *len)
{
	if (q->spill_len) {
		*p = q->spill + q->spill_off;
		*len = q->spill_len;
	} else if (q->head != IOU__SEG_NONE) {
		const struct iou__seg *g = &pool->segs[q->head];

		*p = iou__pool_addr(pool, q->head) + g->off;
		*len = g->len - g->off;
	} else {
		*p = NULL;
		*len = 0;
	}
}

bool iou__rxq_head_is(const struct iou__pool *pool, const struct iou__rxq *q,
		      size_t len)
{
	const struct iou__seg *g;

	if (q->spill_len || q->head == IOU__SEG_NONE)
		return false;
	g = &pool->segs[q->head];
	return len == g->len - g->off;
}

static int spill_reserve(struct iou__pool *pool, struct iou__rxq *q,
			 size_t extra)
{
	size_t need = q->spill_len + extra;

	if (q->spill_off + need <= q->spill_cap)
		return 0;
	if (q->spill_off) {
		memmove(q->spill, q->spill + q->spill_off, q->spill_len);
		q->spill_off = 0;
		if (need <= q->spill_cap)
			return 0;
	}
	return iou__blk_grow(pool->blocks, &q->spill, &q->spill_cap,
			     q->spill_off + q->spill_len, q->spill_off + need);
}

/* Copy the head buffer's bytes to the end of the spill and give it back. */
static int spill_head(struct iou__pool *pool, struct iou__rxq *q)
{
	const struct iou__seg *g = &pool->segs[q->head];
	size_t len = g->len - g->off;

	if (spill_reserve(pool, q, len) < 0)
		return -ENOMEM;
	memcpy(q->spill + q->spill_off + q->spill_len,
	       iou__pool_addr(pool, q->head) + g->off, len);
	q->spill_len += len;
	pool->give_back(pool, iou__rxq_detach_head(pool, q));
	return 0;
}

int iou__rxq_spill_all(struct iou__pool *pool, struct iou__rxq *q)
{
	while (q->head != IOU__SEG_NONE)
		if (spill_head(pool, q) < 0)
			return -ENOMEM;
	return 0;
}

const unsigned char *iou__rxq_contiguous(struct iou__pool *pool,
					 struct iou__rxq *q, size_t n)
{
	const unsigned char *p;
	size_t len;

	iou__rxq_first(pool, q, &p, &len);
	while (len < n) {
		if (spill_head(pool, q) < 0)
			return NULL;
		iou__rxq_first(pool, q, &p, &len);
	}
	return p;
}

/* An empty spill goes back to the cache: an idle queue holds no memory. */
static void spill_drop(struct iou__pool *pool, struct iou__rxq *q)
{
	iou__blk_put(pool->blocks, q->spill, q->spill_cap);
	q->spill = NULL;
	q->spill_off = q->spill_len = q->spill_cap = 0;
}

void iou__rxq_consume(struct iou__pool *pool, struct iou__rxq *q, size_t n)
{
	size_t k = n < q->spill_len ? n : q->spill_len;

	q->spill_off += k;
	q->spill_len -= k;
	if (!q->spill_len)
		spill_drop(pool, q);
	n -= k;
	while (n) {
		struct iou__seg *g = &pool->segs[q->head];
		size_t avail = g->len - g->off;

		if (avail > n) {
			g->off += (uint32_t)n;
			q->seg_bytes -= n;
			break;
		}
		n -= avail;
		pool->give_back(pool, iou__rxq_detach_head(pool, q));
	}
}

/* Gathers buffers into the spill only when the first one does not hold the
 * answer. */
ssize_t iou__rxq_find(struct iou__pool *pool, struct iou__rxq *q,
		      const unsigned char *sep, size_t seplen, size_t limit,
		      size_t *scan_pos)
{
	for (;;) {
		const unsigned char *p, *hit;
		size_t len, span;

		iou__rxq_first(pool, q, &p, &len);
		span = len < limit ? len : limit;
		if (span >= *scan_pos + seplen) {
			hit = memmem(p + *scan_pos, span - *scan_pos, sep, seplen);
			if (hit)
				return (ssize_t)((size_t)(hit - p) + seplen);
			*scan_pos = span - seplen + 1;
		}
		if (len >= limit || len == iou__rxq_len(q))
			return 0;
		if (spill_head(pool, q) < 0)
			return -ENOMEM;
	}
}

void iou__rxq_clear(struct iou__pool *pool, struct iou__rxq *q)
{
	while (q->head != IOU__SEG_NONE)
		pool->give_back(pool, iou__rxq_detach_head(pool, q));
	spill_drop(pool, q);
}
