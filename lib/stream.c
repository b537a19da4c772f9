/* SPDX-License-Identifier: MIT */
/* A TCP stream's life: open, the end-of-turn work of every stream, the
 * timer that dispatches its deadlines, shutdown, close, graceful close, cut
 * and free.  Its send side is send.c, its receive side receive.c. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "connect.h" /* the connect of a connecting stream */
#include "internal.h"
#include "server.h" /* the server of an accepted stream */

#define DEFAULT_MAX_BUFFERED (256u * 1024u)

void iou_stream_opts_init(struct iou_stream_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->nodelay = 1;
	o->max_buffered = DEFAULT_MAX_BUFFERED;
}

static int apply_opts(int fd, const struct iou_stream_opts *o)
{
	int one = 1;

	if (o->nodelay &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	if (o->keepalive_s > 0) {
		if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
		    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o->keepalive_s,
			       sizeof(o->keepalive_s)) < 0)
			return -errno;
	}
	if (o->sndbuf > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, sizeof(o->sndbuf)) < 0)
		return -errno;
	if (o->rcvbuf > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof(o->rcvbuf)) < 0)
		return -errno;
	return 0;
}

bool iou__stream_opts_valid(const struct iou_stream_opts *o)
{
	return o->keepalive_s >= 0 && o->sndbuf >= 0 && o->rcvbuf >= 0 &&
	       o->max_buffered >= 1 && o->max_buffered <= (1ul << 30);
}

static void aux_complete(struct iou__op *op, const struct iou__cqe_rec *cqe);
static void stream_timer_fire(struct iou__timer *t);

int iou__stream_new(iou_loop *loop, int fd, const struct iou_stream_opts *o,
		    iou_stream **out)
{
	struct iou_stream_opts defaults;
	iou_stream *s;
	int ret;

	if (!o) {
		iou_stream_opts_init(&defaults);
		o = &defaults;
	}
	if (!iou__stream_opts_valid(o))
		return -EINVAL;
	ret = fd >= 0 ? apply_opts(fd, o) : 0;
	if (ret < 0)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->fd = fd;
	s->recv_op.complete = iou__recv_complete;
	s->send_op.complete = iou__send_complete;
	s->aux_op.complete = aux_complete;
	iou__rxq_init(&s->rxq);
	s->max_buffered = (uint32_t)o->max_buffered;
	s->last_active = loop->now;
	iou__list_init(&s->deferred_link);
	iou__list_init(&s->starved_link);
	iou__list_init(&s->holder_link);
	iou__list_init(&s->server_link);
	iou__list_init(&s->fwd_sources);
	iou__timer_init(&s->timer, stream_timer_fire);
	loop->active++; /* an open stream is work: see iou_loop_alive() */
	*out = s;
	return 0;
}

int iou__stream_set_fd(iou_stream *s, int fd, const struct iou_stream_opts *o)
{
	int ret = apply_opts(fd, o);

	if (ret == 0)
		s->fd = fd;
	return ret;
}

