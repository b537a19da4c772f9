/* SPDX-License-Identifier: MIT */
/* Client connect: numeric addresses at once, host names on a helper thread
 * (getaddrinfo blocks), each resolved address tried in turn through the
 * ring, an optional deadline over the whole attempt. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "connect.h"
#include "internal.h"

/* A name look-up on a helper thread.  The thread and the loop share it:
 * whoever of the two lets go last frees it (state, atomic), so that a
 * connect closed during its look-up neither waits for the thread nor
 * keeps the loop running. */
enum { JOB_RUNNING, JOB_ABANDONED, JOB_DONE };

struct resolve_job {
	int state;                      /* JOB_*, atomic */
	bool abandoned_late;            /* let go after the thread posted */
	iou_loop *loop;
	struct conn_req *c;             /* NULL once abandoned */
	uint16_t port;
	int err;
	struct sockaddr_storage *addrs;
	size_t naddrs;
	char host[];
};

/* The connect of a stream in its connecting state (s->conn). */
struct conn_req {
	iou_loop *loop;
	iou_stream *s;
	struct iou__op op;
	struct iou__timer deadline;
	struct iou__timer soon;         /* reports an error on the next turn */
	struct iou_stream_opts stream_opts;
	struct sockaddr_storage bind_addr; /* AF_UNSPEC: no bind */
	struct resolve_job *job;        /* a look-up in progress */
	struct sockaddr_storage *addrs;
	size_t naddrs, next;
	int fd;
	int err;                        /* last error, or the one to report */
	bool connecting;                /* the connect op is the kernel's */
	bool cancel_sent;
	bool timed_out;
	bool in_call;                   /* inside iou_tcp_connect() */
	bool sync_err;                  /* failed there: no callback */
	iou_connect_cb cb;
	void *ud;
};

void iou_connect_opts_init(struct iou_connect_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	iou_stream_opts_init(&o->stream);
}

static int parse_numeric(const char *host, uint16_t port,
			 struct sockaddr_storage *ss)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		return 0;
	}
	return -EINVAL;
}

/* Addresses are AF_INET or AF_INET6 (numeric or from getaddrinfo). */
static socklen_t addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
					   sizeof(struct sockaddr_in);
}

static void job_free(struct resolve_job *j)
{
	free(j->addrs);
	free(j);
}

/* Let go of the look-up: the thread frees the job when it ends, or, if it
 * has already posted its answer, the posted callback does. */
static void job_abandon(struct conn_req *c)
{
	struct resolve_job *j = c->job;

	if (!j)
		return;
	c->job = NULL;
	j->c = NULL;
	if (__atomic_exchange_n(&j->state, JOB_ABANDONED, __ATOMIC_ACQ_REL) ==
	    JOB_DONE) {
		/* The answer is on its way to the loop: keep the loop alive
		 * (and so undestroyed) until it arrived. */
		j->abandoned_late = true;
		c->loop->active++;
	}
}

static void req_free(struct conn_req *c)
{
	iou__timer_disarm(c->loop, &c->deadline);
	iou__timer_disarm(c->loop, &c->soon);
	job_abandon(c);
	free(c->addrs);
	free(c);
}

/* Report the outcome.  A failed stream is released after the callback
 * unless the application closed it (then its close callback runs). */
static void finish(struct conn_req *c, int err)
{
	iou_stream *s = c->s;
	iou_connect_cb cb = c->cb;
	void *ud = c->ud;

	s->conn = NULL;
	s->flags &= ~IOU__S_CONNECTING;
	req_free(c);
	cb(s, err, ud);
	if (err < 0)
		iou__stream_release(s);
}

static void soon_fire(struct iou__timer *t)
{
	struct conn_req *c = IOU__CONTAINER_OF(t, struct conn_req, soon);

	finish(c, c->err);
}

/* Report c->err on the next turn: callbacks never run inside the call. */
static void finish_soon(struct conn_req *c)
{
	if (iou__timer_arm(c->loop, &c->soon, 0) == 0)
		return;
	if (c->in_call)
		c->sync_err = true; /* iou_tcp_connect() returns c->err */
	else
		finish(c, c->err);
}

static void try_next(struct conn_req *c);

