/* SPDX-License-Identifier: MIT */
/* The stream layer's internal declarations: streams (stream.c, send.c,
 * receive.c, forward.c), what the server (server.h) and connect (connect.h)
 * build on.  Built on the loop layer, loop_int.h; never installed. */
#ifndef IOU_INTERNAL_H
#define IOU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "iou.h"
#include "loop_int.h"
#include "rxq.h"

/* ---- streams ------------------------------------------------------------ */

/* A queued write; pooled per loop, so the steady state allocates nothing. */
struct iou__write {
	struct iou__write *next;   /* queue (or freelist) link, first member */
	const unsigned char *buf;
	size_t len;
	size_t done;
	iou_write_cb cb;
	void *ud;
	iou_stream *cb_stream;     /* who the callback is for; NULL: dropped */
	unsigned char *owned;      /* drain: the fed bytes, owned */
	size_t owned_cap;
	uint32_t bid;              /* forward: provided buffer to give back */
	uint8_t kind;
	uint64_t deadline;         /* loop clock; 0: none (write timeout) */
};

enum iou__read_kind {
	IOU__RD_NONE,
	IOU__RD_SOME,     /* iou_read */
	IOU__RD_EXACTLY,
	IOU__RD_PEEK,
	IOU__RD_UNTIL,
	IOU__RD_FORWARD,  /* waiting for bytes to forward */
	IOU__RD_FORWARDING, /* bytes handed to the writer of `to` */
	IOU__RD_INTO,     /* iou_read_exactly_into */
	IOU__RD_VIEW,     /* iou__read_view */
};

#define IOU__SEP_INLINE 16
/* Writes gathered into one sendmsg: one send in flight per socket, but not
 * one write per send. */
#define IOU__GATHER_MAX 64

struct iou__gather {
	struct msghdr msg;
	struct iovec iov[IOU__GATHER_MAX];
	unsigned n;                 /* writes in the sendmsg in flight */
	size_t cap;                 /* of this block (iou__blk_get) */
};

/* stream flags */
enum {
	IOU__S_RECV_WANTED   = 1u << 0,  /* a read was issued once: keep receiving */
	IOU__S_RECV_ARMED    = 1u << 1,  /* the multishot recv is in flight */
	IOU__S_RECV_CANCEL   = 1u << 2,  /* a cancel for it was sent */
	IOU__S_STARVED       = 1u << 3,  /* ended with -ENOBUFS, waits for buffers */
	IOU__S_EOF           = 1u << 4,
	IOU__S_RD_SHUT       = 1u << 5,
	IOU__S_WR_SHUT       = 1u << 6,  /* SHUT_WR asked: no new writes */
	IOU__S_WR_SHUT_SENT  = 1u << 7,
	IOU__S_SEND_ARMED    = 1u << 8,
	IOU__S_CLOSING       = 1u << 9,
	IOU__S_CANCEL_SENT   = 1u << 10,
	IOU__S_CLOSE_SENT    = 1u << 11,
	IOU__S_DELIVERING    = 1u << 12, /* inside a read callback */
	IOU__S_DEFERRED      = 1u << 13, /* on loop->deferred */
	IOU__S_APP_CLOSED    = 1u << 14, /* the application called iou_close */
	IOU__S_CUT           = 1u << 15, /* cut by its server (idle, grace) */
	IOU__S_RECV_LIMITED  = 1u << 16, /* the recv in flight has a byte limit */
	IOU__S_READ_CANCEL   = 1u << 17, /* iou_read_cancel() on the pending read */
	IOU__S_FLUSHING      = 1u << 18, /* iou_close_graceful(): sending the rest */
	IOU__S_WR_SHUT_DONE  = 1u << 19, /* the FIN's shutdown op completed */
	IOU__S_CONNECTING    = 1u << 20, /* iou_tcp_connect() in progress: conn */
};

/* Every idle connection costs one of these: keep it small (issue 14: at most
 * 512 bytes an idle connection, on both backends; epoll adds 72 of its own,
 * see lib/epoll.c).  The pending read's per-kind fields share a union, valid
 * only while read_kind is theirs. */
struct iou_stream {
	iou_loop *loop;
	int fd;
	uint32_t flags;
	int rd_err;                 /* receive error, reported after the data */
	int wr_err;                 /* sticky write error */
	unsigned inflight;          /* this stream's ops in the kernel */
	uint16_t send_n;            /* writes covered by the send in flight
				       (<= IOU__GATHER_MAX) */
	uint8_t read_kind;          /* of the one pending read */

