/* SPDX-License-Identifier: MIT */
/* The loop layer's internal declarations: the loop, its ops and timers,
 * the provided buffers, posted callbacks, the tasks' hooks and fault
 * injection.  No stream in sight: the stream layer is internal.h; never
 * installed. */
#ifndef IOU_LOOP_INT_H
#define IOU_LOOP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	IOU__F_CONNECT_REFUSED, /* connect's CQE -> -ECONNREFUSED */
	IOU__F_CONNECT_TIMEDOUT,
	IOU__F_CONNECT_CANCELED,
	IOU__F_CONNECT_UNREACH, /* -ENETUNREACH */
	IOU__F_CONNECT_WAS_OK, /* ... where the kernel had connected */
	IOU__F_ALLOC,          /* malloc/calloc/realloc returned NULL */
	IOU__F_NKINDS
};

struct iou__fault;
void iou__fault_init(iou_loop *loop);          /* reads IOU_FAULT_SEED/RATE */
void iou__fault_fini(iou_loop *loop);
void iou__fault_sq(iou_loop *loop);            /* before every submit */
/* The epoll backend's hooks: an op starts (io_uring's are learnt from the
 * SQEs), and a send or sendmsg may be cut before its syscall. */
enum { IOU__FOP_OTHER, IOU__FOP_RECV, IOU__FOP_SEND, IOU__FOP_ACCEPT,
       IOU__FOP_CONNECT };
void iou__fault_op(iou_loop *loop, struct iou__op *op, int kind, int fd);
void iou__fault_send(iou_loop *loop, size_t *len, const struct msghdr *msg);
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

/* ---- tasks (task.c) ----------------------------------------------------- */

struct iou__tasks;
void iou__tasks_turn_end(iou_loop *loop); /* run the tasks made ready */
bool iou__tasks_ready(const iou_loop *loop);
void iou__tasks_free(iou_loop *loop);     /* the pool of stacks */

#endif /* IOU_LOOP_INT_H */
