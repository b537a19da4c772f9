/* SPDX-License-Identifier: MIT */
/*
 * The pure buffer core (lib/rxq.c) on its own: no ring, no loop.  A pool of
 * 8 buffers of 8 bytes in plain memory; give_back records the buffer ids in
 * the order they come back.  (fuzz/fuzz_rxq.c checks the same module
 * against a reference model with random data and operations.)
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "rxq.h"

#define NBUF 8
#define BSZ 8

static unsigned char mem[NBUF * BSZ];
static struct iou__seg segs[NBUF];
static struct iou__blkcache blocks;
static struct iou__pool pool;
static struct iou__rxq q;
static uint32_t back[64];
static unsigned nback;

static void give_back(struct iou__pool *p, uint32_t bid)
{
	ck_assert_ptr_eq(p, &pool);
	ck_assert_uint_lt(nback, 64);
	back[nback++] = bid;
}

static void setup(void)
{
	memset(&blocks, 0, sizeof(blocks));
	pool.base = mem;
	pool.buf_size = BSZ;
	pool.segs = segs;
	pool.blocks = &blocks;
	pool.give_back = give_back;
	nback = 0;
	iou__rxq_init(&q);
}

static void teardown(void)
{
	iou__rxq_clear(&pool, &q);
	iou__blk_cache_free(&blocks);
}

/* Receive `text` into buffer bid and queue it. */
static void push(uint32_t bid, const char *text)
{
	size_t len = strlen(text);

	ck_assert_uint_le(len, BSZ);
	memcpy(iou__pool_addr(&pool, bid), text, len);
	iou__rxq_push(&pool, &q, bid, (uint32_t)len);
}

static void assert_first(const char *want)
{
	const unsigned char *p;
	size_t len;

	iou__rxq_first(&pool, &q, &p, &len);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert(len == 0 || memcmp(p, want, len) == 0);
}

START_TEST(test_empty)
{
	const unsigned char *p = (const unsigned char *)"x";
	size_t len = 1, scan = 0;

	ck_assert_uint_eq(iou__rxq_len(&q), 0);
	iou__rxq_first(&pool, &q, &p, &len);
	ck_assert_ptr_null(p);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(iou__rxq_find(&pool, &q, (const unsigned char *)"\n",
				       1, 100, &scan),
			 0);
	ck_assert(!iou__rxq_head_is(&pool, &q, 0));
	ck_assert_int_eq(iou__rxq_spill_all(&pool, &q), 0);
	iou__rxq_clear(&pool, &q);
	ck_assert_uint_eq(nback, 0);
}
END_TEST

/* Bytes within one buffer are read in place: no copy, no memory. */
START_TEST(test_in_place)
{
	const unsigned char *p;

	push(3, "hello");
	push(5, "world");
	ck_assert_uint_eq(iou__rxq_len(&q), 10);
	p = iou__rxq_contiguous(&pool, &q, 5);
	ck_assert_ptr_eq(p, iou__pool_addr(&pool, 3));
	ck_assert_ptr_null(q.spill);
	iou__rxq_consume(&pool, &q, 2);
	assert_first("llo");
	ck_assert_uint_eq(nback, 0);
	iou__rxq_consume(&pool, &q, 3); /* the rest of buffer 3 */
	ck_assert_uint_eq(nback, 1);
	ck_assert_uint_eq(back[0], 3);
	ck_assert_ptr_eq(p = iou__rxq_contiguous(&pool, &q, 5),
			 iou__pool_addr(&pool, 5));
}
END_TEST

/* A run that spans buffers is copied once into the spill; the buffers it
 * used go back in order; the spill goes back to the cache once consumed. */
START_TEST(test_span_spills)
{
	const unsigned char *p;

	push(0, "abcdefgh");
	push(1, "ijklmnop");
	push(2, "qr");
	iou__rxq_consume(&pool, &q, 6);
	p = iou__rxq_contiguous(&pool, &q, 5); /* "ghijk" */
	ck_assert_ptr_nonnull(p);
	ck_assert(memcmp(p, "ghijk", 5) == 0);
	ck_assert_ptr_eq(p, q.spill + q.spill_off);
	ck_assert_uint_eq(nback, 2);
	ck_assert_uint_eq(back[0], 0);
	ck_assert_uint_eq(back[1], 1);
	ck_assert_uint_eq(iou__rxq_len(&q), 12);
	iou__rxq_consume(&pool, &q, 10); /* all of the spill */
	ck_assert_ptr_null(q.spill);
	ck_assert_uint_eq(blocks.n, 1);
	assert_first("qr");
	/* the next spill takes the cached block */
	push(4, "stuvwxyz");
	p = iou__rxq_contiguous(&pool, &q, 4);
	ck_assert(memcmp(p, "qrst", 4) == 0);
	ck_assert_uint_eq(blocks.n, 0);
}
END_TEST

