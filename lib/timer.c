/* SPDX-License-Identifier: MIT */
/* Timers: a binary min-heap of deadlines in user space.  They cost no SQE:
 * the loop's wait takes the nearest deadline as its timeout.  Per-op
 * deadlines (connect, idle) embed a struct iou__timer in their owner. */
#include <errno.h>
#include <stdlib.h>

#include "loop_int.h"

static bool before(const struct iou__timer *a, const struct iou__timer *b)
{
	if (a->deadline != b->deadline)
		return a->deadline < b->deadline;
	return (int32_t)(a->seq - b->seq) < 0;
}

static void heap_set(iou_loop *loop, unsigned i, struct iou__timer *t)
{
	loop->heap[i] = t;
	t->heap_index = i;
}

static void sift_up(iou_loop *loop, unsigned i)
{
	struct iou__timer *t = loop->heap[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;

		if (!before(t, loop->heap[parent]))
			break;
		heap_set(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_set(loop, i, t);
}

static void sift_down(iou_loop *loop, unsigned i)
{
	struct iou__timer *t = loop->heap[i];

	for (;;) {
		unsigned child = 2 * i + 1;

		if (child >= loop->heap_len)
			break;
		if (child + 1 < loop->heap_len &&
		    before(loop->heap[child + 1], loop->heap[child]))
			child++;
		if (!before(loop->heap[child], t))
			break;
		heap_set(loop, i, loop->heap[child]);
		i = child;
	}
	heap_set(loop, i, t);
}

void iou__timer_init(struct iou__timer *t, void (*fire)(struct iou__timer *))
{
	t->deadline = 0;
	t->seq = 0;
	t->heap_index = IOU__TIMER_IDLE;
	t->fire = fire;
}

int iou__timer_arm(iou_loop *loop, struct iou__timer *t, uint64_t deadline)
{
	if (iou__timer_active(t))
		iou__timer_disarm(loop, t);
	if (loop->heap_len == loop->heap_cap) {
		unsigned cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
		struct iou__timer **h = realloc(loop->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		loop->heap = h;
		loop->heap_cap = cap;
	}
	t->deadline = deadline;
	t->seq = loop->timer_seq++;
	heap_set(loop, loop->heap_len++, t);
	sift_up(loop, t->heap_index);
	return 0;
}

void iou__timer_disarm(iou_loop *loop, struct iou__timer *t)
{
	unsigned i = t->heap_index;
	struct iou__timer *last;

	if (i == IOU__TIMER_IDLE)
		return;
	t->heap_index = IOU__TIMER_IDLE;
	last = loop->heap[--loop->heap_len];
	if (last == t)
		return;
	heap_set(loop, i, last);
	sift_up(loop, i);
	sift_down(loop, last->heap_index);
}

int iou__timers_run(iou_loop *loop)
{
	int n = 0;

	while (loop->heap_len && loop->heap[0]->deadline <= loop->now) {
		struct iou__timer *t = loop->heap[0];

		iou__timer_disarm(loop, t);
		t->fire(t);
		n++;
	}
	return n;
}

int iou__timers_next_ms(iou_loop *loop)
{
	uint64_t d;

	if (!loop->heap_len)
		return -1;
	d = loop->heap[0]->deadline;
	if (d == IOU__TIMER_NEVER)
		return -1;
	if (d <= loop->now)
		return 0;
	d -= loop->now;
	return d > INT32_MAX ? INT32_MAX : (int)d;
}

void iou__timers_free(iou_loop *loop)
{
	free(loop->heap);
	loop->heap = NULL;
	loop->heap_len = loop->heap_cap = 0;
}

/* ---- public timers ------------------------------------------------------ */

struct iou_timer {
	struct iou__timer t;
	iou_loop *loop;
	uint64_t repeat_ms;
	iou_timer_cb cb;
	void *ud;
	bool firing;
	bool cancelled;
};

static void public_fire(struct iou__timer *it)
{
	struct iou_timer *t = IOU__CONTAINER_OF(it, struct iou_timer, t);

	if (t->repeat_ms &&
	    iou__timer_arm(t->loop, &t->t, t->loop->now + t->repeat_ms) < 0)
		t->repeat_ms = 0; /* cannot re-arm: it becomes one-shot */
	t->firing = true;
	t->cb(t, t->ud);
	t->firing = false;
	if (!t->repeat_ms || t->cancelled) {
		iou__timer_disarm(t->loop, &t->t);
		t->loop->active--;
		free(t);
	}
}

int iou_timer_start(iou_loop *loop, uint64_t after_ms, uint64_t repeat_ms,
		    iou_timer_cb cb, void *ud, iou_timer **out)
{
	struct iou_timer *t;
	int ret;

	/* A repeating timer is stopped only through its handle. */
	if (!loop || !cb || (!out && repeat_ms) ||
	    after_ms > UINT32_MAX * 1000ull ||
	    repeat_ms > UINT32_MAX * 1000ull)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	iou__timer_init(&t->t, public_fire);
	t->loop = loop;
	t->repeat_ms = repeat_ms;
	t->cb = cb;
	t->ud = ud;
	ret = iou__timer_arm(loop, &t->t, iou__clock_ms() + after_ms);
	if (ret < 0) {
		free(t);
		return ret;
	}
	loop->active++;
	if (out)
		*out = t;
	return 0;
}

int iou_timer_cancel(iou_timer *t)
{
	if (!t || t->cancelled)
		return -EINVAL;
	iou__timer_disarm(t->loop, &t->t);
	if (t->firing) {
		t->cancelled = true; /* public_fire frees it when cb returns */
		return 0;
	}
	t->loop->active--;
	free(t);
	return 0;
}
