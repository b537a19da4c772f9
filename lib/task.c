/* SPDX-License-Identifier: MIT */
/*
 * Tasks: stackful coroutines on the loop's thread.  A task runs until it
 * blocks; a blocking call issues the callback operation, suspends the task
 * back into whoever resumed it (the loop, or the completion callback that
 * resumed it), and the operation's callback resumes it directly.
 *
 * Stacks are mmap'ed with a guard page below (MADV_GUARD_INSTALL where the
 * kernel has it, 6.13+, which adds no mapping; mprotect otherwise) and the
 * task record at their top, so an idle task costs the pages it touched.
 * Ended tasks' stacks are kept in a small pool per loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "task.h"

#if defined(__SANITIZE_ADDRESS__)
#define TASK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TASK_ASAN 1
#endif
#endif
#ifdef TASK_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TASK_VALGRIND 1
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define DEFAULT_STACK (64u * 1024u)
#define MIN_STACK (16u * 1024u)
#define MAX_STACK (64u * 1024u * 1024u)
#define POOL_MAX 64

enum { T_NEW, T_READY, T_RUNNING, T_WAITING, T_DONE };

struct iou_task {
	void *sp;                 /* saved while not running */
	void *resumer_sp;         /* whoever resumed it, while running */
	iou_loop *loop;
	struct iou__tasks *tasks;
	iou_task_fn fn;
	void *arg;
	unsigned char *map;       /* the mapping: guard page, stack, record */
	size_t map_size;
	int state;
	bool cancelled;
	bool detached;            /* freed when it ends */
	struct iou__wait *wait;   /* the blocking call it waits in */
	struct iou__wait *joiner; /* a task waiting in iou_task_join() */
	ssize_t ready_res;        /* for a wait ended through the ready list */
	struct iou__list link;    /* ready list, or the stack pool */
	struct iou__timer timer;  /* sleep */
	iou_task_group *group;    /* task_group.c: the group it belongs to */
	struct iou__list group_link; /* in that group's members */
	struct iou__list views;   /* read views it holds (task_io.c) */
#ifdef TASK_VALGRIND
	unsigned vg_stack;
#endif
};

/* Per loop (loop->tasks). */
struct iou__tasks {
	iou_loop *loop;
	struct iou__list ready;   /* to resume at the end of the turn */
	struct iou__list pool;    /* stacks of ended tasks, for reuse */
	unsigned pooled;
	int guard_madvise;        /* 1 yes, 0 unknown, -1 no: mprotect */
	size_t page;
};

static __thread iou_task *current;
#ifdef TASK_ASAN
/* The loop's stack, learnt at the first switch into a task. */
static __thread const void *loop_stack_bottom;
static __thread size_t loop_stack_size;
#endif

iou_task *iou__task_current(void)
{
	return current;
}

iou_task *iou_task_self(void)
{
	return current;
}

bool iou__task_cancelled(const iou_task *t)
{
	return t->cancelled;
}

iou_loop *iou__task_loop(const iou_task *t)
{
	return t->loop;
}

struct iou__list *iou__task_views(iou_task *t)
{
	return &t->views;
}

void iou_task_opts_init(struct iou_task_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->stack_size = DEFAULT_STACK;
}

/* ---- the switch --------------------------------------------------------- */

static void task_free(iou_task *t);

static unsigned char *stack_bottom(const iou_task *t)
{
	return t->map + t->tasks->page; /* above the guard page */
}

#ifdef TASK_ASAN
static size_t stack_size(const iou_task *t)
{
	return (size_t)((unsigned char *)t - stack_bottom(t));
}
#endif

/* From the loop's stack (or a callback on it) into t, until t blocks or
 * ends. */
static void resume(iou_task *t)
{
	iou_task *prev = current;
#ifdef TASK_ASAN
	void *fake = NULL;

	__sanitizer_start_switch_fiber(&fake, stack_bottom(t), stack_size(t));
#endif
	current = t;
	t->state = T_RUNNING;
	iou__ctx_switch(&t->resumer_sp, t->sp);
#ifdef TASK_ASAN
	__sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
	current = prev;
	if (t->state == T_DONE) {
		/* It has switched away for the last time: its stack is free
		 * (a joiner frees it, and may do so as soon as it runs). */
		struct iou__wait *j = t->joiner;

		t->joiner = NULL;
		if (t->detached) {
			iou_task_group *g = t->group;

			iou__list_del(&t->group_link);
			task_free(t);
			if (g) /* last: it may free the group */
				iou__group_member_ended(g);
		} else if (j)
			iou__wait_done(j, 0);
	}
}

/* From the running task back to whoever resumed it. */
static void suspend(iou_task *t, int state)
{
#ifdef TASK_ASAN
	void *fake = NULL;

	__sanitizer_start_switch_fiber(state == T_DONE ? NULL : &fake,
				       loop_stack_bottom, loop_stack_size);
#endif
	t->state = state;
	iou__ctx_switch(&t->sp, t->resumer_sp);
#ifdef TASK_ASAN
	__sanitizer_finish_switch_fiber(fake, &loop_stack_bottom,
					&loop_stack_size);
#endif
}

