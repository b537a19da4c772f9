/* SPDX-License-Identifier: MIT */
/* The blocking calls of tasks: each issues the callback operation of the
 * stream API, waits in the task, and is resumed by its callback.  A
 * deadline is the stream's read or write timeout for that one call. */
#include <errno.h>
#include <string.h>

#include "internal.h" /* the streams the calls block on */
#include "task.h"

/* -1: no deadline (the stream's timeout 0); 0 is the shortest, 1 ms. */
static unsigned timeout_arg(int timeout_ms)
{
	return timeout_ms < 0 ? 0 : timeout_ms == 0 ? 1 : (unsigned)timeout_ms;
}

/* The current task, or the error a blocking call returns. */
static int enter(iou_task **t)
{
	*t = iou__task_current();
	if (!*t)
		return -EPERM;
	if (iou__task_cancelled(*t))
		return -ECANCELED;
	return 0;
}

static void read_cancel(struct iou__wait *w)
{
	iou_read_cancel(w->s);
}

/* A write in flight reads the task's buffer until its callback: it cannot
 * be abandoned, and a peer that does not read would hold the cancelled
 * task forever.  So the stream's writes fail (-ECANCELED, the send in
 * flight cancelled first), breaking its sending side as a deadline does. */
static void write_cancel(struct iou__wait *w)
{
	iou__stream_cancel_writes(w->s, -ECANCELED);
}

/* Reads that copy what they got into the task's buffer. */
static void copy_read_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct iou__wait *w = ud;

	(void)s;
	if (res > 0)
		memcpy(w->buf, data, (size_t)res);
	iou__wait_done(w, res);
}

/* The operation was issued (ret 0): wait for its callback. */
static ssize_t wait_for(struct iou__wait *w, int ret)
{
	if (ret < 0)
		return ret;
	return iou__task_wait(w);
}

/* ---- read views --------------------------------------------------------- */

/* A view the task holds: the bytes it took out of stream `s`.  s is only
 * the key, never dereferenced: the stream may be closed and freed while the
 * task still sends the bytes elsewhere. */
struct view {
	struct iou__list link;     /* in the task's views */
	const iou_stream *s;
	struct iou__held h;
	size_t cap;                /* of this record's block */
};

static struct view *view_find(iou_task *t, const iou_stream *s)
{
	struct iou__list *l = iou__task_views(t);

	for (struct iou__list *n = l->next; n != l; n = n->next) {
		struct view *v = IOU__CONTAINER_OF(n, struct view, link);

		if (v->s == s)
			return v;
	}
	return NULL;
}

static void view_free(iou_task *t, struct view *v)
{
	iou_loop *loop = iou__task_loop(t);

	iou__list_del(&v->link);
	iou__held_release(loop, &v->h);
	iou__blk_put(&loop->blocks, v, v->cap);
}

static void view_drop(iou_task *t, const iou_stream *s)
{
	struct view *v = view_find(t, s);

	if (v)
		view_free(t, v);
}

void iou__task_views_release(iou_task *t)
{
	struct iou__list *l = iou__task_views(t);

	while (!iou__list_empty(l))
		view_free(t, IOU__CONTAINER_OF(l->next, struct view, link));
}

/* A blocking call on s in the current task: its wait record, with the
 * call's deadline as the stream's read (or write) timeout.  A read ends
 * the task's view of s.  0 or the error the call returns. */
static int begin(iou_stream *s, void *buf, size_t len, int timeout_ms,
		 bool reading, struct iou__wait *w)
{
	iou_task *t;
	int ret = enter(&t);

	if (ret < 0)
		return ret;
	if (!s)
		return -EINVAL;
	ret = reading ? iou_stream_set_read_timeout(s, timeout_arg(timeout_ms))
		      : iou_stream_set_write_timeout(s, timeout_arg(timeout_ms));
	if (ret < 0)
		return ret;
	if (reading)
		view_drop(t, s);
	*w = (struct iou__wait){ .task = t, .s = s, .buf = buf, .len = len,
				 .cancel = reading ? read_cancel : write_cancel };
	return 0;
}

