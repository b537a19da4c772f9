/* SPDX-License-Identifier: MIT */
/*
 * Task groups: detached tasks linked into their group, which can be waited
 * for, cancelled and destroyed as one.  The group outlives its destroy
 * while members run (they may still reach it), and while its own code is
 * on the stack (`busy`: a woken waiter or the on_empty callback may
 * destroy it from inside).
 */
#include <errno.h>
#include <stdlib.h>

#include "task.h"

struct iou_task_group {
	iou_loop *loop;
	struct iou__list members;  /* their group_link, in task.c */
	unsigned count;
	struct iou__list waiters;  /* struct waiter */
	iou_task_group_cb on_empty;
	void *on_empty_ud;
	unsigned busy;
	bool destroyed;
};

/* A task in iou_task_group_wait(), on its stack. */
struct waiter {
	struct iou__wait w;
	iou_task_group *g;
	struct iou__list link;
	struct iou__timer timer;
};

static void maybe_free(iou_task_group *g)
{
	if (g->destroyed && !g->count && !g->busy)
		free(g);
}

int iou_task_group_create(iou_loop *loop, iou_task_group **out)
{
	iou_task_group *g;

	if (!loop || !out)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->loop = loop;
	iou__list_init(&g->members);
	iou__list_init(&g->waiters);
	*out = g;
	return 0;
}

int iou_task_group_spawn(iou_task_group *g, iou_task_fn fn, void *arg,
			 const struct iou_task_opts *opts)
{
	iou_task *t;
	int ret;

	if (!g || !fn)
		return -EINVAL;
	if (g->destroyed)
		return -ECANCELED;
	ret = iou_task_spawn(g->loop, fn, arg, opts, &t);
	if (ret < 0)
		return ret;
	iou_task_detach(t); /* not started yet: only marks it */
	iou__task_set_group(t, g, &g->members);
	g->count++;
	return 0;
}

unsigned iou_task_group_count(const iou_task_group *g)
{
	return g ? g->count : 0;
}

/* The last member ended: every waiter returns 0 (also when one of them
 * spawns into g again: the moment they waited for came), then on_empty
 * runs if g is still empty. */
static void emptied(iou_task_group *g)
{
	struct iou__list batch;

	g->busy++;
	iou__list_init(&batch);
	if (!iou__list_empty(&g->waiters)) {
		batch = g->waiters;
		batch.next->prev = &batch;
		batch.prev->next = &batch;
		iou__list_init(&g->waiters);
	}
	while (!iou__list_empty(&batch)) {
		struct waiter *wt = IOU__CONTAINER_OF(batch.next, struct waiter,
						      link);

		iou__list_del(&wt->link);
		iou__timer_disarm(g->loop, &wt->timer);
		iou__wait_done(&wt->w, 0);
	}
	if (!g->count && g->on_empty)
		g->on_empty(g, g->on_empty_ud);
	g->busy--;
	maybe_free(g);
}

void iou__group_member_ended(iou_task_group *g)
{
	if (--g->count == 0)
		emptied(g);
}

static void wait_fire(struct iou__timer *timer)
{
	struct waiter *wt = IOU__CONTAINER_OF(timer, struct waiter, timer);

	iou__list_del(&wt->link);
	iou__wait_done(&wt->w, -ETIMEDOUT);
}

static void wait_cancel(struct iou__wait *w)
{
	struct waiter *wt = IOU__CONTAINER_OF(w, struct waiter, w);

	iou__list_del(&wt->link);
	iou__timer_disarm(wt->g->loop, &wt->timer);
	iou__wait_done_later(w, -ECANCELED);
}

int iou_task_group_wait(iou_task_group *g, int timeout_ms)
{
	iou_task *t = iou__task_current();
	struct waiter wt;

	if (!t)
		return -EPERM;
	if (!g)
		return -EINVAL;
	if (iou__task_group(t) == g)
		return -EDEADLK;
	if (iou__task_cancelled(t))
		return -ECANCELED;
	if (!g->count)
		return 0;
	wt = (struct waiter){ .g = g };
	wt.w = (struct iou__wait){ .task = t, .cancel = wait_cancel };
	iou__timer_init(&wt.timer, wait_fire);
	if (timeout_ms >= 0 &&
	    iou__timer_arm(g->loop, &wt.timer, iou__clock_ms() +
			   (unsigned)timeout_ms) < 0)
		return -ENOMEM;
	iou__list_add_tail(&g->waiters, &wt.link);
	return (int)iou__task_wait(&wt.w);
}

int iou_task_group_cancel(iou_task_group *g)
{
	if (!g)
		return -EINVAL;
	/* No member ends inside iou_task_cancel() (see struct iou__wait), so
	 * the list holds still while it is walked. */
	for (struct iou__list *n = g->members.next; n != &g->members; n = n->next)
		iou_task_cancel(iou__task_of_group_link(n));
	return 0;
}

int iou_task_group_on_empty(iou_task_group *g, iou_task_group_cb cb, void *ud)
{
	if (!g)
		return -EINVAL;
	g->on_empty = cb;
	g->on_empty_ud = ud;
	return 0;
}

int iou_task_group_destroy(iou_task_group *g)
{
	if (!g || g->destroyed)
		return -EINVAL;
	g->destroyed = true;
	iou_task_group_cancel(g);
	maybe_free(g);
	return 0;
}
