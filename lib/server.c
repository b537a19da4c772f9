/* SPDX-License-Identifier: MIT */
/* TCP server: listen, one multishot accept, the registry of open
 * connections, idle timeouts, back-off on fd exhaustion and other lasting
 * accept errors, graceful drain. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "server.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000

struct iou_server {
	iou_loop *loop;
	int fd;
	uint16_t port;
	struct iou__op accept_op;
	bool accept_armed;
	bool accept_cancelled;
	bool shutting_down;
	bool notified;             /* on_shutdown ran */
	struct iou__timer retry;   /* accept back-off (EMFILE, EINVAL, ...) */
	struct iou__timer grace;
	struct iou__timer notify;  /* runs on_shutdown on the next turn */
	unsigned backoff_ms;
	unsigned max_conns;
	unsigned idle_timeout_ms;
	struct iou_stream_opts stream_opts;
	iou_server_event_cb on_shutdown;
	iou_connection_cut_cb on_cut;
	iou_connection_cb on_conn;
	void *ud;
	struct iou__list conns;
	struct iou_server_stats st;
	iou_server_done_cb done_cb;
	void *done_ud;
	void (*cleanup)(void *arg);  /* a layer above (task_server.c) */
	void *cleanup_arg;
};

void iou__server_set_cleanup(iou_server *srv, void (*fn)(void *), void *arg)
{
	srv->cleanup = fn;
	srv->cleanup_arg = arg;
}

void iou_server_opts_init(struct iou_server_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->backlog = 511;
	iou_stream_opts_init(&o->stream);
}

/* Timers that keep the loop running count as work while armed. */
static void work_timer_arm(iou_server *srv, struct iou__timer *t, uint64_t at)
{
	if (!iou__timer_active(t) && iou__timer_arm(srv->loop, t, at) == 0)
		srv->loop->active++;
}

static void work_timer_disarm(iou_server *srv, struct iou__timer *t)
{
	if (iou__timer_active(t)) {
		iou__timer_disarm(srv->loop, t);
		srv->loop->active--;
	}
}

static void arm_accept(iou_server *srv)
{
	if (srv->accept_armed || srv->shutting_down)
		return;
	if (iou__be_accept(srv->loop, &srv->accept_op, srv->fd) < 0) {
		work_timer_arm(srv, &srv->retry, srv->loop->now + BACKOFF_MIN_MS);
		return;
	}
	srv->accept_armed = true;
	srv->accept_cancelled = false;
	iou__op_submitted(srv->loop);
}

static void free_server(iou_server *srv)
{
	work_timer_disarm(srv, &srv->retry);
	work_timer_disarm(srv, &srv->grace);
	work_timer_disarm(srv, &srv->notify);
	if (srv->cleanup)
		srv->cleanup(srv->cleanup_arg);
	free(srv);
}

/* Shutdown ends once the listener's op and every connection are gone. */
static void check_done(iou_server *srv)
{
	iou_server_done_cb cb = srv->done_cb;

	if (!srv->shutting_down)
		return;
	/* The cancel found no SQE in iou_server_shutdown(): again, and if
	 * memory is still short, once more after a pause (retry_fire). */
	if (srv->accept_armed && !srv->accept_cancelled) {
		if (iou__cancel_op(srv->loop, &srv->accept_op, srv->fd) == 0)
			srv->accept_cancelled = true;
		else
			work_timer_arm(srv, &srv->retry,
				       srv->loop->now + BACKOFF_MIN_MS);
	}
	if (!srv->notified || srv->accept_armed || srv->st.open)
		return;
	if (cb)
		cb(srv, srv->st.finished, srv->st.cut, srv->done_ud);
	free_server(srv);
}

/* Cut a connection: its pending callbacks get err, then on_cut tells the
 * application, which still closes it. */
static void cut(iou_server *srv, iou_stream *s, int err)
{
	/* A stream the application closed is closing by itself, unless it
	 * is still flushing (iou_close_graceful): that one is cut too. */
	if ((s->flags & (IOU__S_CUT | IOU__S_CLOSING)) ||
	    (s->flags & (IOU__S_APP_CLOSED | IOU__S_FLUSHING)) ==
		    IOU__S_APP_CLOSED)
		return;
	if (srv->shutting_down)
		srv->st.cut++; /* the server ended it, not the client */
	iou__stream_cut(s, err);
	if (srv->on_cut && !(s->flags & IOU__S_APP_CLOSED))
		srv->on_cut(srv, s, err, srv->ud);
}