int iou_stream_open(iou_loop *loop, int fd, const struct iou_stream_opts *o,
		    iou_stream **out)
{
	struct iou_stream_opts not_tcp;
	int type, domain, fl, ret;
	socklen_t len = sizeof(type);

	if (!loop || fd < 0 || !out)
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	if (type != SOCK_STREAM)
		return -EINVAL;
	len = sizeof(domain);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return -errno;
	if (domain != AF_INET && domain != AF_INET6) {
		/* A Unix-domain stream, say: TCP_NODELAY and keepalive mean
		 * nothing there (and fail), the other options apply. */
		if (o)
			not_tcp = *o;
		else
			iou_stream_opts_init(&not_tcp);
		not_tcp.nodelay = 0;
		not_tcp.keepalive_s = 0;
		o = &not_tcp;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	ret = iou__stream_new(loop, fd, o, out);
	/* io_uring waits for readiness itself; on an O_NONBLOCK socket it
	 * would hand -EAGAIN back to us instead (seen with sends on rings
	 * without DEFER_TASKRUN). */
	if (ret == 0 && (fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return ret;
}

/* ---- end-of-turn processing -------------------------------------------- */

void iou__stream_poke(iou_stream *s)
{
	if (s->flags & IOU__S_DEFERRED)
		return;
	s->flags |= IOU__S_DEFERRED;
	iou__list_add_tail(&s->loop->deferred, &s->deferred_link);
}

static int cancel_inflight(iou_stream *s);
static void close_progress(iou_stream *s);
static void flush_progress(iou_stream *s);

/* SHUT_RD ends the receive; out of memory for the cancel, the stream
 * tries again at the end of the next turn. */
static void cancel_recv_for_shutdown(iou_stream *s)
{
	if (iou__cancel_op(s->loop, &s->recv_op, s->fd) == 0)
		s->flags |= IOU__S_RECV_CANCEL;
	else
		iou__stream_poke(s);
}

static void stream_process(iou_stream *s)
{
	if (s->flags & IOU__S_CLOSING) {
		close_progress(s);
		return;
	}
	if (s->flags & IOU__S_FLUSHING) {
		flush_progress(s);
		return;
	}
	if (s->read_kind != IOU__RD_NONE) {
		iou__read_progress(s);
		if (s->flags & IOU__S_CLOSING) {
			/* a read callback closed it: no new send */
			iou__stream_poke(s);
			return;
		}
	}
	if ((s->flags & IOU__S_RECV_WANTED) && !(s->flags & IOU__S_STARVED))
		iou__recv_arm(s);
	if (s->wq_head && !(s->flags & IOU__S_SEND_ARMED))
		iou__start_send(s);
	iou__shutdown_write_if_due(s);
	if ((s->flags & (IOU__S_RD_SHUT | IOU__S_RECV_ARMED | IOU__S_RECV_CANCEL)) ==
	    (IOU__S_RD_SHUT | IOU__S_RECV_ARMED))
		cancel_recv_for_shutdown(s);
}

/* Starved streams (their multishot recv ended with -ENOBUFS) re-arm once
 * buffers are free again.  If every buffer sits in some stream's queue,
 * those streams copy their bytes out so that no stream waits forever for a
 * buffer that another, idle, stream holds.  (At the end of a turn: no read
 * callback holds a pointer into a queue.) */
static void feed_the_starved(iou_loop *loop)
{
	struct iou__bufring *b = &loop->bufs;
	struct iou__list *n;

	if (iou__list_empty(&loop->starved))
		return;
	iou__bufring_grow(loop); /* the ring was too small for the load */
	if (b->out >= b->buf_count) {
		for (n = loop->holders.next; n != &loop->holders;) {
			iou_stream *h = IOU__CONTAINER_OF(n, iou_stream, holder_link);

			n = n->next;
			iou__rxq_spill_all(&loop->pool, &h->rxq);
			if (h->rxq.head == IOU__SEG_NONE)
				iou__list_del(&h->holder_link);
		}
		if (b->out >= b->buf_count)
			return; /* no memory for the spills, or forwards hold
				 * a tiny pool (fwd_max): buffers come back */
	}
	while (!iou__list_empty(&loop->starved)) {
		iou_stream *s = IOU__CONTAINER_OF(loop->starved.next, iou_stream,
						   starved_link);

		iou__list_del(&s->starved_link);
		s->flags &= ~IOU__S_STARVED;
		iou__recv_arm(s);
	}
}

void iou__streams_turn_end(iou_loop *loop)
{
	struct iou__list batch;

	/* A few passes over the streams poked so far: the work a pass causes
	 * (a write queued from a read callback) usually still makes this
	 * turn's submit; anything left goes to the next turn, which then does
	 * not block.  Bounds the work of one turn. */
	for (int pass = 0; pass < 4 && !iou__list_empty(&loop->deferred); pass++) {
		batch = loop->deferred;
		batch.next->prev = &batch;
		batch.prev->next = &batch;
		iou__list_init(&loop->deferred);
		while (!iou__list_empty(&batch)) {
			iou_stream *s = IOU__CONTAINER_OF(batch.next, iou_stream,
							   deferred_link);

			iou__list_del(&s->deferred_link);
			s->flags &= ~IOU__S_DEFERRED;
			stream_process(s);
		}
	}
	feed_the_starved(loop);
}

/* ---- deadlines ---------------------------------------------------------- */

void iou__stream_timer_at(iou_stream *s, uint64_t when)
{
	/* A move within the heap cannot fail; a first arm may (no memory),
	 * which iou__stream_timer_reserve() rules out where it matters. */
	if (!iou__timer_active(&s->timer) || when < s->timer.deadline)
		iou__timer_arm(s->loop, &s->timer, when);
}

int iou__stream_timer_reserve(iou_stream *s)
{
	if (iou__timer_active(&s->timer))
		return 0;
	return iou__timer_arm(s->loop, &s->timer, IOU__TIMER_NEVER);
}

static void close_deadline_passed(iou_stream *s);

static void stream_timer_fire(struct iou__timer *t)
{
	iou_stream *s = IOU__CONTAINER_OF(t, iou_stream, timer);
	uint64_t now = s->loop->now, next = IOU__TIMER_NEVER, w, idle = 0;

	if (s->flags & IOU__S_CLOSING)
		return; /* the close fails what is left */
	if (s->read_deadline && s->read_deadline <= now) {
		s->read_deadline = 0;
		iou__read_deadline_passed(s);
	}
	if (s->close_deadline && s->close_deadline <= now) {
		s->close_deadline = 0;
		close_deadline_passed(s);
	}
	w = iou__writes_deadline_check(s);
	if (s->server)
		idle = iou__server_idle_check(s);
	/* The callbacks above may have set new deadlines (and armed the
	 * timer): keep the earliest of all. */
	if (s->read_deadline)
		next = s->read_deadline;
	if (s->close_deadline && s->close_deadline < next)
		next = s->close_deadline;
	if (w && w < next)
		next = w;
	if (idle && idle < next)
		next = idle;
	if (next != IOU__TIMER_NEVER)
		iou__stream_timer_at(s, next);
	else if (s->read_timeout_ms || s->write_timeout_ms)
		iou__stream_timer_reserve(s); /* keep the place: cannot fail */
}

/* ---- shutdown and close ------------------------------------------------- */

int iou_shutdown(iou_stream *s, int how)
{
	if (!s || (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR))
		return -EINVAL;
	if (s->flags & (IOU__S_CLOSING | IOU__S_FLUSHING))
		return -IOU_ECLOSED;
	if ((s->flags & IOU__S_CONNECTING) || s->fd < 0)
		return -ENOTCONN;
	/* Fed bytes go out before the FIN, never silently dropped. */
	if (how != SHUT_RD && !(s->flags & IOU__S_WR_SHUT) && s->feed_len &&
	    !s->wr_err) {
		int ret = iou__queue_drain(s, NULL, NULL);

		if (ret < 0)
			return ret;
	}
	if (how != SHUT_WR && !(s->flags & IOU__S_RD_SHUT)) {
		s->flags |= IOU__S_RD_SHUT;
		if ((s->flags & (IOU__S_RECV_ARMED | IOU__S_RECV_CANCEL)) ==
		    IOU__S_RECV_ARMED)
			cancel_recv_for_shutdown(s);
		if (s->flags & IOU__S_STARVED) {
			iou__list_del(&s->starved_link);
			s->flags &= ~IOU__S_STARVED;
		}
		iou__stream_poke(s); /* the pending read fails */
	}
	if (how != SHUT_RD) {
		s->flags |= IOU__S_WR_SHUT;
		iou__shutdown_write_if_due(s);
	}
	return 0;
}

/* The FIN's wait ends: with its op's result, or a close's or cut's. */
void iou__shutdown_write_if_due(iou_stream *s)
{
	if ((s->flags & (IOU__S_WR_SHUT | IOU__S_WR_SHUT_SENT | IOU__S_CLOSING)) !=
		    IOU__S_WR_SHUT ||
	    s->wq_head)
		return;
	if (s->wr_err && (s->flags & IOU__S_FLUSHING))
		return; /* bytes were lost: flush_progress resets instead */
	if (iou__be_shutdown(s->loop, &s->aux_op, s->fd, SHUT_WR) < 0) {
		iou__stream_poke(s); /* retry: the FIN must not get lost */
		return;
	}
	s->flags |= IOU__S_WR_SHUT_SENT;
	s->inflight++;
	iou__op_submitted(s->loop);
}

static void fin_done(iou_stream *s, int res)
{
	iou_write_cb cb = s->fin_cb;

	if (!cb)
		return;
	s->fin_cb = NULL;
	cb(s, res, s->fin_ud);
}

int iou__shutdown_wait(iou_stream *s, iou_write_cb cb, void *ud)
{
	int ret;

	if (!s || !cb)
		return -EINVAL;
	if (s->fin_cb)
		return -EBUSY;
	/* A cut stream's FIN was its shut socket: no op will come back. */
	if (s->flags & IOU__S_CUT)
		return s->wr_err ? s->wr_err : -IOU_ECLOSED;
	ret = iou_shutdown(s, SHUT_WR);
	if (ret < 0)
		return ret;
	if (s->flags & IOU__S_WR_SHUT_DONE)
		return 1;
	s->fin_cb = cb;
	s->fin_ud = ud;
	return 0;
}

static void stream_abort(iou_stream *s)
{
	if (s->flags & IOU__S_CLOSING)
		return;
	s->flags |= IOU__S_CLOSING;
	iou__stream_poke(s);
}

int iou_close(iou_stream *s, iou_close_cb cb, void *ud)
{
	if (!s)
		return -EINVAL;
	if (s->flags & IOU__S_APP_CLOSED)
		return -IOU_ECLOSED;
	s->flags |= IOU__S_APP_CLOSED;
	s->close_cb = cb;
	s->close_ud = ud;
	stream_abort(s);
	return 0;
}

/* Whether bytes would be lost by a plain FIN: queued or fed and not sent,
 * sent but not acknowledged... (SIOCOUTQ), or received and not read. */
static bool bytes_left(const iou_stream *s)
{
	int unsent = 0;

	if (s->wq_head || s->feed_len || iou__rxq_len(&s->rxq))
		return true;
	return ioctl(s->fd, SIOCOUTQ, &unsent) == 0 && unsent > 0;
}

/* The peer must not take a cut for the end of the data: reset when bytes
 * were left behind.  connect(AF_UNSPEC) disconnects a TCP socket (with a
 * RST from an established state) and keeps the fd, which stays the
 * application's until iou_close(). */
/* From now on, the close (or a disconnect) sends a reset, not a FIN. */
static int reset_on_close(iou_stream *s)
{
	struct linger lg = { 1, 0 };

	return setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void cut_socket(iou_stream *s)
{
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	if (bytes_left(s) && reset_on_close(s) == 0 &&
	    connect(s->fd, &sa, sizeof(sa)) == 0)
		return;
	shutdown(s->fd, SHUT_RDWR);
}

/* ---- graceful close ----------------------------------------------------- */

/* Everything queued went out, then the FIN; the receive side discards what
 * still comes until the peer's end of file (so that unread bytes do not
 * turn the close into a reset that could destroy the answer at the peer,
 * nginx's lingering close), then the fd closes as with iou_close(). */
static void flush_progress(iou_stream *s)
{
	if (s->read_kind != IOU__RD_NONE)
		iou__read_fail(s, -ECANCELED);
	iou__forward_sources_fail(s, -IOU_ECLOSED);
	iou__rxq_clear(&s->loop->pool, &s->rxq);
	if (s->flags & IOU__S_CUT) {
		stream_abort(s);
		return;
	}
	if (s->wr_err && !(s->flags & IOU__S_WR_SHUT_SENT)) {
		/* Writes failed (a write timeout, say): bytes were lost, so
		 * no FIN that would pass for the end of the data. */
		reset_on_close(s);
		stream_abort(s);
		return;
	}
	if (s->wq_head && !(s->flags & IOU__S_SEND_ARMED))
		iou__start_send(s);
	iou__shutdown_write_if_due(s);
	if (!(s->flags & (IOU__S_STARVED | IOU__S_RECV_ARMED)))
		iou__recv_arm(s);
	if (s->wq_head || !(s->flags & IOU__S_WR_SHUT_DONE))
		return;
	/* A starved receive still lingers: feed_the_starved() re-arms it. */
	if ((s->flags & (IOU__S_EOF | IOU__S_RD_SHUT)) || s->rd_err ||
	    !(s->flags & (IOU__S_RECV_ARMED | IOU__S_STARVED)))
		stream_abort(s);
}

static void close_deadline_passed(iou_stream *s)
{
	if (!(s->flags & IOU__S_FLUSHING) || (s->flags & IOU__S_CLOSING))
		return;
	if (!s->wr_err)
		s->wr_err = -ETIMEDOUT;
	/* Bytes left behind: the close resets, the peer cannot take it for
	 * the end of the data. */
	if (bytes_left(s))
		reset_on_close(s);
	stream_abort(s);
}

int iou_close_graceful(iou_stream *s, unsigned timeout_ms, iou_close_cb cb,
		       void *ud)
{
	if (!s)
		return -EINVAL;
	if (s->flags & IOU__S_APP_CLOSED)
		return -IOU_ECLOSED;
	if ((s->flags & (IOU__S_CLOSING | IOU__S_CUT | IOU__S_CONNECTING)) ||
	    s->fd < 0)
		return iou_close(s, cb, ud); /* nothing can be sent */
	if (timeout_ms && iou__stream_timer_reserve(s) < 0)
		return -ENOMEM;
	if (s->feed_len && !s->wr_err && !(s->flags & IOU__S_WR_SHUT)) {
		int ret = iou__queue_drain(s, NULL, NULL);

		if (ret < 0)
			return ret;
	}
	if (timeout_ms) {
		s->close_deadline = iou__clock_ms() + timeout_ms;
		iou__stream_timer_at(s, s->close_deadline);
	}
	s->flags |= IOU__S_APP_CLOSED | IOU__S_FLUSHING | IOU__S_WR_SHUT |
		    IOU__S_RECV_WANTED;
	s->close_cb = cb;
	s->close_ud = ud;
	iou__stream_poke(s);
	return 0;
}

void iou__stream_cut(iou_stream *s, int err)
{
	if (s->flags & (IOU__S_CLOSING | IOU__S_CUT))
		return;
	cut_socket(s);
	s->flags |= IOU__S_CUT | IOU__S_RD_SHUT | IOU__S_WR_SHUT |
		    IOU__S_WR_SHUT_SENT;
	if (!s->wr_err)
		s->wr_err = err;
	if (s->flags & IOU__S_STARVED) {
		iou__list_del(&s->starved_link);
		s->flags &= ~IOU__S_STARVED;
	}
	/* Ops in the kernel end with their CQEs (the socket is shut down:
	 * soon), the writes behind a send in flight fail with it. */
	cancel_inflight(s);
	if (!(s->flags & IOU__S_SEND_ARMED))
		iou__fail_writes(s, err);
	if (s->read_kind != IOU__RD_NONE)
		iou__read_fail(s, err);
	fin_done(s, err);
	iou__forward_sources_fail(s, -IOU_ECLOSED);
	iou__rxq_clear(&s->loop->pool, &s->rxq);
	/* A flushing stream has no operation left to come back through
	 * (its starved receive left the list above): let it close. */
	if (s->flags & IOU__S_FLUSHING)
		iou__stream_poke(s);
}

static void stream_free(iou_stream *s);

void iou__stream_discard(iou_stream *s)
{
	stream_free(s);
}

void iou__stream_release(iou_stream *s)
{
	if (s->flags & IOU__S_APP_CLOSED)
		return;
	s->flags |= IOU__S_APP_CLOSED;
	stream_abort(s);
}

static void stream_free(iou_stream *s)
{
	iou_loop *loop = s->loop;

	iou__rxq_clear(&loop->pool, &s->rxq);
	if (iou__list_linked(&s->holder_link))
		iou__list_del(&s->holder_link);
	if (iou__list_linked(&s->starved_link))
		iou__list_del(&s->starved_link);
	if (s->flags & IOU__S_DEFERRED)
		iou__list_del(&s->deferred_link);
	iou__timer_disarm(loop, &s->timer);
	if (s->close_cb)
		s->close_cb(s, s->close_ud);
	iou__blk_put(&loop->blocks, s->feed, s->feed_cap);
	if (s->gather)
		iou__blk_put(&loop->blocks, s->gather, s->gather->cap);
	if (s->read_kind == IOU__RD_UNTIL && s->sep != s->sep_inline)
		iou__blk_put(&loop->blocks, s->sep, s->sep_cap);
	/* Last: the server's done callback, which frees the server, comes
	 * after this stream's close callback. */
	if (s->server)
		iou__server_conn_closed(s->server, s);
	free(s);
	loop->active--;
}

static void aux_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	iou_stream *s = IOU__CONTAINER_OF(op, iou_stream, aux_op);

	s->inflight--;
	iou__op_done(s->loop);
	if (s->flags & IOU__S_CLOSE_SENT) {
		stream_free(s);
		return;
	}
	if (s->flags & IOU__S_CLOSING) {
		iou__stream_op_done(s);
		return;
	}
	s->flags |= IOU__S_WR_SHUT_DONE;
	if (s->flags & IOU__S_FLUSHING)
		iou__stream_poke(s);
	fin_done(s, cqe->res);
}

/* Cancel the stream's receive and send by their user_data: the kernel
 * finds each through a hash, where a cancel by fd scans every armed poll of
 * the ring (closing N of N open streams was O(N^2)).  A shutdown in flight
 * ends by itself.  Cancelling an op again is harmless (-ENOENT). */
int iou__cancel_inflight_send(iou_stream *s)
{
	return iou__cancel_op(s->loop, &s->send_op, s->fd);
}

static int cancel_inflight(iou_stream *s)
{
	int ret = 0;

	if (s->flags & IOU__S_RECV_ARMED)
		ret = iou__cancel_op(s->loop, &s->recv_op, s->fd);
	if (ret == 0 && (s->flags & IOU__S_SEND_ARMED))
		ret = iou__cancel_op(s->loop, &s->send_op, s->fd);
	return ret;
}

/* Close in steps: fail the pending read, cancel its ops, fail
 * the writes not yet in the kernel, and once the last op's CQE is in, close
 * the fd through the ring; its CQE frees the stream. */
static void close_progress(iou_stream *s)
{
	if (s->flags & IOU__S_CONNECTING) {
		iou__connect_cancel(s);
		if (s->flags & IOU__S_CONNECTING)
			return; /* the connect op's CQE comes back here */
	}
	if (s->read_kind != IOU__RD_NONE)
		iou__read_fail(s, -ECANCELED);
	fin_done(s, -IOU_ECLOSED);
	iou__forward_sources_fail(s, -IOU_ECLOSED);
	if (s->flags & IOU__S_STARVED) {
		iou__list_del(&s->starved_link);
		s->flags &= ~IOU__S_STARVED;
	}
	iou__rxq_clear(&s->loop->pool, &s->rxq);
	if (s->inflight) {
		if (!(s->flags & IOU__S_CANCEL_SENT)) {
			if (cancel_inflight(s) == 0)
				s->flags |= IOU__S_CANCEL_SENT;
			else
				iou__stream_poke(s); /* no SQE: retry, or a
						      * multishot recv runs on */
		}
		return; /* iou__stream_op_done() comes back here */
	}
	iou__fail_writes(s, s->wr_err ? s->wr_err : -ECANCELED);
	if (s->fd < 0) { /* closed while connecting: no fd of its own */
		stream_free(s);
		return;
	}
	if (s->flags & IOU__S_CLOSE_SENT)
		return;
	if (iou__be_close(s->loop, &s->aux_op, s->fd) < 0) {
		iou__stream_poke(s);
		return;
	}
	s->flags |= IOU__S_CLOSE_SENT;
	s->inflight++;
	iou__op_submitted(s->loop);
}

void iou__stream_op_done(iou_stream *s)
{
	if ((s->flags & IOU__S_CLOSING) && !s->inflight)
		iou__stream_poke(s);
}

/* ---- accessors ---------------------------------------------------------- */

int iou_stream_set_read_timeout(iou_stream *s, unsigned ms)
{
	if (!s)
		return -EINVAL;
	if (s->flags & IOU__S_CLOSING)
		return -IOU_ECLOSED; /* also from the close callback */
	if (ms && iou__stream_timer_reserve(s) < 0)
		return -ENOMEM;
	s->read_timeout_ms = ms;
	return 0;
}

int iou_stream_set_write_timeout(iou_stream *s, unsigned ms)
{
	if (!s)
		return -EINVAL;
	if (s->flags & IOU__S_CLOSING)
		return -IOU_ECLOSED; /* also from the close callback */
	if (ms && iou__stream_timer_reserve(s) < 0)
		return -ENOMEM;
	s->write_timeout_ms = ms;
	return 0;
}

size_t iou_write_queued(const iou_stream *s)
{
	return s ? s->wq_bytes : 0;
}

void iou_stream_set_data(iou_stream *s, void *data)
{
	if (s)
		s->data = data;
}

void *iou_stream_data(const iou_stream *s)
{
	return s ? s->data : NULL;
}

iou_loop *iou_stream_loop(const iou_stream *s)
{
	return s ? s->loop : NULL;
}

int iou_stream_fd(const iou_stream *s)
{
	return s ? s->fd : -EINVAL;
}

static int address_of(const iou_stream *s, char *host, size_t hostlen,
		      uint16_t *port, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int ret;

	if (!s || !host || !hostlen)
		return -EINVAL;
	ret = peer ? getpeername(s->fd, (struct sockaddr *)&ss, &len)
		   : getsockname(s->fd, (struct sockaddr *)&ss, &len);
	if (ret < 0)
		return -errno;
	return iou_sockaddr_text((struct sockaddr *)&ss, host, hostlen, port);
}

int iou_peer_address(const iou_stream *s, char *host, size_t hostlen,
		     uint16_t *port)
{
	return address_of(s, host, hostlen, port, true);
}

int iou_local_address(const iou_stream *s, char *host, size_t hostlen,
		      uint16_t *port)
{
	return address_of(s, host, hostlen, port, false);
}