ssize_t iou_task_read(iou_stream *s, void *buf, size_t len, int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, buf, len, timeout_ms, true, &w);

	if (ret == 0 && !buf)
		ret = -EINVAL;
	return wait_for(&w, ret ? ret : iou_read(s, len, copy_read_cb, &w));
}

ssize_t iou_task_peek(iou_stream *s, void *buf, size_t n, int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, buf, n, timeout_ms, true, &w);

	if (ret == 0 && !buf)
		ret = -EINVAL;
	return wait_for(&w, ret ? ret : iou_peek(s, n, copy_read_cb, &w));
}

ssize_t iou_task_read_until(iou_stream *s, void *buf, size_t cap,
			    const void *sep, size_t seplen, int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, buf, cap, timeout_ms, true, &w);

	if (ret == 0 && !buf)
		ret = -EINVAL;
	return wait_for(&w, ret ? ret : iou_read_until(s, sep, seplen, cap,
						       copy_read_cb, &w));
}

static void into_cb(iou_stream *s, ssize_t res, size_t got, void *ud)
{
	struct iou__wait *w = ud;

	(void)s;
	w->len = got;
	iou__wait_done(w, res);
}

ssize_t iou_task_read_exactly(iou_stream *s, void *buf, size_t n,
			      int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, buf, n, timeout_ms, true, &w);

	if (ret == 0 && !buf)
		ret = -EINVAL;
	if (ret < 0)
		return ret;
	/* Buffered in the stream until all n are there, so that a deadline or
	 * a cancel loses nothing; above max_buffered (-EINVAL) the bytes go
	 * straight into buf as they come (on an error, w.len of them). */
	ret = iou_read_exactly(s, n, copy_read_cb, &w);
	if (ret == -EINVAL)
		ret = iou_read_exactly_into(s, buf, n, into_cb, &w);
	return wait_for(&w, ret);
}

static void view_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct iou__wait *w = ud;

	(void)s;
	w->buf = (void *)data;
	iou__wait_done(w, res);
}

ssize_t iou_task_read_view(iou_stream *s, size_t max, int timeout_ms,
			   const void **data)
{
	struct iou__wait w;
	struct view *v;
	iou_loop *loop;
	size_t cap;
	ssize_t res;
	int ret = begin(s, NULL, max, timeout_ms, true, &w);

	if (ret == 0 && (!data || !max))
		ret = -EINVAL;
	if (ret < 0)
		return ret;
	/* The record first: bytes once taken must have a holder. */
	loop = iou__task_loop(w.task);
	v = iou__blk_get(&loop->blocks, sizeof(*v), &cap);
	if (!v)
		return -ENOMEM;
	*v = (struct view){ .s = s, .cap = cap,
			    .h = { .bid = IOU__SEG_NONE } };
	res = wait_for(&w, iou__read_view(s, max, &v->h, view_cb, &w));
	if (res <= 0) {
		iou__blk_put(&loop->blocks, v, cap);
		return res;
	}
	iou__list_add_tail(iou__task_views(w.task), &v->link);
	*data = w.buf;
	return res;
}

int iou_task_release(iou_stream *s)
{
	iou_task *t = iou__task_current();

	if (!t)
		return -EPERM;
	if (!s)
		return -EINVAL;
	view_drop(t, s);
	return 0;
}

/* ---- writes ------------------------------------------------------------- */

static void write_cb(iou_stream *s, ssize_t res, void *ud)
{
	(void)s;
	iou__wait_done(ud, res);
}

ssize_t iou_task_write(iou_stream *s, const void *buf, size_t len,
		       int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, NULL, len, timeout_ms, false, &w);

	return wait_for(&w, ret ? ret : iou_write(s, buf, len, write_cb, &w));
}

ssize_t iou_task_write_all(iou_stream *s, const void *buf, size_t len,
			   int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, NULL, len, timeout_ms, false, &w);

	return wait_for(&w, ret ? ret : iou_write_all(s, buf, len, write_cb, &w));
}

