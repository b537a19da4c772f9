/* SPDX-License-Identifier: MIT */
/* The pure buffer core of a stream's receive side: no ring, no loop, no
 * stream.  Included by loop_int.h; tests and fuzzers may include it alone.
 *
 * Received bytes sit in numbered, fixed-size pool buffers (the loop's
 * provided buffers).  A receive queue holds [spill][head .. tail]: the spill
 * is a private copy, made only when a read needs bytes that span buffers or
 * when buffers must go back to the pool early; otherwise readers get
 * pointers straight into the pool buffers. */
#ifndef IOU_RXQ_H
#define IOU_RXQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "blkcache.h"

/* ---- the pool of receive buffers ---------------------------------------- */

/* A pool buffer's place in a queue, indexed by buffer id: a buffer is in
 * at most one queue at a time, so the table needs no allocation per
 * receive. */
struct iou__seg {
	uint32_t next;  /* next buffer id in the queue, or IOU__SEG_NONE */
	uint32_t off;   /* first unconsumed byte */
	uint32_t len;   /* end of the received bytes */
};

#define IOU__SEG_NONE UINT32_MAX

struct iou__pool {
	unsigned char *base;        /* buffer bid: base + bid * buf_size */
	uint32_t buf_size;
	struct iou__seg *segs;      /* one per buffer id */
	struct iou__blkcache *blocks; /* where spills come from */
	/* A buffer's bytes were consumed or copied out: the owner takes it. */
	void (*give_back)(struct iou__pool *pool, uint32_t bid);
};

static inline unsigned char *iou__pool_addr(const struct iou__pool *pool,
					    uint32_t bid)
{
	return pool->base + (size_t)bid * pool->buf_size;
}

/* ---- the receive queue (rxq.c) ------------------------------------------ */

struct iou__rxq {
	uint32_t head, tail;        /* pool buffers, or IOU__SEG_NONE */
	size_t seg_bytes;           /* unconsumed bytes in them */
	unsigned char *spill;       /* a block of spill_cap bytes, or NULL */
	size_t spill_off, spill_len, spill_cap;
};

void iou__rxq_init(struct iou__rxq *q);

static inline size_t iou__rxq_len(const struct iou__rxq *q)
{
	return q->spill_len + q->seg_bytes;
}

/* Queue `len` received bytes at the start of pool buffer `bid`. */
void iou__rxq_push(struct iou__pool *pool, struct iou__rxq *q, uint32_t bid,
		   uint32_t len);
/* The first bytes that are contiguous already (p NULL, len 0 if empty). */
void iou__rxq_first(const struct iou__pool *pool, const struct iou__rxq *q,
		    const unsigned char **p, size_t *len);
/* The first n (<= iou__rxq_len) bytes as one run, copying into the spill
 * only when they span buffers.  NULL when out of memory. */
const unsigned char *iou__rxq_contiguous(struct iou__pool *pool,
					 struct iou__rxq *q, size_t n);
/* Drop the first n (<= iou__rxq_len) bytes; emptied buffers go back. */
void iou__rxq_consume(struct iou__pool *pool, struct iou__rxq *q, size_t n);
/* Search the first `limit` bytes for sep.  Returns the length up to and
 * including the first match, 0 if there is none (yet), or -ENOMEM (nothing
 * lost).  *scan_pos (0 at the first call) keeps how far no match can start,
 * so that calls as bytes arrive search each byte about once. */
ssize_t iou__rxq_find(struct iou__pool *pool, struct iou__rxq *q,
		      const unsigned char *sep, size_t seplen, size_t limit,
		      size_t *scan_pos);
/* Whether the first len bytes are exactly the rest of the head buffer. */
bool iou__rxq_head_is(const struct iou__pool *pool, const struct iou__rxq *q,
		      size_t len);
/* Unlink the head buffer without giving it back: the caller now owns it. */
uint32_t iou__rxq_detach_head(struct iou__pool *pool, struct iou__rxq *q);
/* Unlink the spill when it holds exactly the first len bytes: the caller
 * now owns its block (returned, of *cap bytes; the bytes stay where
 * iou__rxq_first() showed them).  NULL (nothing changed) otherwise. */
unsigned char *iou__rxq_detach_spill(struct iou__rxq *q, size_t len,
				     size_t *cap);
/* Copy every buffer's bytes into the spill and give the buffers back (as
 * many as memory allows).  Returns 0 or -ENOMEM. */
int iou__rxq_spill_all(struct iou__pool *pool, struct iou__rxq *q);
/* Give every buffer back and free the spill: the queue is empty. */
void iou__rxq_clear(struct iou__pool *pool, struct iou__rxq *q);

#endif /* IOU_RXQ_H */
