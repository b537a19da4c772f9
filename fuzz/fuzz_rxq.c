/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the pure buffer core, lib/rxq.c: a receive queue of
 * pool buffers and its spill, with no ring, loop or stream around it.
 *
 * The input chooses a pool (buffer size 1-32, 1-16 buffers), then a series
 * of operations: push a buffer of received bytes (random segmentation of
 * random data), look at the first chunk, ask for the first n bytes as one
 * run, consume, search for a separator (also again after more bytes came,
 * as read_until does), hand the head buffer over whole (as a forward does),
 * spill everything, clear; and memory runs out for the next allocations
 * (the block cache is replaced here by one that fails on demand and moves
 * every block it grows).  A reference model (the flat array of queued
 * bytes) predicts every answer; after a failed allocation the queue must
 * still hold exactly the model's bytes.  Checked after every step: the bytes, the length, each pool
 * buffer is either free or in the queue exactly once, buffers given back
 * are not touched again (ASan poisoning), and at the end nothing leaks.
 * Any difference: abort().
 */
#include <errno.h>
#include <string.h>

#define FUZZ_NAME "fuzz_rxq"
#include "fuzz.h"
#include "rxq.h"

#define MAX_BUFS 16
#define MAX_OPS 2000

enum { B_FREE, B_QUEUED };

static struct iou__pool pool;
static struct iou__blkcache blocks;
static struct iou__rxq q;
static uint8_t state[MAX_BUFS];
static unsigned count;

/* the model: every queued byte, in order */
static unsigned char *model;
static size_t mlen, mcap;

/* a read_until in progress: its separator, limit and scan position */
static struct {
	unsigned char sep[4];
	size_t seplen, limit, scan_pos;
	int active;
} find;

/* ---- the block cache, replaced: exact sizes, failures on demand ---------- */

static int fail_allocs;  /* the next this many allocations fail */
static int alloc_failed; /* one did, in the current operation */

static int alloc_fails(void)
{
	if (!fail_allocs)
		return 0;
	fail_allocs--;
	alloc_failed = 1;
	return 1;
}

void *iou__blk_get(struct iou__blkcache *c, size_t want, size_t *cap)
{
	void *p;

	(void)c;
	if (alloc_fails())
		return NULL;
	p = malloc(want);
	CHECK(p, "out of memory");
	*cap = want;
	return p;
}

void iou__blk_put(struct iou__blkcache *c, void *p, size_t cap)
{
	(void)c;
	(void)cap;
	free(p);
}

/* realloc: the block moves whenever it grows, so a stale pointer into the
 * old one is an ASan report. */
int iou__blk_grow(struct iou__blkcache *c, unsigned char **p, size_t *cap,
		  size_t keep, size_t need)
{
	unsigned char *n;

	(void)c;
	(void)keep;
	if (need <= *cap)
		return 0;
	if (alloc_fails())
		return -ENOMEM;
	n = malloc(need);
	CHECK(n, "out of memory");
	if (*p)
		memcpy(n, *p, keep);
	free(*p);
	*p = n;
	*cap = need;
	return 0;
}

void iou__blk_cache_free(struct iou__blkcache *c)
{
	(void)c;
}

/* ---- the pool ----------------------------------------------------------- */

static void give_back(struct iou__pool *p, uint32_t bid)
{
	CHECK(p == &pool, "give_back: wrong pool");
	CHECK(bid < count, "give_back: bad buffer id %u", bid);
	CHECK(state[bid] == B_QUEUED, "buffer %u given back twice", bid);
	state[bid] = B_FREE;
	ASAN_POISON_MEMORY_REGION(iou__pool_addr(&pool, bid), pool.buf_size);
}

static void model_drop(size_t n)
{
	if (n)
		memmove(model, model + n, mlen - n);
	mlen -= n;
	find.active = 0; /* a read that consumes bytes is over */
}