/* From the stream's timer.  Receives and sends only store a time stamp;
 * the deadline moves lazily here, so an active connection costs no timer
 * work per operation. */
uint64_t iou__server_idle_check(iou_stream *s)
{
	iou_server *srv = s->server;
	uint64_t due = s->last_active + srv->idle_timeout_ms;

	if (!srv->idle_timeout_ms || (s->flags & (IOU__S_APP_CLOSED | IOU__S_CUT)))
		return 0;
	if (srv->loop->now < due)
		return due;
	srv->st.idle_closed++;
	cut(srv, s, -ETIMEDOUT);
	return 0;
}

static void accept_one(iou_server *srv, int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	iou_stream *s;

	if (srv->shutting_down ||
	    (srv->max_conns && srv->st.open >= srv->max_conns)) {
		close(fd);
		srv->st.refused++;
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 ||
	    iou__stream_new(srv->loop, fd, &srv->stream_opts, &s) < 0) {
		close(fd); /* reset by the peer already, or out of memory */
		return;
	}
	s->server = srv;
	iou__list_add_tail(&srv->conns, &s->server_link);
	srv->st.open++;
	srv->st.accepted++;
	if (srv->idle_timeout_ms)
		iou__stream_timer_at(s, srv->loop->now + srv->idle_timeout_ms);
	srv->on_conn(srv, s, (struct sockaddr *)&peer, srv->ud);
}

/* Errors of one connection, which the next accept does not repeat: it was
 * aborted or reset before we took it, a network error was pending on it,
 * the call was interrupted.  The multishot accept ended; re-arm at once. */
static bool is_transient_error(int err)
{
	switch (-err) {
	case ECONNABORTED:
	case ECONNRESET:
	case EINTR:
	case EAGAIN:
	case EPROTO:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTDOWN:
	case EHOSTUNREACH:
	case ENONET:
	case ENOPROTOOPT:
	case ETIMEDOUT:
		return true;
	}
	return false;
}

static void accept_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	iou_server *srv = IOU__CONTAINER_OF(op, iou_server, accept_op);
	bool more = cqe->flags & IOU__CQE_F_MORE;
	int res = cqe->res;

	if (!more) {
		srv->accept_armed = false;
		iou__op_done(srv->loop);
	}
	if (res >= 0) {
		srv->backoff_ms = 0;
		accept_one(srv, res);
	} else if (res != -ECANCELED && !is_transient_error(res)) {
		/* Out of fds (EMFILE, ENFILE, ENOBUFS, ENOMEM), or an error
		 * every accept would get again (the listening socket was shut
		 * down: EINVAL; EBADF, EPERM, EOPNOTSUPP, ...): pause
		 * accepting (the backlog holds the peers) and retry later,
		 * doubling the pause up to a second, reset by the next
		 * connection; never spin. */
		srv->backoff_ms = srv->backoff_ms ? srv->backoff_ms * 2
						  : BACKOFF_MIN_MS;
		if (srv->backoff_ms > BACKOFF_MAX_MS)
			srv->backoff_ms = BACKOFF_MAX_MS;
		if (more && !srv->accept_cancelled &&
		    iou__cancel_op(srv->loop, &srv->accept_op, srv->fd) == 0)
			srv->accept_cancelled = true;
		if (!srv->shutting_down)
			work_timer_arm(srv, &srv->retry,
				       srv->loop->now + srv->backoff_ms);
	}
	if (srv->shutting_down) {
		check_done(srv);
		return;
	}
	/* The kernel ended the multishot (error, overflow): re-arm, unless a
	 * back-off pause is running. */
	if (!srv->accept_armed && !iou__timer_active(&srv->retry))
		arm_accept(srv);
}

static void retry_fire(struct iou__timer *t)
{
	iou_server *srv = IOU__CONTAINER_OF(t, iou_server, retry);

	srv->loop->active--;
	if (srv->shutting_down)
		check_done(srv); /* the accept's cancel found no SQE */
	else
		arm_accept(srv);
}

