/* SPDX-License-Identifier: MIT */
/* The loop's provided-buffer ring: every stream receives into it.  Buffers
 * go back to the ring as soon as their bytes are consumed; returns are
 * batched and published to the kernel once per turn.
 *
 * The kernel takes buffers in ring order, so every buffer in circulation
 * gets touched, however light the load: only the first few of the pool
 * circulate at first, and more join when receives find the ring empty
 * (-ENOBUFS, at most log2(count / START_LIVE) times per loop).  The pool's
 * pages so follow the peak load, not the configured size. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define BGID 0
/* Buffers in circulation at first: a few connections' worth. */
#define START_LIVE 16

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) & ~(page - 1);
}

static void give_back(struct iou__pool *pool, uint32_t bid)
{
	iou__buf_recycle(IOU__CONTAINER_OF(pool, iou_loop, pool), bid);
}

/* Put buffer bid in the next free ring slot (published at the end of the
 * turn).  A bundle receive names only its first buffer; the others follow
 * it in ring order, so remember where each buffer went and which buffer
 * each slot got, in memory of our own: the ring is shared with the kernel
 * and we never read it back. */
static void ring_add(iou_loop *loop, unsigned bid)
{
	struct iou__bufring *b = &loop->bufs;
	uint16_t slot = (uint16_t)(b->br->tail + b->pending);

	b->pos[bid] = slot;
	b->slot_bid[slot & b->mask] = (uint16_t)bid;
	io_uring_buf_ring_add(b->br, iou__buf_addr(loop, bid),
			      loop->pool.buf_size, (unsigned short)bid,
			      (int)b->mask, (int)b->pending);
	b->pending++;
}

int iou__bufring_setup(iou_loop *loop, unsigned size, unsigned count)
{
	struct iou__bufring *b = &loop->bufs;
	struct iou__pool *pool = &loop->pool;
	struct io_uring_buf_reg reg = { 0 };
	size_t data_bytes = page_round((size_t)size * count);
	int ret;

	pool->buf_size = size;
	pool->blocks = &loop->blocks;
	pool->give_back = give_back;
	b->buf_count = count;
	b->live = count < START_LIVE ? count : START_LIVE;
	/* A quarter of the pool for forwards' buffers: forwards through
	 * peers that stopped reading can take no more, and a healthy forward
	 * holds its buffers for one send each (with the defaults 256 buffers,
	 * 4 MiB, in flight), so it stays zero copy. */
	b->fwd_max = count / 4 ? count / 4 : 1;
	b->mask = (unsigned)io_uring_buf_ring_mask(count);
	b->bgid = BGID;
	b->br_bytes = page_round(count * sizeof(struct io_uring_buf));
	b->br = mmap(NULL, b->br_bytes, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->br == MAP_FAILED) {
		b->br = NULL;
		return -ENOMEM;
	}
	pool->base = mmap(NULL, data_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool->base == MAP_FAILED) {
		pool->base = NULL;
		ret = -ENOMEM;
		goto err;
	}
	pool->segs = calloc(count, sizeof(*pool->segs));
	b->pos = calloc(count, sizeof(*b->pos));
	b->slot_bid = calloc(count, sizeof(*b->slot_bid));
	if (!pool->segs || !b->pos || !b->slot_bid) {
		ret = -ENOMEM;
		goto err;
	}
	reg.ring_addr = (unsigned long)(uintptr_t)b->br;
	reg.ring_entries = count;
	reg.bgid = BGID;
	ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
	if (ret < 0) {
		/* Buffer rings came with 5.19; -EINVAL means a kernel without. */
		if (ret == -EINVAL)
			ret = -IOU_ENOFEATURE;
		goto err;
	}
	io_uring_buf_ring_init(b->br);
	for (unsigned bid = 0; bid < b->live; bid++)
		ring_add(loop, bid);
	iou__bufring_publish(loop);
	return 0;
err:
	iou__bufring_teardown(loop);
	return ret;
}

void iou__bufring_teardown(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	struct iou__pool *pool = &loop->pool;

	/* Called after io_uring_queue_exit() or on a failed set-up: the kernel
	 * holds no reference to the memory any more. */
	if (pool->base)
		munmap(pool->base,
		       page_round((size_t)pool->buf_size * b->buf_count));
	if (b->br)
		munmap(b->br, b->br_bytes);
	free(pool->segs);
	free(b->pos);
	free(b->slot_bid);
	pool->segs = NULL;
	b->pos = NULL;
	b->slot_bid = NULL;
	pool->base = NULL;
	b->br = NULL;
}

void iou__buf_recycle(iou_loop *loop, unsigned bid)
{
	ring_add(loop, bid);
	loop->bufs.out--;
}

/* Doubling: a burst that needs the whole pool gets it after a few empty
 * receives, and a light load never touches the rest. */
bool iou__bufring_grow(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	unsigned to = b->live * 2 < b->buf_count ? b->live * 2 : b->buf_count;

	if (b->live == b->buf_count)
		return false;
	while (b->live < to)
		ring_add(loop, b->live++);
	return true;
}

void iou__bufring_publish(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;

	if (b->pending) {
		io_uring_buf_ring_advance(b->br, (int)b->pending);
		b->pending = 0;
	}
}