static void check_queue(void)
{
	size_t bytes = 0;
	unsigned queued = 0, held = 0;
	const unsigned char *p;
	size_t len;

	for (unsigned i = 0; i < count; i++)
		held += state[i] == B_QUEUED;
	/* every byte, in order: the spill, then each buffer */
	CHECK(q.spill_len <= mlen &&
		      (!q.spill_len ||
		       memcmp(q.spill + q.spill_off, model, q.spill_len) == 0),
	      "spilled bytes differ");
	for (uint32_t bid = q.head; bid != IOU__SEG_NONE;
	     bid = pool.segs[bid].next) {
		const struct iou__seg *g = &pool.segs[bid];
		size_t at = q.spill_len + bytes;

		CHECK(bid < count, "bad buffer id %u in the queue", bid);
		CHECK(state[bid] == B_QUEUED, "free buffer %u in the queue", bid);
		CHECK(++queued <= held, "the queue has a cycle");
		CHECK(g->off < g->len && g->len <= pool.buf_size,
		      "buffer %u: off %u len %u", bid, g->off, g->len);
		if (g->next == IOU__SEG_NONE)
			CHECK(q.tail == bid, "bad tail");
		CHECK(at + g->len - g->off <= mlen &&
			      memcmp(iou__pool_addr(&pool, bid) + g->off,
				     model + at, g->len - g->off) == 0,
		      "bytes of buffer %u differ", bid);
		bytes += g->len - g->off;
	}
	CHECK(queued == held, "%u buffers queued, %u held", queued, held);
	CHECK(q.head != IOU__SEG_NONE || q.tail == IOU__SEG_NONE, "stale tail");
	CHECK(bytes == q.seg_bytes, "seg_bytes %zu, counted %zu", q.seg_bytes,
	      bytes);
	CHECK(iou__rxq_len(&q) == mlen, "length %zu, model %zu",
	      iou__rxq_len(&q), mlen);
	iou__rxq_first(&pool, &q, &p, &len);
	CHECK(len <= mlen && (len > 0) == (mlen > 0), "first chunk %zu of %zu",
	      len, mlen);
	CHECK(!len || memcmp(p, model, len) == 0, "first chunk differs");
}

static void op_push(void)
{
	unsigned start = u8(), bid = MAX_BUFS;
	uint32_t len = 1 + u8() % pool.buf_size;
	unsigned char *b;

	for (unsigned i = 0; i < count; i++)
		if (state[(start + i) % count] == B_FREE) {
			bid = (start + i) % count;
			break;
		}
	if (bid == MAX_BUFS)
		return;
	b = iou__pool_addr(&pool, bid);
	ASAN_UNPOISON_MEMORY_REGION(b, pool.buf_size);
	/* a small alphabet, so that separators are found */
	for (uint32_t i = 0; i < len; i++)
		b[i] = (unsigned char)"ab\r\n"[u8() % 4];
	state[bid] = B_QUEUED;
	iou__rxq_push(&pool, &q, bid, len);
	if (mlen + len > mcap) {
		mcap = (mlen + len) * 2;
		model = realloc(model, mcap);
		CHECK(model, "out of memory");
	}
	memcpy(model + mlen, b, len);
	mlen += len;
}

static void op_contiguous(void)
{
	size_t n;
	const unsigned char *p;

	if (!mlen)
		return;
	n = 1 + u16() % mlen;
	p = iou__rxq_contiguous(&pool, &q, n);
	CHECK(p || alloc_failed, "contiguous(%zu) failed", n);
	CHECK(!p || memcmp(p, model, n) == 0, "contiguous(%zu): bytes differ",
	      n);
}

static void op_consume(void)
{
	size_t n = mlen ? u16() % (mlen + 1) : 0;

	iou__rxq_consume(&pool, &q, n);
	model_drop(n);
}

static size_t model_find(void)
{
	size_t span = mlen < find.limit ? mlen : find.limit;

	for (size_t i = 0; i + find.seplen <= span; i++)
		if (memcmp(model + i, find.sep, find.seplen) == 0)
			return i + find.seplen;
	return 0;
}

/* A new read_until, or (if one is active) the same one again after more
 * bytes came: its scan position carries over. */
