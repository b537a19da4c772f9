/* SPDX-License-Identifier: MIT */
/* The per-loop cache of freed heap blocks (blkcache.c): pure, no loop, no
 * stream.  Included by rxq.h; the receive queue's spill comes from here. */
#ifndef IOU_BLKCACHE_H
#define IOU_BLKCACHE_H

#include <stddef.h>

/* Enough for a stream's pipelined requests in flight (a forwarded copy
 * each) plus the blocks of a few more streams. */
#define IOU__BLK_SLOTS 32

struct iou__blkcache {
	void *p[IOU__BLK_SLOTS];
	size_t cap[IOU__BLK_SLOTS];
	unsigned n;
	size_t bytes;       /* sum of cap[0..n) */
};

/* A block of at least `want` bytes, its size in *cap; NULL if out of memory. */
void *iou__blk_get(struct iou__blkcache *c, size_t want, size_t *cap);
/* Give back a block from iou__blk_get (NULL is fine). */
void iou__blk_put(struct iou__blkcache *c, void *p, size_t cap);
/* Make *p (a block of *cap bytes, or NULL) hold at least `need` bytes,
 * keeping its first `keep`; sizes double from 256 (or are `need` where
 * doubling would pass SIZE_MAX).  0 or -ENOMEM (then nothing changed). */
int iou__blk_grow(struct iou__blkcache *c, unsigned char **p, size_t *cap,
		  size_t keep, size_t need);
void iou__blk_cache_free(struct iou__blkcache *c);

#endif /* IOU_BLKCACHE_H */
