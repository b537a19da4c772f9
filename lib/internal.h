/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the library's sources; never installed. */
#ifndef IOU_INTERNAL_H
#define IOU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "iou.h"
#include "backend.h"
#include "rxq.h"

#define IOU__CONTAINER_OF(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- timers ------------------------------------------------------------- */

/* A deadline in the loop's min-heap; embedded in its owner. */
struct iou__timer {
	uint64_t deadline;   /* loop clock, ms */
	uint32_t seq;        /* start order, breaks deadline ties; compared
				modulo 2^32 (only timers of one deadline
				compare by it) */
	unsigned heap_index; /* position in the heap, UINT32_MAX when idle */
	void (*fire)(struct iou__timer *t);
};

#define IOU__TIMER_IDLE UINT32_MAX
/* A deadline that never comes: the timer keeps its place in the heap (so
 * that moving it later needs no allocation) without waking the loop. */
#define IOU__TIMER_NEVER UINT64_MAX

static inline bool iou__timer_active(const struct iou__timer *t)
{
	return t->heap_index != IOU__TIMER_IDLE;
}

/* ---- provided buffers --------------------------------------------------- */

struct iou__bufring {
	struct io_uring_buf_ring *br;
	size_t br_bytes;        /* mmap size of br */
	unsigned buf_count;     /* of loop->pool.buf_size bytes each */
	unsigned mask;
	unsigned pending;       /* buffers added but not yet published */
	unsigned out;           /* buffers held by the kernel or streams */
	/* Buffers in circulation (in the ring or out); the others sit on the
	 * idle stack, the ones used last on top, and the pages of those below
	 * idle_clean were released or never touched.  live grows when receives
	 * find the ring empty (iou__bufring_grow); after a period in which the
	 * load needed far fewer (peak), returned buffers leave circulation
	 * until live is down to live_max (buf_count: not shrinking). */
	unsigned live, live_max;
	unsigned live_min;      /* never shrinks below */
	uint16_t *idle;
	unsigned nidle, idle_clean;
	unsigned taken;         /* buffers receives filled since the publish */
	unsigned out_mark;      /* out at the publish */
	unsigned peak;          /* most buffers a turn needed this period */
	unsigned quiet_ms;      /* length of a period */
	uint64_t period_end;    /* loop clock */
	/* Whole buffers forwards handed to write queues (zero copy), and
	 * read views hold, and the most they may hold at once: a peer that
	 * stops reading keeps its forward's buffers, so past the budget
	 * forwards (and views) copy. */
	unsigned fwd_held, fwd_max;
	int bgid;
	bool bundle;            /* receives may fill several buffers */
	bool recv_limit;        /* multishot recv takes a byte limit (6.16+;
				   cleared at the first -EINVAL) */
	uint16_t *pos;          /* ring slot (tail counter) each buffer sits in */
	uint16_t *slot_bid;     /* the buffer we put in each ring slot: a
				   private copy, never read back from the ring
				   the kernel shares */
};


/* ---- posted callbacks --------------------------------------------------- */

struct iou__post {
	struct iou__post *next;
	void (*fn)(void *ud);
	void *ud;
};

/* ---- the loop ----------------------------------------------------------- */

struct iou__list {
	struct iou__list *prev, *next;
};

/* One per loop; its backend allocates it inside its own state (uring.h). */
struct iou_loop {
	bool stop;                  /* the last turn took a stop request */
	bool in_run;
	uint8_t backend;            /* IOU_BACKEND_URING or _EPOLL */
	uint64_t now;               /* ms, monotonic, cached per turn */

	/* In-flight ops and other reasons to keep running (timers, open
	 * streams and servers, posts, look-ups). */
	uint64_t active;

	struct iou__bufring bufs;
	struct iou__pool pool;      /* the buffers' memory (rxq.h) */

	/* timers: binary min-heap of pointers */
	struct iou__timer **heap;
	unsigned heap_len, heap_cap;
	uint32_t timer_seq;

