/* SPDX-License-Identifier: MIT */
/* A server whose handler is a task: one task per connection, the stream
 * closed (flushing) when the handler returns, and a cut (idle timeout,
 * grace limit) cancels the handler's task. */
#include <errno.h>
#include <stdlib.h>

#include "loop_int.h" /* in the fault build, malloc can fail */
#include "server.h"

struct task_server {
	iou_task_handler handler;
	void *ud;
	struct iou_task_opts topts;
	unsigned close_timeout_ms;
};

/* One per connection, in the stream's data slot. */
struct conn {
	struct task_server *ts;
	iou_stream *s;
	iou_task *task;
};

static void conn_main(void *arg)
{
	struct conn *c = arg;

	c->ts->handler(c->s, c->ts->ud);
	/* The close may outlive the task (a deadline, a cancel) and the
	 * server cut the stream later: its on_cut must not find c. */
	iou_stream_set_data(c->s, NULL);
	iou_task_close(c->s, (int)c->ts->close_timeout_ms);
	free(c);
}

static void on_conn(iou_server *srv, iou_stream *s, const struct sockaddr *peer,
		    void *ud)
{
	struct task_server *ts = ud;
	struct conn *c = malloc(sizeof(*c));

	(void)srv;
	(void)peer;
	if (!c) {
		iou_close(s, NULL, NULL);
		return;
	}
	c->ts = ts;
	c->s = s;
	iou_stream_set_data(s, c);
	/* Detached: it ends with its handler.  c->task is valid as long as
	 * the stream is open, which the task closes last. */
	if (iou_task_spawn(iou_stream_loop(s), conn_main, c, &ts->topts,
			   &c->task) < 0) {
		free(c);
		iou_close(s, NULL, NULL);
		return;
	}
	iou_task_detach(c->task);
}

static void on_cut(iou_server *srv, iou_stream *s, int err, void *ud)
{
	struct conn *c = iou_stream_data(s);

	(void)srv;
	(void)err;
	(void)ud;
	if (c) /* else its task is closing the stream, which the cut ends */
		iou_task_cancel(c->task);
}


int iou_task_server_start(iou_loop *loop, const struct iou_server_opts *opts,
			  iou_task_handler handler, void *ud,
			  const struct iou_task_opts *topts, iou_server **out)
{
	struct iou_server_opts o;
	struct task_server *ts;
	int ret;

	if (!loop || !handler || !out)
		return -EINVAL;
	if (opts)
		o = *opts;
	else
		iou_server_opts_init(&o);
	ts = calloc(1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	ts->handler = handler;
	ts->ud = ud;
	ts->close_timeout_ms = 10000;
	if (topts)
		ts->topts = *topts;
	else
		iou_task_opts_init(&ts->topts);
	o.on_cut = on_cut;
	ret = iou_server_start(loop, &o, on_conn, ts, out);
	if (ret < 0) {
		free(ts);
		return ret;
	}
	iou__server_set_cleanup(*out, free, ts);
	return 0;
}