static void connect_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct conn_req *c = IOU__CONTAINER_OF(op, struct conn_req, op);
	iou_stream *s = c->s;
	int ret;

	c->connecting = false;
	c->cancel_sent = false;
	s->inflight--;
	iou__op_done(c->loop);
	if (s->flags & IOU__S_CLOSING) {
		close(c->fd);
		finish(c, -ECANCELED);
		iou__stream_op_done(s);
		return;
	}
	if (cqe->res == 0) {
		ret = iou__stream_set_fd(s, c->fd, &c->stream_opts);
		if (ret == 0) {
			finish(c, 0);
			return;
		}
		c->err = ret;
	} else {
		c->err = c->timed_out ? -ETIMEDOUT : cqe->res;
	}
	close(c->fd);
	c->fd = -1;
	if (c->timed_out) {
		finish(c, -ETIMEDOUT);
		return;
	}
	c->next++;
	try_next(c);
}

/* Start a connect to the next address; past the last, report the last
 * address's error. */
static void try_next(struct conn_req *c)
{
	for (; c->next < c->naddrs; c->next++) {
		const struct sockaddr *sa = (struct sockaddr *)&c->addrs[c->next];

		c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0) {
			c->err = -errno;
			continue;
		}
		if (c->bind_addr.ss_family != AF_UNSPEC &&
		    bind(c->fd, (struct sockaddr *)&c->bind_addr,
			 addr_len(&c->bind_addr)) < 0) {
			c->err = -errno;
			close(c->fd);
			c->fd = -1;
			continue;
		}
		if (iou__be_connect(c->loop, &c->op, c->fd, sa,
				    addr_len(&c->addrs[c->next])) < 0) {
			c->err = -ENOMEM;
			close(c->fd);
			c->fd = -1;
			break;
		}
		c->connecting = true;
		c->s->inflight++;
		iou__op_submitted(c->loop);
		return;
	}
	if (!c->err)
		c->err = -EADDRNOTAVAIL;
	finish_soon(c);
}

static void cancel_connect_op(struct conn_req *c)
{
	if (c->connecting && !c->cancel_sent &&
	    iou__cancel_op(c->loop, &c->op, c->fd) == 0)
		c->cancel_sent = true;
}

static void deadline_fire(struct iou__timer *t)
{
	struct conn_req *c = IOU__CONTAINER_OF(t, struct conn_req, deadline);

	c->timed_out = true;
	if (c->connecting) {
		/* its CQE reports the timeout; out of memory for the cancel:
		 * again next turn */
		cancel_connect_op(c);
		if (!c->cancel_sent)
			iou__timer_arm(c->loop, &c->deadline, c->loop->now + 1);
	} else if (c->job) {
		finish(c, -ETIMEDOUT); /* still resolving */
	}
}

/* iou_close() of a connecting stream (at the end of a turn): the connect
 * op is cancelled and its CQE reports -ECANCELED; a look-up is let go of
 * and reported at once. */
void iou__connect_cancel(iou_stream *s)
{
	struct conn_req *c = s->conn;

	if (c->connecting) {
		cancel_connect_op(c);
		if (!c->cancel_sent)
			iou__stream_poke(s); /* out of memory: again */
	} else {
		finish(c, -ECANCELED);
	}
}

static int set_addrs(struct sockaddr_storage **addrs, size_t *naddrs, size_t n)
{
	*addrs = calloc(n, sizeof(**addrs));
	if (!*addrs)
		return -ENOMEM;
	*naddrs = n;
	return 0;
}

/* Back on the loop's thread with the helper's answer. */
static void resolved(void *arg)
{
	struct resolve_job *j = arg;
	struct conn_req *c = j->c;

	if (!c) { /* the connect was closed or timed out meanwhile */
		if (j->abandoned_late)
			j->loop->active--;
		job_free(j);
		return;
	}
	c->job = NULL;
	if (j->err) {
		c->err = j->err;
		job_free(j);
		finish(c, c->err);
		return;
	}
	c->addrs = j->addrs;
	c->naddrs = j->naddrs;
	j->addrs = NULL;
	job_free(j);
	try_next(c);
}

static int resolve_error(int rc)
{
	switch (rc) {
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_SYSTEM:
		return errno ? -errno : -IOU_ERESOLVE;
	default:
		return -IOU_ERESOLVE;
	}
}