	struct iou__op recv_op;
	struct iou__op send_op;
	struct iou__op aux_op;      /* shutdown, close */

	struct iou__rxq rxq;         /* received bytes (rxq.h) */
	uint32_t max_buffered;      /* <= 1 << 30 (iou__stream_opts_valid) */
	uint32_t seplen;            /* read_until: <= max <= max_buffered */
	size_t delivering;          /* bytes a read callback got (consumed
				       when it returns) */
	uint64_t last_active;       /* loop clock of the last bytes received
				       or sent (the server's idle timeout) */

	/* deadlines of operations, ms from their start (0: none) */
	unsigned read_timeout_ms, write_timeout_ms;
	uint64_t read_deadline;     /* the pending read's, 0: none */
	uint64_t close_deadline;    /* iou_close_graceful()'s, 0: none */
	/* One timer for every deadline of the stream (the pending read's,
	 * each write's, the graceful close's, the server's idle timeout): it
	 * fires at or before the earliest and re-arms for the next, so
	 * starting an operation rarely moves it. */
	struct iou__timer timer;

	/* the one pending read */
	union {
		size_t read_n;      /* n, or max for read/read_until/forward */
		size_t fwd_total;   /* forwarding: the bytes handed to fwd_to
				       (read_n is spent then) */
	};
	union {
		iou_read_cb read_cb;
		iou_read_into_cb into_cb;
		iou_write_cb fwd_cb;
	};
	void *read_ud;
	union {
		struct {            /* IOU__RD_UNTIL */
			size_t scan_pos; /* bytes known to hold no match */
			unsigned char *sep; /* sep_inline or a block */
			union {
				unsigned char sep_inline[IOU__SEP_INLINE];
				size_t sep_cap; /* of the block */
			};
		};
		struct {            /* IOU__RD_FORWARD, IOU__RD_FORWARDING */
			iou_stream *fwd_to;
			struct iou__write *fwd_req; /* the forward write in
						       flight on fwd_to */
			struct iou__list fwd_link; /* in fwd_to->fwd_sources */
		};
		struct {            /* IOU__RD_INTO */
			unsigned char *into_buf; /* the caller's buffer */
			size_t into_got; /* bytes stored in it so far */
		};
		struct iou__held *view_dst; /* IOU__RD_VIEW: where the bytes go */
	};
	struct iou__list fwd_sources; /* streams with a forward into this one */

	/* writes */
	struct iou__write *wq_head, *wq_tail;
	size_t wq_bytes;            /* queued, not yet sent */
	unsigned char *feed;
	size_t feed_len, feed_cap;
	struct iou__gather *gather; /* allocated on the first gathered send */

	struct iou__list deferred_link;
	struct iou__list starved_link;
	struct iou__list holder_link;

	iou_close_cb close_cb;
	void *close_ud;
	void *data;
	iou_write_cb fin_cb;        /* iou__shutdown_wait(): the FIN's op */
	void *fin_ud;

	struct conn_req *conn;      /* connect.c, while connecting */

	/* set by the server for the connections it accepted */
	iou_server *server;
	struct iou__list server_link;
};
/* With malloc's 8-byte header, a 440-byte chunk at most: 512 with epoll's. */
_Static_assert(sizeof(struct iou_stream) <= 432, "iou_stream grew past 432 B");

/* stream.c */
bool iou__stream_opts_valid(const struct iou_stream_opts *o);
/* A stream on fd with opts applied; fd -1: a connecting stream (no fd
 * yet, see iou__stream_set_fd). */
int iou__stream_new(iou_loop *loop, int fd, const struct iou_stream_opts *o,
		    iou_stream **out);
/* Give a connecting stream its connected fd; applies o. */
int iou__stream_set_fd(iou_stream *s, int fd, const struct iou_stream_opts *o);
/* Free a stream that never had an op (a connect failed in its call). */
void iou__stream_discard(iou_stream *s);
/* A connect failed and its callback ran: the stream goes unless the
 * application closed it (then the close goes on). */
void iou__stream_release(iou_stream *s);
void iou__stream_poke(iou_stream *s);      /* process at the end of the turn */
void iou__stream_op_done(iou_stream *s);   /* one of its ops ended */
/* The server cuts the stream (idle timeout, grace limit): its pending
 * operations fail with err, later calls get IOU_ECLOSED, the socket is shut
 * down (reset if bytes were left unsent or unread); the memory stays the
 * application's until iou_close(). */