ssize_t iou_task_drain(iou_stream *s, int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(s, NULL, 0, timeout_ms, false, &w);

	return wait_for(&w, ret ? ret : iou_drain(s, write_cb, &w));
}

/* Still waiting for bytes: the read ends; else they wait on `to` (buf),
 * whose writes fail. */
static void forward_cancel(struct iou__wait *w)
{
	if (iou_read_cancel(w->s) == -EBUSY)
		iou__stream_cancel_writes(w->buf, -ECANCELED);
}

/* The FIN ends the data: everything queued and fed goes first (a drain,
 * under the write deadline), then the shutdown op, which is not cancelled
 * (it ends at once). */
int iou_task_shutdown(iou_stream *s, int timeout_ms)
{
	struct iou__wait w;
	ssize_t res;
	int ret = begin(s, NULL, 0, timeout_ms, false, &w);

	if (ret < 0)
		return ret;
	res = wait_for(&w, iou_drain(s, write_cb, &w));
	if (res < 0)
		return (int)res;
	if (iou__task_cancelled(w.task))
		return -ECANCELED;
	ret = iou__shutdown_wait(s, write_cb, &w);
	if (ret == 1)
		return 0;
	return (int)wait_for(&w, ret);
}

/* Forward: a read on `from` (its deadline) and a write on `to`. */
ssize_t iou_task_forward(iou_stream *from, iou_stream *to, size_t max,
			 int timeout_ms)
{
	struct iou__wait w;
	int ret = begin(from, to, max, timeout_ms, true, &w);

	w.cancel = forward_cancel;
	return wait_for(&w, ret ? ret : iou_forward(from, to, max, write_cb, &w));
}

/* ---- proxy --------------------------------------------------------------- */

/* Both directions run as callback forwards, each re-issued from its own
 * callback; the task waits once, for the end of both. */
struct proxy;

struct proxy_dir {
	struct proxy *p;
	iou_stream *from, *to;
	bool busy;                 /* a forward in flight */
};

struct proxy {
	struct iou__wait w;        /* first: the cancel finds the proxy */
	struct proxy_dir d[2];
	size_t total;
	int err;                   /* the first error: both directions stop */
	unsigned idle_ms;          /* 0: no deadline */
	uint64_t last;             /* loop clock of the last bytes either way */
};

/* Large: a forward takes what is buffered anyway (max_buffered at most). */
#define PROXY_MAX ((size_t)1 << 30)

static void proxy_cb(iou_stream *s, ssize_t res, void *ud);

static int proxy_next(struct proxy_dir *d)
{
	int ret = iou_forward(d->from, d->to, PROXY_MAX, proxy_cb, d);

	d->busy = ret == 0;
	return ret;
}

/* A forward whose bytes are being sent cannot be cancelled (-EBUSY): its
 * target's sending side is broken instead (as for iou_task_forward()), or
 * a peer that does not read would hold the proxy forever. */
static void proxy_stop(struct proxy *p, int err)
{
	if (!p->err)
		p->err = err;
	for (int i = 0; i < 2; i++)
		if (p->d[i].busy && iou_read_cancel(p->d[i].from) == -EBUSY)
			iou__stream_cancel_writes(p->d[i].to, p->err);
}

static void proxy_cancel(struct iou__wait *w)
{
	proxy_stop((struct proxy *)w, -ECANCELED);
}

static void proxy_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct proxy_dir *d = ud;
	struct proxy *p = d->p;
	int ret = 0;

	d->busy = false;
	if (res > 0) {
		p->total += (size_t)res;
		p->last = s->loop->now;
		if (!p->err)
			ret = proxy_next(d);
	} else if (res == -ETIMEDOUT && !p->err &&
		   s->loop->now - p->last < p->idle_ms) {
		/* This side was quiet, the other was not: the deadline is
		 * for the whole proxy's idleness (nothing was lost). */
		ret = proxy_next(d);
	} else if (res == 0) {
		/* End of file: a half-close of the other side, after what was
		 * forwarded (sent already: a forward ends with its send). */
		if (!p->err)
			ret = iou_shutdown(d->to, SHUT_WR);
	} else {
		ret = (int)res;
	}
	if (ret < 0)
		proxy_stop(p, ret);
	/* Last: the task resumes here and its stack (p) goes. */
	if (!p->d[0].busy && !p->d[1].busy)
		iou__wait_done(&p->w, p->err ? p->err : (ssize_t)p->total);
}