static void *resolver_main(void *arg)
{
	struct resolve_job *j = arg;
	struct addrinfo hints = { 0 }, *res = NULL, *ai;
	char port[8];
	size_t n = 0;
	int rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", (unsigned)j->port);
	if (iou__resolve_delay_ms) { /* tests: a slow name server */
		struct timespec ts = { iou__resolve_delay_ms / 1000,
				       (long)(iou__resolve_delay_ms % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
	rc = getaddrinfo(j->host, port, &hints, &res);
	if (rc != 0) {
		j->err = resolve_error(rc);
	} else {
		for (ai = res; ai; ai = ai->ai_next)
			n++;
		if (set_addrs(&j->addrs, &j->naddrs, n) < 0) {
			j->err = -ENOMEM;
		} else {
			n = 0;
			for (ai = res; ai; ai = ai->ai_next, n++)
				memcpy(&j->addrs[n], ai->ai_addr, ai->ai_addrlen);
		}
		freeaddrinfo(res);
	}
	if (__atomic_exchange_n(&j->state, JOB_DONE, __ATOMIC_ACQ_REL) ==
	    JOB_ABANDONED) {
		job_free(j); /* nobody waits: the loop may be gone */
		return NULL;
	}
	/* The loop waits for this post (abandoned_late): never give up. */
	while (iou_loop_post(j->loop, resolved, j) < 0) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* Tests: a look-up that takes this long (a slow name server, without
 * sending a query anywhere). */
unsigned iou__resolve_delay_ms;

/* A stream in its connecting state and its request, options checked, the
 * deadline running. */
static int req_new(iou_loop *loop, const struct iou_connect_opts *opts,
		   iou_connect_cb cb, void *ud, struct conn_req **out)
{
	struct iou_connect_opts defaults;
	struct conn_req *c;
	int ret;

	if (!opts) {
		iou_connect_opts_init(&defaults);
		opts = &defaults;
	}
	if (!iou__stream_opts_valid(&opts->stream))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->op.complete = connect_complete;
	c->fd = -1;
	c->cb = cb;
	c->ud = ud;
	c->stream_opts = opts->stream;
	iou__timer_init(&c->deadline, deadline_fire);
	iou__timer_init(&c->soon, soon_fire);
	if (opts->bind_host &&
	    parse_numeric(opts->bind_host, 0, &c->bind_addr) < 0) {
		free(c);
		return -EINVAL;
	}
	ret = iou__stream_new(loop, -1, &opts->stream, &c->s);
	if (ret < 0) {
		free(c);
		return ret;
	}
	c->s->flags |= IOU__S_CONNECTING;
	c->s->conn = c;
	if (opts->timeout_ms &&
	    iou__timer_arm(loop, &c->deadline,
			   iou__clock_ms() + opts->timeout_ms) < 0) {
		iou__stream_discard(c->s);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

/* Undo a connect that failed inside the call: no callback. */
static void req_abort(struct conn_req *c)
{
	iou_stream *s = c->s;

	req_free(c);
	iou__stream_discard(s);
}

int iou__connect_addrs(iou_loop *loop, const struct sockaddr_storage *addrs,
		       size_t n, const struct iou_connect_opts *opts,
		       iou_connect_cb cb, void *ud, iou_stream **out)
{
	struct conn_req *c;
	iou_stream *s;
	int ret;

	if (!loop || !addrs || !n || !cb)
		return -EINVAL;
	ret = req_new(loop, opts, cb, ud, &c);
	if (ret < 0)
		return ret;
	if (set_addrs(&c->addrs, &c->naddrs, n) < 0) {
		req_abort(c);
		return -ENOMEM;
	}
	memcpy(c->addrs, addrs, n * sizeof(*addrs));
	s = c->s;
	c->in_call = true;
	try_next(c);
	c->in_call = false;
	if (c->sync_err) {
		ret = c->err;
		req_abort(c);
		return ret;
	}
	if (out)
		*out = s;
	return 0;
}

int iou_tcp_connect(iou_loop *loop, const char *host, uint16_t port,
		    const struct iou_connect_opts *opts, iou_connect_cb cb,
		    void *ud, iou_stream **out)
{
	struct sockaddr_storage ss;
	struct resolve_job *j;
	struct conn_req *c;
	pthread_attr_t attr;
	pthread_t tid;
	size_t len;
	int ret;

	if (!loop || !host || !*host || !cb)
		return -EINVAL;
	if (parse_numeric(host, port, &ss) == 0)
		return iou__connect_addrs(loop, &ss, 1, opts, cb, ud, out);
	/* A name: resolve it off the loop's thread. */
	ret = req_new(loop, opts, cb, ud, &c);
	if (ret < 0)
		return ret;
	len = strlen(host);
	j = calloc(1, sizeof(*j) + len + 1);
	if (!j) {
		req_abort(c);
		return -ENOMEM;
	}
	memcpy(j->host, host, len + 1);
	j->loop = loop;
	j->c = c;
	j->port = port;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	ret = -pthread_create(&tid, &attr, resolver_main, j);
	pthread_attr_destroy(&attr);
	if (ret < 0) {
		free(j);
		req_abort(c);
		return ret;
	}
	c->job = j;
	if (out)
		*out = c->s;
	return 0;
}
