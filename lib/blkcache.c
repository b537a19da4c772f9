/* SPDX-License-Identifier: MIT */
/* A few freed heap blocks kept per loop for the next stream that needs one.
 *
 * Fed bytes, the spill of bytes that span receive buffers, the gather list
 * of a multi-write sendmsg and a long read_until separator are needed only
 * while a request is in progress.  A stream gives its block back as soon as
 * it is empty, so an idle stream holds none of them, and the next request,
 * of this stream or another, takes it from here: no malloc/free per request
 * in the steady state. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blkcache.h"
#include "loop_int.h" /* in the fault build, malloc can fail */

/* Blocks above this size are freed, not kept, and so is a block that would
 * take the cache past the total: it stays small. */
#define IOU__BLK_KEEP_MAX (256 * 1024)
#define IOU__BLK_KEEP_TOTAL (1024 * 1024)

void *iou__blk_get(struct iou__blkcache *c, size_t want, size_t *cap)
{
	unsigned best = IOU__BLK_SLOTS;
	void *p;

	/* The smallest cached block that fits, and not much larger: a small
	 * request (a separator, a gather list) must not tie up a big block
	 * while its stream idles.  (No cached block is larger than
	 * IOU__BLK_KEEP_MAX: larger requests skip the scan, so 4 * want
	 * cannot wrap.) */
	for (unsigned i = 0; want <= IOU__BLK_KEEP_MAX && i < c->n; i++)
		if (c->cap[i] >= want && c->cap[i] <= 4 * want + 4096 &&
		    (best == IOU__BLK_SLOTS || c->cap[i] < c->cap[best]))
			best = i;
	if (best != IOU__BLK_SLOTS) {
		p = c->p[best];
		*cap = c->cap[best];
		c->bytes -= c->cap[best];
		c->n--;
		c->p[best] = c->p[c->n];
		c->cap[best] = c->cap[c->n];
		return p;
	}
	p = malloc(want);
	if (p)
		*cap = want;
	return p;
}

void iou__blk_put(struct iou__blkcache *c, void *p, size_t cap)
{
	if (!p)
		return;
	if (c->n == IOU__BLK_SLOTS || cap > IOU__BLK_KEEP_MAX ||
	    c->bytes + cap > IOU__BLK_KEEP_TOTAL) {
		free(p);
		return;
	}
	c->p[c->n] = p;
	c->cap[c->n] = cap;
	c->bytes += cap;
	c->n++;
}

int iou__blk_grow(struct iou__blkcache *c, unsigned char **p, size_t *cap,
		  size_t keep, size_t need)
{
	size_t want = *cap ? *cap : 256, got;
	unsigned char *q;

	if (need <= *cap)
		return 0;
	while (want < need) /* doubling, but never past SIZE_MAX */
		want = want > SIZE_MAX / 2 ? need : want * 2;
	q = iou__blk_get(c, want, &got);
	if (!q)
		return -ENOMEM;
	if (keep)
		memcpy(q, *p, keep);
	iou__blk_put(c, *p, *cap);
	*p = q;
	*cap = got;
	return 0;
}

void iou__blk_cache_free(struct iou__blkcache *c)
{
	while (c->n)
		free(c->p[--c->n]);
	c->bytes = 0;
}