	/* cross-thread wake-up */
	int wake_fd;
	uint64_t wake_value;
	struct iou__op wake_op;
	bool wake_armed;
	bool destroying;            /* no more wake-up reads */
	/* The fields other threads touch, only ever through __atomic
	 * builtins: posted callbacks, newest first (a lock-free stack that
	 * any thread pushes onto and the loop takes whole), and two flags. */
	struct iou__post *post_head;
	int wake_pending;           /* a write to wake_fd is on its way */
	int stop_requested;         /* set by iou_loop_stop() */
	int posters;                /* calls of iou_loop_post/stop under way */

	/* streams that wait for provided buffers (-ENOBUFS) */
	struct iou__list starved;
	/* streams with work to do at the end of the turn (re-arm, ...) */
	struct iou__list deferred;
	/* streams that received into provided buffers, for spilling under
	 * starvation; one that gave them all back leaves at the next walk */
	struct iou__list holders;

	/* freelist of write records (send.c) */
	void *free_writes;
	struct iou__blkcache blocks;
	unsigned n_writes;          /* allocated, for leak checks */
	struct iou__tasks *tasks;   /* task.c, from the first task on */
	struct iou__sigs *sigs;     /* signal.c: NULL while no watcher (and
				       no read of theirs) is left */
#ifdef IOU_FAULT_INJECTION
	struct iou__fault *fault;   /* fault.c; NULL: no faults */
#endif
};

/* list helpers */
static inline void iou__list_init(struct iou__list *l) { l->prev = l->next = l; }
static inline bool iou__list_empty(const struct iou__list *l) { return l->next == l; }
static inline bool iou__list_linked(const struct iou__list *n) { return n->next != NULL && n->next != n; }
static inline void iou__list_add_tail(struct iou__list *head, struct iou__list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}
static inline void iou__list_del(struct iou__list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* loop.c */
void iou__op_submitted(iou_loop *loop);   /* an op now in flight: +1 active */
void iou__op_done(iou_loop *loop);        /* its final CQE arrived: -1 active */
uint64_t iou__clock_ms(void);

/* timer.c */
void iou__timer_init(struct iou__timer *t, void (*fire)(struct iou__timer *));
int iou__timer_arm(iou_loop *loop, struct iou__timer *t, uint64_t deadline);
void iou__timer_disarm(iou_loop *loop, struct iou__timer *t);
int iou__timers_run(iou_loop *loop);      /* fire expired, return count */
int iou__timers_next_ms(iou_loop *loop);  /* ms until nearest, -1 none */
void iou__timers_free(iou_loop *loop);

/* bufring.c: the pool's buffers in and out of the backend's hands */
static inline unsigned char *iou__buf_addr(const iou_loop *loop, unsigned bid)
{
	return iou__pool_addr(&loop->pool, bid);
}
/* The pool and its ring (registered with the kernel on io_uring; read by
 * epoll.c on epoll): 0, -ENOMEM, -IOU_ENOFEATURE. */
int iou__bufring_setup(iou_loop *loop, unsigned size, unsigned count);
void iou__bufring_teardown(iou_loop *loop);
void iou__buf_recycle(iou_loop *loop, unsigned bid);
/* The buffer we put in ring slot `pos` (a tail counter value). */
static inline unsigned iou__buf_at(const iou_loop *loop, unsigned pos)
{
	const struct iou__bufring *b = &loop->bufs;

	return b->slot_bid[pos & b->mask];
}
void iou__bufring_publish(iou_loop *loop);
/* Receives found the ring empty: put more of the pool in circulation (and
 * stop shrinking).  Returns whether there was any left to add. */
bool iou__bufring_grow(iou_loop *loop);

/* ---- fault injection (fault.c, ./configure --enable-fault-injection) ---- */

#ifdef IOU_FAULT_INJECTION
enum {
	IOU__F_RECV_CANCELED,  /* recv ended for real by a cancel nobody asked for */
	IOU__F_RECV_ENOBUFS,   /* recv's final CQE -> -ENOBUFS */
	IOU__F_RECV_RESET,     /* recv's final CQE -> -ECONNRESET */
	IOU__F_SEND_SHORT,     /* send/sendmsg SQE shortened before submission */
	IOU__F_SEND_EPIPE,
	IOU__F_SEND_RESET,
	IOU__F_SEND_CANCELED,
	IOU__F_ACCEPT_CANCELED,
	IOU__F_ACCEPT_EMFILE,
	IOU__F_ACCEPT_ABORTED, /* -ECONNABORTED */
	IOU__F_ACCEPT_FD_CLOSED, /* an accepted fd closed before the error */
	IOU__F_ALLOC,          /* malloc/calloc/realloc returned NULL */
	IOU__F_NKINDS
};

struct iou__fault;
void iou__fault_init(iou_loop *loop);          /* reads IOU_FAULT_SEED/RATE */
void iou__fault_fini(iou_loop *loop);
void iou__fault_sq(iou_loop *loop);            /* before every submit */
void iou__fault_cqe(iou_loop *loop, struct iou__op *op,
		    struct iou__cqe_rec *cqe); /* before op->complete */
void iou__fault_turn(iou_loop *loop);          /* allocations may fail */
void iou__fault_turn_end(void);                /* ... no longer */
/* Process-wide totals since start; names for printing. */
void iou__fault_totals(uint64_t out[IOU__F_NKINDS]);
const char *iou__fault_name(int kind);

/* Every allocation of the library goes through the fault wrappers, which
 * fail (return NULL, as under memory pressure) only while a loop with faults
 * runs a turn on this thread. */
/* The same for the library's other allocations (a task stack's mmap). */
bool iou__fault_map_fails(void);
void *iou__fault_malloc(size_t n);
void *iou__fault_calloc(size_t n, size_t size);
void *iou__fault_realloc(void *p, size_t n);
#ifndef IOU__FAULT_NO_WRAP
#define malloc(n) iou__fault_malloc(n)
#define calloc(n, size) iou__fault_calloc(n, size)
#define realloc(p, n) iou__fault_realloc(p, n)
#endif
#endif /* IOU_FAULT_INJECTION */

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
 * 504 bytes, a 512-byte malloc chunk).  The pending read's per-kind fields
 * share a union, valid only while read_kind is theirs. */
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
/* 8 bytes of malloc's header: a 512-byte chunk at most. */
_Static_assert(sizeof(struct iou_stream) <= 504, "iou_stream grew past 504 B");

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