/* ---- stacks ------------------------------------------------------------- */

static struct iou__tasks *tasks_of(iou_loop *loop)
{
	struct iou__tasks *ts = loop->tasks;

	if (ts)
		return ts;
	ts = calloc(1, sizeof(*ts));
	if (!ts)
		return NULL;
	ts->loop = loop;
	iou__list_init(&ts->ready);
	iou__list_init(&ts->pool);
	ts->page = (size_t)sysconf(_SC_PAGESIZE);
	loop->tasks = ts;
	return ts;
}

/* The lowest page faults on any access: a stack overflow is a SIGSEGV
 * there, never a silent write into the next mapping. */
static int guard_install(struct iou__tasks *ts, unsigned char *map)
{
	if (ts->guard_madvise >= 0) {
		if (madvise(map, ts->page, MADV_GUARD_INSTALL) == 0) {
			ts->guard_madvise = 1;
			return 0;
		}
		ts->guard_madvise = -1; /* before 6.13: EINVAL */
	}
	return mprotect(map, ts->page, PROT_NONE) < 0 ? -errno : 0;
}

/* A stack of map_size bytes (guard included) with the task record at its
 * top, from the pool when one of that size is there. */
static iou_task *task_alloc(struct iou__tasks *ts, size_t map_size)
{
	unsigned char *map;
	iou_task *t;

	for (struct iou__list *n = ts->pool.next; n != &ts->pool; n = n->next) {
		t = IOU__CONTAINER_OF(n, iou_task, link);
		if (t->map_size == map_size) {
			iou__list_del(&t->link);
			ts->pooled--;
			map = t->map;
			goto init;
		}
	}
#ifdef IOU_FAULT_INJECTION
	if (iou__fault_map_fails())
		return NULL; /* mmap's ENOMEM */
#endif
	map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (map == MAP_FAILED)
		return NULL;
	if (guard_install(ts, map) < 0) {
		munmap(map, map_size);
		return NULL;
	}
init:
	/* The record at the top, 64-byte aligned; the stack grows below. */
	t = (iou_task *)(((uintptr_t)(map + map_size) - sizeof(*t)) & ~(uintptr_t)63);
	memset(t, 0, sizeof(*t));
	t->map = map;
	t->map_size = map_size;
	t->tasks = ts;
	t->loop = ts->loop;
	iou__list_init(&t->link);
	iou__list_init(&t->group_link);
	iou__list_init(&t->views);
#ifdef TASK_VALGRIND
	t->vg_stack = VALGRIND_STACK_REGISTER(stack_bottom(t), (unsigned char *)t);
#endif
	return t;
}

static void task_free(iou_task *t)
{
	struct iou__tasks *ts = t->tasks;

	ts->loop->active--;
#ifdef TASK_VALGRIND
	VALGRIND_STACK_DEREGISTER(t->vg_stack);
#endif
	if (ts->pooled < POOL_MAX) {
		ts->pooled++;
		iou__list_add_tail(&ts->pool, &t->link);
		return;
	}
	munmap(t->map, t->map_size);
}

void iou__tasks_free(iou_loop *loop)
{
	struct iou__tasks *ts = loop->tasks;

	if (!ts)
		return;
	while (!iou__list_empty(&ts->pool)) {
		iou_task *t = IOU__CONTAINER_OF(ts->pool.next, iou_task, link);

		iou__list_del(&t->link);
		munmap(t->map, t->map_size);
	}
	free(ts);
	loop->tasks = NULL;
}

/* ---- life of a task ----------------------------------------------------- */

static void task_main(void *arg)
{
	iou_task *t = arg;

#ifdef TASK_ASAN
	__sanitizer_finish_switch_fiber(NULL, &loop_stack_bottom,
					&loop_stack_size);
#endif
	t->fn(t->arg);
	iou__task_views_release(t); /* the views it did not release */
	suspend(t, T_DONE); /* never comes back */
	abort();
}

/* Resume on the next turn's end (from the loop's stack). */
static void make_ready(iou_task *t, ssize_t res)
{
	if (t->state == T_READY)
		return; /* queued already: the first result stands */
	t->ready_res = res;
	t->state = T_READY;
	iou__list_add_tail(&t->tasks->ready, &t->link);
}

int iou_task_spawn(iou_loop *loop, iou_task_fn fn, void *arg,
		   const struct iou_task_opts *opts, iou_task **out)
{
	struct iou_task_opts defaults;
	struct iou__tasks *ts;
	size_t size, page;
	iou_task *t;

	if (!loop || !fn)
		return -EINVAL;
	if (!opts) {
		iou_task_opts_init(&defaults);
		opts = &defaults;
	}
	if (opts->stack_size < MIN_STACK || opts->stack_size > MAX_STACK)
		return -EINVAL;
	ts = tasks_of(loop);
	if (!ts)
		return -ENOMEM;
	page = ts->page;
	size = (opts->stack_size + page - 1) / page * page + page; /* + guard */
	t = task_alloc(ts, size);
	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->detached = !out;
	t->sp = iou__ctx_init((unsigned char *)t, task_main, t);
	iou__timer_init(&t->timer, NULL);
	loop->active++; /* a task is work until it ended (and was joined) */
	make_ready(t, 0);
	if (out)
		*out = t;
	return 0;
}