static void op_find(int again)
{
	ssize_t found;
	size_t got, want;

	if (!again || !find.active) {
		find.seplen = 1 + u8() % 4;
		for (size_t i = 0; i < find.seplen; i++)
			find.sep[i] = (unsigned char)"ab\r\n"[u8() % 4];
		find.limit = find.seplen + u8() % 64;
		find.scan_pos = 0;
		find.active = 1;
	}
	found = iou__rxq_find(&pool, &q, find.sep, find.seplen, find.limit,
			      &find.scan_pos);
	CHECK(found >= 0 || (found == -ENOMEM && alloc_failed),
	      "find failed: %zd", found);
	if (found < 0)
		return; /* the queue is checked against the model next */
	got = (size_t)found;
	want = model_find();
	CHECK(got == want, "find (sep %zu bytes, limit %zu): %zu, model %zu",
	      find.seplen, find.limit, got, want);
	if (got) {
		const unsigned char *p = iou__rxq_contiguous(&pool, &q, got);

		if (!p && alloc_failed)
			return;
		CHECK(p && memcmp(p, model, got) == 0, "found bytes differ");
		iou__rxq_consume(&pool, &q, got);
		model_drop(got);
	}
}

/* A forward: a whole head buffer changes hands, anything else is copied. */
static void op_hand_over(void)
{
	const unsigned char *p;
	size_t len;

	iou__rxq_first(&pool, &q, &p, &len);
	if (!len)
		return;
	if (u8() & 1)
		len = 1 + u8() % len;
	if (iou__rxq_head_is(&pool, &q, len)) {
		uint32_t bid = q.head;

		CHECK(p == iou__pool_addr(&pool, bid) + pool.segs[bid].off,
		      "head_is: the first chunk is not the head buffer");
		CHECK(iou__rxq_detach_head(&pool, &q) == bid, "detached %u",
		      bid);
		CHECK(memcmp(p, model, len) == 0, "handed-over bytes differ");
		model_drop(len);
		give_back(&pool, bid); /* its send completed */
	} else {
		CHECK(q.spill_len || q.head == IOU__SEG_NONE ||
			      len != pool.segs[q.head].len - pool.segs[q.head].off,
		      "head_is false for the whole head buffer");
		iou__rxq_consume(&pool, &q, len);
		model_drop(len);
	}
}

static void op_spill_all(void)
{
	int ret = iou__rxq_spill_all(&pool, &q);

	CHECK(ret == 0 || (ret == -ENOMEM && alloc_failed),
	      "spill_all failed: %d", ret);
	CHECK(ret < 0 || (q.head == IOU__SEG_NONE && q.seg_bytes == 0),
	      "buffers left after spill_all");
}

static void op_clear(void)
{
	iou__rxq_clear(&pool, &q);
	model_drop(mlen);
	CHECK(q.spill == NULL, "spill kept after clear");
}

static void setup(void)
{
	unsigned b0 = u8(), b1 = u8();

	memset(&blocks, 0, sizeof(blocks));
	memset(&find, 0, sizeof(find));
	fail_allocs = 0;
	memset(state, 0, sizeof(state));
	count = 1 + b1 % MAX_BUFS;
	pool.buf_size = 1 + b0 % 32;
	pool.base = malloc((size_t)pool.buf_size * count);
	pool.segs = calloc(count, sizeof(*pool.segs));
	CHECK(pool.base && pool.segs, "out of memory");
	pool.blocks = &blocks;
	pool.give_back = give_back;
	ASAN_POISON_MEMORY_REGION(pool.base, (size_t)pool.buf_size * count);
	iou__rxq_init(&q);
	mlen = 0;
}

static void teardown(void)
{
	iou__rxq_clear(&pool, &q);
	CHECK(q.spill == NULL && q.spill_cap == 0, "spill not freed");
	for (unsigned i = 0; i < count; i++)
		CHECK(state[i] == B_FREE, "buffer %u not given back", i);
	iou__blk_cache_free(&blocks);
	ASAN_UNPOISON_MEMORY_REGION(pool.base, (size_t)pool.buf_size * count);
	free(pool.base);
	free(pool.segs);
	free(model);
	model = NULL;
	mcap = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	in_p = data;
	in_n = size;
	setup();
	for (int i = 0; i < MAX_OPS && in_n; i++) {
		alloc_failed = 0;
		switch (u8() % 10) {
		case 0:
		case 1:
			op_push();
			break;
		case 2:
			op_contiguous();
			break;
		case 3:
			op_consume();
			break;
		case 4:
			op_find(0);
			break;
		case 5:
			op_find(1);
			break;
		case 6:
			op_hand_over();
			break;
		case 7:
			op_spill_all();
			break;
		case 8:
			op_clear();
			break;
		case 9: /* memory runs out for a while */
			fail_allocs = 1 + u8() % 3;
			break;
		}
		check_queue();
	}
	teardown();
	return 0;
}
