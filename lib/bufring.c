/* SPDX-License-Identifier: MIT */
/* The loop's provided-buffer ring: every stream receives into it.  Buffers
 * go back to the ring as soon as their bytes are consumed; returns are
 * batched and published to the kernel once per turn.
 *
 * The kernel takes buffers in ring order, so every buffer in circulation
 * gets touched, however light the load: only the first few of the pool
 * circulate at first, and their number doubles when receives find the
 * ring empty (-ENOBUFS).  Once a period, when the turns of the last one
 * needed far fewer buffers than circulate, returned buffers go to the idle
 * stack instead of the ring until enough left, and the pages of buffers
 * that left are given back to the kernel (madvise).  The pool's resident
 * memory so follows the load, not the configured size, and the hot path
 * makes no system call for it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "uring.h"

#define BGID 0
/* Buffers in circulation at first: a few connections' worth.  With 16,
 * iou-echo on one connection used about 5% more CPU per request than with
 * 64 or the whole pool (pinned A/B runs); with 64 no cost was measurable. */
#define START_LIVE 64
/* A load must stay low this long before buffers leave circulation. */
#define QUIET_MS 10000

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
	b->live_min = b->live;
	b->live_max = count;
	b->quiet_ms = QUIET_MS;
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
	b->idle = calloc(count, sizeof(*b->idle));
	if (!pool->segs || !b->pos || !b->slot_bid || !b->idle) {
		ret = -ENOMEM;
		goto err;
	}
	reg.ring_addr = (unsigned long)(uintptr_t)b->br;
	reg.ring_entries = count;
	reg.bgid = BGID;
	/* On epoll the ring is ours alone: epoll.c takes buffers from it as
	 * the kernel would. */
	ret = loop->backend == IOU_BACKEND_EPOLL ? 0 :
		io_uring_register_buf_ring(&iou__uring(loop)->ring, &reg, 0);
	if (ret < 0) {
		/* Buffer rings came with 5.19; -EINVAL means a kernel without. */
		if (ret == -EINVAL)
			ret = -IOU_ENOFEATURE;
		goto err;
	}
	io_uring_buf_ring_init(b->br);
	for (unsigned bid = 0; bid < b->live; bid++)
		ring_add(loop, bid);
	/* the lowest ids on top: the pool's pages fill from its start */
	for (unsigned bid = count; bid-- > b->live;)
		b->idle[b->nidle++] = (uint16_t)bid;
	b->idle_clean = b->nidle;
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
	free(b->idle);
	pool->segs = NULL;
	b->pos = NULL;
	b->slot_bid = NULL;
	b->idle = NULL;
	pool->base = NULL;
	b->br = NULL;
}

void iou__buf_recycle(iou_loop *loop, unsigned bid)
{
	struct iou__bufring *b = &loop->bufs;

	b->out--;
	if (b->live > b->live_max) {
		/* shrinking: the buffer leaves circulation */
		b->idle[b->nidle++] = (uint16_t)bid;
		b->live--;
		return;
	}
	ring_add(loop, bid);
}

/* Doubling: a burst that needs the whole pool gets it after a few empty
 * receives, and a light load never touches the rest.  The buffers used
 * last come back first: their pages are likely still there. */
bool iou__bufring_grow(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	unsigned n = b->live < b->nidle ? b->live : b->nidle;

	b->live_max = b->buf_count;
	if (!n)
		return false;
	b->live += n;
	while (n--)
		ring_add(loop, b->idle[--b->nidle]);
	if (b->idle_clean > b->nidle)
		b->idle_clean = b->nidle;
	return true;
}

static int bid_cmp(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* Give the pages of the buffers that left circulation since the last
 * period back to the kernel: one madvise per run of adjacent buffers, whole
 * pages only (a page may hold parts of two buffers). */
static void release_idle(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	uint16_t *d = b->idle + b->idle_clean;
	unsigned n = b->nidle - b->idle_clean;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);

	qsort(d, n, sizeof(*d), bid_cmp);
	for (unsigned i = 0, j; i < n; i = j) {
		uintptr_t lo = (uintptr_t)iou__buf_addr(loop, d[i]), hi;

		for (j = i + 1; j < n && d[j] == d[j - 1] + 1; j++)
			;
		hi = lo + (uintptr_t)(j - i) * loop->pool.buf_size;
		lo = (lo + page - 1) & ~(page - 1);
		hi &= ~(page - 1);
		if (hi > lo)
			madvise((void *)lo, hi - lo, MADV_DONTNEED);
	}
	b->idle_clean = b->nidle;
}

/* Once a period: if no turn of it needed more than a quarter of the
 * buffers in circulation, let all but twice the peak leave as they come
 * back (growing again costs one -ENOBUFS per doubling). */
static void period_end(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	unsigned want = 2 * b->peak;

	if (want < b->live_min)
		want = b->live_min;
	b->live_max = want * 2 <= b->live ? want : b->buf_count;
	release_idle(loop);
	b->peak = 0;
	b->period_end = loop->now + b->quiet_ms;
}

/* Once per turn, before the wait: the buffers the last turn needed are the
 * ones out when it began plus the ones its receives filled. */
void iou__bufring_publish(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	unsigned need = b->out_mark + b->taken;

	if (need > b->peak)
		b->peak = need;
	b->taken = 0;
	b->out_mark = b->out;
	if (loop->now >= b->period_end)
		period_end(loop);
	if (b->pending) {
		io_uring_buf_ring_advance(b->br, (int)b->pending);
		b->pending = 0;
	}
}