/* The end of a turn: tasks made ready run now, in order. */
void iou__tasks_turn_end(iou_loop *loop)
{
	struct iou__tasks *ts = loop->tasks;
	struct iou__list batch;

	if (!ts || iou__list_empty(&ts->ready))
		return;
	/* Only the ones ready now: a task that yields runs on the next turn. */
	batch = ts->ready;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	iou__list_init(&ts->ready);
	while (!iou__list_empty(&batch)) {
		iou_task *t = IOU__CONTAINER_OF(batch.next, iou_task, link);

		iou__list_del(&t->link);
		if (t->wait) {
			struct iou__wait *w = t->wait;

			t->wait = NULL;
			w->res = t->ready_res;
			w->done = true;
		}
		resume(t);
	}
}

bool iou__tasks_ready(const iou_loop *loop)
{
	return loop->tasks && !iou__list_empty(&loop->tasks->ready);
}

/* ---- waiting ------------------------------------------------------------ */

ssize_t iou__task_wait(struct iou__wait *w)
{
	iou_task *t = w->task;

	w->done = false;
	t->wait = w;
	while (!w->done)
		suspend(t, T_WAITING);
	return w->res;
}

void iou__wait_done(struct iou__wait *w, ssize_t res)
{
	iou_task *t = w->task;

	if (t->wait != w || w->done)
		return;
	if (current) {
		/* Never switch from one task's stack into another's: the
		 * loop resumes it at the end of the turn. */
		make_ready(t, res);
		return;
	}
	t->wait = NULL;
	w->res = res;
	w->done = true;
	resume(t);
}

void iou__wait_done_later(struct iou__wait *w, ssize_t res)
{
	if (w->task->wait == w && !w->done)
		make_ready(w->task, res);
}

/* ---- groups' members ---------------------------------------------------- */

void iou__task_set_group(iou_task *t, iou_task_group *g,
			 struct iou__list *members)
{
	t->group = g;
	iou__list_add_tail(members, &t->group_link);
}

iou_task_group *iou__task_group(const iou_task *t)
{
	return t->group;
}

iou_task *iou__task_of_group_link(struct iou__list *n)
{
	return IOU__CONTAINER_OF(n, iou_task, group_link);
}

/* ---- yield, sleep, cancel, join ----------------------------------------- */

int iou_task_yield(void)
{
	iou_task *t = current;
	struct iou__wait w = { .task = t };

	if (!t)
		return -EPERM;
	if (t->cancelled)
		return -ECANCELED;
	make_ready(t, 0);
	t->wait = &w;
	return (int)iou__task_wait(&w);
}

static void sleep_fire(struct iou__timer *timer)
{
	iou_task *t = IOU__CONTAINER_OF(timer, iou_task, timer);

	if (t->wait)
		iou__wait_done(t->wait, 0);
}

static void sleep_cancel(struct iou__wait *w)
{
	iou__timer_disarm(w->task->loop, &w->task->timer);
	make_ready(w->task, -ECANCELED);
}

int iou_task_sleep(unsigned ms)
{
	iou_task *t = current;
	struct iou__wait w = { .task = t, .cancel = sleep_cancel };

	if (!t)
		return -EPERM;
	if (t->cancelled)
		return -ECANCELED;
	t->timer.fire = sleep_fire;
	if (iou__timer_arm(t->loop, &t->timer, iou__clock_ms() + ms) < 0)
		return -ENOMEM;
	return (int)iou__task_wait(&w);
}

int iou_task_cancel(iou_task *t)
{
	if (!t)
		return -EINVAL;
	if (t->state == T_DONE)
		return -ESRCH;
	if (t->cancelled)
		return 0;
	t->cancelled = true;
	if (t->state == T_WAITING && t->wait && t->wait->cancel)
		t->wait->cancel(t->wait);
	return 0;
}

static void join_cancel(struct iou__wait *w)
{
	iou_task *target = w->buf;

	target->joiner = NULL;
	make_ready(w->task, -ECANCELED);
}

int iou_task_join(iou_task *t)
{
	iou_task *self = current;
	struct iou__wait w = { .task = self, .cancel = join_cancel, .buf = t };
	ssize_t ret;

	if (!t || t->detached || t == self)
		return -EINVAL;
	if (!self)
		return -EPERM;
	if (t->joiner)
		return -EBUSY;
	if (t->state != T_DONE) {
		if (self->cancelled)
			return -ECANCELED;
		t->joiner = &w;
		ret = iou__task_wait(&w);
		if (ret < 0)
			return (int)ret;
	}
	task_free(t);
	return 0;
}

int iou_task_detach(iou_task *t)
{
	if (!t || t->detached)
		return -EINVAL;
	if (t->joiner)
		return -EBUSY;
	t->detached = true;
	if (t->state == T_DONE)
		task_free(t);
	return 0;
}