void iou__stream_cut(iou_stream *s, int err);
void iou__streams_turn_end(iou_loop *loop);
/* A deadline of the stream at `when`: its timer fires by then. */
void iou__stream_timer_at(iou_stream *s, uint64_t when);
/* Put the stream's timer in the loop's heap (parked) so that deadlines can
 * be set later without allocating: 0 or -ENOMEM. */
int iou__stream_timer_reserve(iou_stream *s);
/* iou_shutdown(s, SHUT_WR), and cb(s, res, ud) once the FIN's shutdown op
 * completed (its result), or with the error of a close or cut that comes
 * first.  1: the FIN went out already (no callback); 0: cb will run; or an
 * error of iou_shutdown() or the cut's. */
int iou__shutdown_wait(iou_stream *s, iou_write_cb cb, void *ud);
/* Send the FIN once the write queue emptied after iou_shutdown(SHUT_WR). */
void iou__shutdown_write_if_due(iou_stream *s);
int iou__cancel_inflight_send(iou_stream *s); /* 0, or -ENOMEM: again */

/* send.c: the send side */
struct iou__write *iou__write_get(iou_loop *loop);
void iou__write_put(iou_loop *loop, struct iou__write *w);
int iou__stream_queue_write(iou_stream *s, struct iou__write *w);
/* Queue a forward piece without sending yet (iou__stream_flush() sends);
 * the provided buffer `bid` (or IOU__SEG_NONE) goes back once it was sent. */
int iou__stream_queue_forward(iou_stream *to, const unsigned char *p,
			      size_t len, uint32_t bid, size_t copy_cap,
			      struct iou__write **out);
void iou__stream_flush(iou_stream *s);     /* start sending the queue */
int iou__queue_drain(iou_stream *s, iou_write_cb cb, void *ud); /* fed bytes */
void iou__start_send(iou_stream *s);        /* the queue's head, if idle */
void iou__send_complete(struct iou__op *op, const struct iou__cqe_rec *cqe);
void iou__fail_writes(iou_stream *s, int err);
/* Past a write deadline the queue fails; the earliest one left, 0: none. */
uint64_t iou__writes_deadline_check(iou_stream *s);
/* On a coming turn, fail every queued write of s with err (the send in
 * flight cancelled first) and every later one, or end its graceful close
 * at once (a reset if bytes were left): for a task cancelled in a write,
 * whose buffer the kernel must let go of, or in a close. */
void iou__stream_cancel_writes(iou_stream *s, int err);

/* receive.c: the receive side */
void iou__recv_arm(iou_stream *s);
void iou__recv_complete(struct iou__op *op, const struct iou__cqe_rec *cqe);
void iou__read_progress(iou_stream *s);    /* satisfy the pending read */
void iou__read_fail(iou_stream *s, int err);
void iou__read_deadline_passed(iou_stream *s);
/* The pending read of `kind` (n bytes, or at most n) starts: 0, or why not,
 * with nothing of the stream changed. */
int iou__read_start(iou_stream *s, uint8_t kind, size_t n, iou_read_cb cb,
		    void *ud);
void iou__read_clear(iou_stream *s);       /* the pending read is over */
void iou__recv_resume(iou_stream *s);      /* bytes were consumed */
/* Received bytes taken out of a stream by a read view: a pool buffer (bid)
 * or a heap block, owned by the holder until iou__held_release(), so that
 * neither a close of the stream nor new receives touch them. */
struct iou__held {
	uint32_t bid;               /* pool buffer, or IOU__SEG_NONE */
	unsigned char *blk;         /* else a block of cap bytes, or NULL */
	size_t cap;
};
/* Like iou_read(), but the bytes (the first contiguous run, at most max)
 * leave the stream into *h (valid until the callback) instead of being
 * consumed after the callback: a whole pool buffer is taken as it is
 * (within the forwards' budget, fwd_max), the spill's block too, anything
 * else is copied. */
int iou__read_view(iou_stream *s, size_t max, struct iou__held *h,
		   iou_read_cb cb, void *ud);
void iou__held_release(iou_loop *loop, struct iou__held *h);

/* forward.c: a read of one stream into the write queue of another */
void iou__forward_progress(iou_stream *s); /* bytes are buffered: queue them */
void iou__forward_done(iou_stream *from, struct iou__write *w, ssize_t res);
/* `to` is closing: forwards into it that wait for bytes fail with err (the
 * ones whose bytes sit in its write queue fail with the queue). */
void iou__forward_sources_fail(iou_stream *to, int err);

#endif /* IOU_INTERNAL_H */