/* server.c: a stream of the server's was freed */
void iou__server_conn_closed(iou_server *srv, iou_stream *s);
/* The stream's idle deadline (0: none); past it, the server cuts it. */
uint64_t iou__server_idle_check(iou_stream *s);
/* fn(arg) when the server is freed (after its done callback). */
void iou__server_set_cleanup(iou_server *srv, void (*fn)(void *), void *arg);

/* ---- tasks (task.c) ----------------------------------------------------- */

struct iou__tasks;
void iou__tasks_turn_end(iou_loop *loop); /* run the tasks made ready */
bool iou__tasks_ready(const iou_loop *loop);
void iou__tasks_free(iou_loop *loop);     /* the pool of stacks */

/* ---- connect ------------------------------------------------------------ */

/* connect.c: iou_tcp_connect() to the AF_INET/AF_INET6 `addrs`, tried in
 * turn as if a name had resolved to them (also how tests supply several
 * addresses).  Returns and reports as iou_tcp_connect(). */
int iou__connect_addrs(iou_loop *loop, const struct sockaddr_storage *addrs,
		       size_t n, const struct iou_connect_opts *opts,
		       iou_connect_cb cb, void *ud, iou_stream **out);
/* iou_close() of a connecting stream: stop the attempt; the connect
 * callback gets -ECANCELED (now, or from the cancelled op's CQE). */
void iou__connect_cancel(iou_stream *s);
extern unsigned iou__resolve_delay_ms; /* tests: slow look-ups */

#endif /* IOU_INTERNAL_H */