static int proxy_timeouts(iou_stream *s, unsigned ms)
{
	int ret = iou_stream_set_read_timeout(s, ms);

	return ret < 0 ? ret : iou_stream_set_write_timeout(s, ms);
}

ssize_t iou_task_proxy(iou_stream *a, iou_stream *b, int timeout_ms)
{
	unsigned ms = timeout_arg(timeout_ms);
	struct proxy p;
	iou_task *t;
	int ret = enter(&t);

	if (ret < 0)
		return ret;
	if (!a || !b || a == b)
		return -EINVAL;
	ret = proxy_timeouts(a, ms);
	if (ret == 0)
		ret = proxy_timeouts(b, ms);
	if (ret < 0)
		return ret;
	view_drop(t, a);
	view_drop(t, b);
	p = (struct proxy){ .w = { .task = t, .cancel = proxy_cancel },
			    .idle_ms = ms, .last = a->loop->now };
	p.d[0] = (struct proxy_dir){ .p = &p, .from = a, .to = b };
	p.d[1] = (struct proxy_dir){ .p = &p, .from = b, .to = a };
	ret = proxy_next(&p.d[0]);
	if (ret < 0)
		return ret;
	ret = proxy_next(&p.d[1]);
	if (ret < 0)
		proxy_stop(&p, ret); /* and wait for the first to end */
	return iou__task_wait(&p.w);
}

/* ---- connect and close -------------------------------------------------- */

static void connect_cancel(struct iou__wait *w)
{
	iou_close(w->s, NULL, NULL); /* the connect callback: -ECANCELED */
}

static void connect_cb(iou_stream *s, int res, void *ud)
{
	struct iou__wait *w = ud;

	(void)s;
	iou__wait_done(w, res);
}

int iou_task_connect(const char *host, uint16_t port,
		     const struct iou_connect_opts *opts, int timeout_ms,
		     iou_stream **out)
{
	struct iou_connect_opts o;
	struct iou__wait w;
	iou_task *t;
	int ret = enter(&t);

	if (ret < 0)
		return ret;
	if (!out)
		return -EINVAL;
	if (opts)
		o = *opts;
	else
		iou_connect_opts_init(&o);
	if (timeout_ms >= 0)
		o.timeout_ms = timeout_arg(timeout_ms);
	w = (struct iou__wait){ .task = t, .cancel = connect_cancel };
	ret = iou_tcp_connect(iou__task_loop(t), host, port, &o, connect_cb, &w,
			      &w.s);
	if (ret < 0)
		return ret;
	ret = (int)iou__task_wait(&w);
	if (ret < 0)
		return ret; /* the stream was released after the callback */
	*out = w.s;
	return 0;
}

static void close_cb(iou_stream *s, void *ud)
{
	(void)s;
	iou__wait_done(ud, 0);
}

int iou_task_close(iou_stream *s, int timeout_ms)
{
	iou_task *t = iou__task_current();
	struct iou__wait w;
	int ret;

	if (!t)
		return -EPERM;
	if (!s)
		return -EINVAL;
	/* Also when cancelled: the stream must go, only sooner (a cancel
	 * during the graceful close ends it at once: write_cancel). */
	w = (struct iou__wait){ .task = t, .s = s, .cancel = write_cancel };
	if (iou__task_cancelled(t))
		ret = iou_close(s, close_cb, &w);
	else
		ret = iou_close_graceful(s, timeout_arg(timeout_ms), close_cb, &w);
	if (ret < 0)
		return ret;
	iou__task_wait(&w);
	return 0;
}