/* A separator split across buffers; the limit bounds the search. */
START_TEST(test_find_across_buffers)
{
	const unsigned char *sep = (const unsigned char *)"\r\n";
	size_t scan = 0;

	push(0, "GET / \r");
	push(1, "\nHost");
	ck_assert_int_eq(iou__rxq_find(&pool, &q, sep, 2, 6, &scan), 0);
	scan = 0;
	ck_assert_int_eq(iou__rxq_find(&pool, &q, sep, 2, 100, &scan), 8);
	ck_assert(memcmp(iou__rxq_contiguous(&pool, &q, 8), "GET / \r\n", 8) ==
		  0);
}
END_TEST

/* Called again as bytes arrive, the search does not start over. */
START_TEST(test_find_resumes)
{
	const unsigned char *sep = (const unsigned char *)"END";
	size_t scan = 0;

	push(0, "abcdefEN");
	ck_assert_int_eq(iou__rxq_find(&pool, &q, sep, 3, 64, &scan), 0);
	ck_assert_uint_eq(scan, 6); /* "EN" may begin the match */
	push(1, "xyzabcde");
	ck_assert_int_eq(iou__rxq_find(&pool, &q, sep, 3, 64, &scan), 0);
	ck_assert_uint_eq(scan, 14);
	push(2, "END!");
	ck_assert_int_eq(iou__rxq_find(&pool, &q, sep, 3, 64, &scan), 19);
}
END_TEST

/* The head buffer can change hands whole (a forward), and only whole. */
START_TEST(test_detach_head)
{
	push(6, "abcd");
	push(7, "efgh");
	iou__rxq_consume(&pool, &q, 1);
	ck_assert(!iou__rxq_head_is(&pool, &q, 2));
	ck_assert(iou__rxq_head_is(&pool, &q, 3));
	ck_assert_uint_eq(iou__rxq_detach_head(&pool, &q), 6);
	ck_assert_uint_eq(nback, 0); /* the caller owns it now */
	ck_assert_uint_eq(iou__rxq_len(&q), 4);
	assert_first("efgh");
	ck_assert_ptr_nonnull(iou__rxq_contiguous(&pool, &q, 2));
	ck_assert(iou__rxq_head_is(&pool, &q, 4));
	/* once bytes sit in the spill, nothing is a whole buffer */
	push(0, "ij");
	ck_assert_ptr_nonnull(iou__rxq_contiguous(&pool, &q, 5));
	ck_assert(!iou__rxq_head_is(&pool, &q, 5));
	ck_assert(!iou__rxq_head_is(&pool, &q, 1));
}
END_TEST

/* Under starvation every buffer goes back, the bytes stay. */
START_TEST(test_spill_all)
{
	push(2, "01234567");
	push(3, "89");
	push(4, "ab");
	iou__rxq_consume(&pool, &q, 3);
	ck_assert_int_eq(iou__rxq_spill_all(&pool, &q), 0);
	ck_assert_uint_eq(nback, 3);
	ck_assert_uint_eq(q.head, IOU__SEG_NONE);
	ck_assert_uint_eq(q.tail, IOU__SEG_NONE);
	assert_first("3456789ab");
	push(5, "cd");
	ck_assert(memcmp(iou__rxq_contiguous(&pool, &q, 11), "3456789abcd",
			 11) == 0);
}
END_TEST

START_TEST(test_clear)
{
	push(1, "abcdefgh");
	push(2, "ij");
	ck_assert_ptr_nonnull(iou__rxq_contiguous(&pool, &q, 9));
	push(3, "kl");
	iou__rxq_clear(&pool, &q);
	ck_assert_uint_eq(iou__rxq_len(&q), 0);
	ck_assert_ptr_null(q.spill);
	ck_assert_uint_eq(nback, 3);
	ck_assert_uint_eq(back[2], 3);
	assert_first("");
}
END_TEST

static Suite *rxq_suite(void)
{
	Suite *s = suite_create("rxq");
	TCase *tc = tcase_create("queue");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_in_place);
	tcase_add_test(tc, test_span_spills);
	tcase_add_test(tc, test_find_across_buffers);
	tcase_add_test(tc, test_find_resumes);
	tcase_add_test(tc, test_detach_head);
	tcase_add_test(tc, test_spill_all);
	tcase_add_test(tc, test_clear);
	suite_add_tcase(s, tc);
	return s;
}

/* No ring needed: runs even where io_uring is unavailable. */
int main(void)
{
	SRunner *sr = srunner_create(rxq_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