static int listen_socket(const struct iou_server_opts *o, uint16_t *port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	int fd, one = 1, ret;

	if (inet_pton(AF_INET, o->host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(o->port);
		len = sizeof(*in);
	} else if (inet_pton(AF_INET6, o->host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(o->port);
		len = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (o->reuseport &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(fd, o->backlog) < 0)
		goto err;
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		goto err;
	*port = ntohs(ss.ss_family == AF_INET ? in->sin_port : in6->sin6_port);
	return fd;
err:
	ret = -errno;
	close(fd);
	return ret;
}

static void grace_fire(struct iou__timer *t);
static void notify_fire(struct iou__timer *t);

int iou_server_start(iou_loop *loop, const struct iou_server_opts *opts,
		     iou_connection_cb on_conn, void *ud, iou_server **out)
{
	struct iou_server_opts defaults;
	iou_server *srv;
	int fd;

	if (!loop || !on_conn || !out)
		return -EINVAL;
	if (!opts) {
		iou_server_opts_init(&defaults);
		opts = &defaults;
	}
	if (!opts->host || opts->backlog < 1 ||
	    !iou__stream_opts_valid(&opts->stream))
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	fd = listen_socket(opts, &srv->port);
	if (fd < 0) {
		free(srv);
		return fd;
	}
	srv->loop = loop;
	srv->fd = fd;
	srv->accept_op.complete = accept_complete;
	srv->max_conns = opts->max_conns;
	srv->idle_timeout_ms = opts->idle_timeout_ms;
	srv->stream_opts = opts->stream;
	srv->on_shutdown = opts->on_shutdown;
	srv->on_cut = opts->on_cut;
	srv->on_conn = on_conn;
	srv->ud = ud;
	iou__list_init(&srv->conns);
	iou__timer_init(&srv->retry, retry_fire);
	iou__timer_init(&srv->grace, grace_fire);
	iou__timer_init(&srv->notify, notify_fire);
	arm_accept(srv);
	if (!srv->accept_armed && !iou__timer_active(&srv->retry)) {
		close(fd);
		free(srv);
		return -ENOMEM;
	}
	*out = srv;
	return 0;
}

uint16_t iou_server_port(const iou_server *srv)
{
	return srv ? srv->port : 0;
}

void iou_server_get_stats(const iou_server *srv, struct iou_server_stats *st)
{
	if (srv && st)
		*st = srv->st;
}

void iou__server_conn_closed(iou_server *srv, iou_stream *s)
{
	iou__list_del(&s->server_link);
	s->server = NULL;
	srv->st.open--;
	if (srv->shutting_down) {
		if (!(s->flags & IOU__S_CUT))
			srv->st.finished++;
		check_done(srv);
	}
}

/* The grace limit passed: cut what is left.  Each cut stream's operations
 * fail and its socket shuts; the server ends when the application has
 * closed the last one. */
static void grace_fire(struct iou__timer *t)
{
	iou_server *srv = IOU__CONTAINER_OF(t, iou_server, grace);
	struct iou__list *n;

	srv->loop->active--;
	for (n = srv->conns.next; n != &srv->conns;) {
		iou_stream *s = IOU__CONTAINER_OF(n, iou_stream, server_link);

		n = n->next; /* callbacks may close s (not free it) */
		cut(srv, s, -ECONNABORTED);
	}
	check_done(srv);
}

static void notify_fire(struct iou__timer *t)
{
	iou_server *srv = IOU__CONTAINER_OF(t, iou_server, notify);

	srv->loop->active--;
	srv->notified = true;
	if (srv->on_shutdown)
		srv->on_shutdown(srv, srv->ud);
	check_done(srv);
}

int iou_server_shutdown(iou_server *srv, unsigned grace_ms,
			iou_server_done_cb cb, void *ud)
{
	struct iou__list *n;

	if (!srv)
		return -EINVAL;
	if (srv->shutting_down)
		return -IOU_ECLOSED;
	srv->shutting_down = true;
	srv->done_cb = cb;
	srv->done_ud = ud;
	/* Stop accepting now: the accept op holds the listening socket until
	 * its cancel completes, so shut the listener down first; from here
	 * connects are refused (and the accept ends with an error). */
	work_timer_disarm(srv, &srv->retry);
	shutdown(srv->fd, SHUT_RD);
	if (srv->accept_armed && !srv->accept_cancelled &&
	    iou__cancel_op(srv->loop, &srv->accept_op, srv->fd) == 0)
		srv->accept_cancelled = true;
	close(srv->fd);
	srv->fd = -1;
	/* Connections the idle timeout cut already count as cut. */
	for (n = srv->conns.next; n != &srv->conns; n = n->next) {
		iou_stream *s = IOU__CONTAINER_OF(n, iou_stream, server_link);

		if (s->flags & IOU__S_CUT)
			srv->st.cut++;
	}
	work_timer_arm(srv, &srv->notify, 0);
	if (srv->st.open)
		work_timer_arm(srv, &srv->grace, srv->loop->now + grace_ms);
	return 0;
}
