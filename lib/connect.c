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

#include "internal.h"

struct conn_req {
	iou_loop *loop;
	struct iou__op op;
	struct iou__timer deadline;
	struct iou__timer soon;         /* reports an error on the next turn */
	struct iou_stream_opts stream_opts;
	struct sockaddr_storage bind_addr; /* AF_UNSPEC: no bind */
	char *host;
	uint16_t port;
	struct sockaddr_storage *addrs;
	size_t naddrs, next;
	int fd;
	int err;                        /* last error, or the one to report */
	bool resolving;                 /* the helper thread owns a reference */
	bool connecting;
	bool timed_out;
	bool done;                      /* the callback ran */
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

static void req_free(struct conn_req *c)
{
	free(c->host);
	free(c->addrs);
	free(c);
}

/* Undo a request that failed inside the call: no callback. */
static void req_abort(struct conn_req *c)
{
	iou__timer_disarm(c->loop, &c->deadline);
	req_free(c);
}

static void finish(struct conn_req *c, iou_stream *s, int err)
{
	iou__timer_disarm(c->loop, &c->deadline);
	if (iou__timer_active(&c->soon)) {
		iou__timer_disarm(c->loop, &c->soon);
		c->loop->active--;
	}
	c->done = true;
	c->cb(s, err, c->ud);
	if (!c->resolving)
		req_free(c);
}

static void soon_fire(struct iou__timer *t)
{
	struct conn_req *c = IOU__CONTAINER_OF(t, struct conn_req, soon);

	c->loop->active--;
	finish(c, NULL, c->err);
}

/* Report c->err on the next turn: callbacks never run inside the call. */
static void finish_soon(struct conn_req *c)
{
	if (iou__timer_arm(c->loop, &c->soon, 0) == 0)
		c->loop->active++;
	else if (c->in_call)
		c->sync_err = true; /* iou_tcp_connect() returns c->err */
	else
		finish(c, NULL, c->err);
}

static void try_next(struct conn_req *c);

static void connect_complete(struct iou__op *op, const struct io_uring_cqe *cqe)
{
	struct conn_req *c = IOU__CONTAINER_OF(op, struct conn_req, op);
	iou_stream *s;
	int ret;

	c->connecting = false;
	iou__op_done(c->loop);
	if (cqe->res == 0) {
		ret = iou__stream_new(c->loop, c->fd, &c->stream_opts, &s);
		if (ret == 0) {
			finish(c, s, 0);
			return;
		}
		c->err = ret;
	} else {
		c->err = c->timed_out ? -ETIMEDOUT : cqe->res;
	}
	close(c->fd);
	c->fd = -1;
	if (c->timed_out) {
		finish(c, NULL, -ETIMEDOUT);
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
		struct io_uring_sqe *sqe;

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
		sqe = iou__get_sqe(c->loop);
		if (!sqe) {
			c->err = -ENOMEM;
			close(c->fd);
			c->fd = -1;
			break;
		}
		io_uring_prep_connect(sqe, c->fd, sa, addr_len(&c->addrs[c->next]));
		io_uring_sqe_set_data(sqe, &c->op);
		c->connecting = true;
		iou__op_submitted(c->loop);
		return;
	}
	if (!c->err)
		c->err = -EADDRNOTAVAIL;
	finish_soon(c);
}

static void deadline_fire(struct iou__timer *t)
{
	struct conn_req *c = IOU__CONTAINER_OF(t, struct conn_req, deadline);

	c->timed_out = true;
	if (c->connecting) {
		/* its CQE (-ECANCELED) reports the timeout; out of memory for
		 * the cancel: again next turn */
		if (iou__cancel_op(c->loop, &c->op) < 0)
			iou__timer_arm(c->loop, &c->deadline, c->loop->now + 1);
	} else if (!c->done) {
		finish(c, NULL, -ETIMEDOUT); /* still resolving */
	}
}

static int set_addrs(struct conn_req *c, size_t n)
{
	c->addrs = calloc(n, sizeof(*c->addrs));
	if (!c->addrs)
		return -ENOMEM;
	c->naddrs = n;
	return 0;
}

/* Back on the loop's thread with the helper's answer. */
static void resolved(void *arg)
{
	struct conn_req *c = arg;

	c->resolving = false;
	c->loop->active--;
	if (c->done) { /* timed out meanwhile */
		req_free(c);
		return;
	}
	if (c->err) {
		finish(c, NULL, c->err);
		return;
	}
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
	struct conn_req *c = arg;
	struct addrinfo hints = { 0 }, *res = NULL, *ai;
	char port[8];
	size_t n = 0;
	int rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", (unsigned)c->port);
	rc = getaddrinfo(c->host, port, &hints, &res);
	if (rc != 0) {
		c->err = resolve_error(rc);
	} else {
		for (ai = res; ai; ai = ai->ai_next)
			n++;
		if (set_addrs(c, n) < 0) {
			c->err = -ENOMEM;
		} else {
			n = 0;
			for (ai = res; ai; ai = ai->ai_next, n++)
				memcpy(&c->addrs[n], ai->ai_addr, ai->ai_addrlen);
		}
		freeaddrinfo(res);
	}
	/* The loop waits for this post (it counts as work): never give up. */
	while (iou_loop_post(c->loop, resolved, c) < 0) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* A request with its options applied and its deadline running. */
static int req_new(iou_loop *loop, const struct iou_connect_opts *opts,
		   iou_connect_cb cb, void *ud, struct conn_req **out)
{
	struct iou_connect_opts defaults;
	struct conn_req *c;

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
	if (opts->timeout_ms &&
	    iou__timer_arm(loop, &c->deadline,
			   iou__clock_ms() + opts->timeout_ms) < 0) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

int iou__connect_addrs(iou_loop *loop, const struct sockaddr_storage *addrs,
		       size_t n, const struct iou_connect_opts *opts,
		       iou_connect_cb cb, void *ud)
{
	struct conn_req *c;
	int ret;

	if (!loop || !addrs || !n || !cb)
		return -EINVAL;
	ret = req_new(loop, opts, cb, ud, &c);
	if (ret < 0)
		return ret;
	if (set_addrs(c, n) < 0) {
		req_abort(c);
		return -ENOMEM;
	}
	memcpy(c->addrs, addrs, n * sizeof(*addrs));
	c->in_call = true;
	try_next(c);
	c->in_call = false;
	if (c->sync_err) {
		ret = c->err;
		req_abort(c);
		return ret;
	}
	return 0;
}

int iou_tcp_connect(iou_loop *loop, const char *host, uint16_t port,
		    const struct iou_connect_opts *opts, iou_connect_cb cb,
		    void *ud)
{
	struct sockaddr_storage ss;
	struct conn_req *c;
	pthread_attr_t attr;
	pthread_t tid;
	int ret;

	if (!loop || !host || !*host || !cb)
		return -EINVAL;
	if (parse_numeric(host, port, &ss) == 0)
		return iou__connect_addrs(loop, &ss, 1, opts, cb, ud);
	/* A name: resolve it off the loop's thread. */
	ret = req_new(loop, opts, cb, ud, &c);
	if (ret < 0)
		return ret;
	c->port = port;
	c->host = strdup(host);
	if (!c->host) {
		req_abort(c);
		return -ENOMEM;
	}
	c->resolving = true;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	ret = -pthread_create(&tid, &attr, resolver_main, c);
	pthread_attr_destroy(&attr);
	if (ret < 0) {
		req_abort(c);
		return ret;
	}
	loop->active++;
	return 0;
}
