/* SPDX-License-Identifier: MIT */
/* Tasks' internals shared by task.c (the scheduler and stacks) and
 * task_io.c (the blocking calls); never installed. */
#ifndef IOU_TASK_H
#define IOU_TASK_H

#include "loop_int.h"
#include "task_ctx.h"


/* A blocking call in progress: on the task's stack while it is suspended.
 * `cancel` (may be NULL) makes the operation end soon with -ECANCELED,
 * never resuming the task from inside (iou_task_group_cancel() cancels
 * the members of a list it walks). */
struct iou__wait {
	iou_task *task;
	ssize_t res;
	bool done;
	void (*cancel)(struct iou__wait *w);
	/* for the call's own use */
	iou_stream *s;
	void *buf;
	size_t len;
};

/* The running task, NULL on the loop's own stack. */
iou_task *iou__task_current(void);
bool iou__task_cancelled(const iou_task *t);
iou_loop *iou__task_loop(const iou_task *t);
/* The read views the task holds (task_io.c's records), and their release
 * when it ends. */
struct iou__list *iou__task_views(iou_task *t);
void iou__task_views_release(iou_task *t);

/* Suspend the current task until iou__wait_done(w) (from a callback on the
 * loop's stack).  Returns w->res. */
ssize_t iou__task_wait(struct iou__wait *w);
/* The operation of w ended with res: resume its task now, right from the
 * completion callback (no run-queue hop), until it blocks again. */
void iou__wait_done(struct iou__wait *w, ssize_t res);

/* The same, resuming it at the end of the turn (for cancels). */
void iou__wait_done_later(struct iou__wait *w, ssize_t res);

/* Groups (task_group.c).  A member is a detached task linked into its
 * group's `members`; when it ended, task.c unlinks and releases it, then
 * calls iou__group_member_ended() (on the loop's stack), which may free
 * the group. */
void iou__task_set_group(iou_task *t, iou_task_group *g,
			 struct iou__list *members);
iou_task_group *iou__task_group(const iou_task *t);
iou_task *iou__task_of_group_link(struct iou__list *n);
void iou__group_member_ended(iou_task_group *g);

#endif /* IOU_TASK_H */
