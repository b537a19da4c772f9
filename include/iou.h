/* SPDX-License-Identifier: MIT */
/*
 * iou: asynchronous TCP streams and servers on Linux io_uring.
 *
 * The one public header.  Conventions that hold for every declaration below:
 *
 *  - Functions return 0 or a positive count on success and a negative errno
 *    (or one of the IOU_E* codes, which lie outside errno's range) on failure.
 *    errno is never the channel.  iou_strerror() turns any of them into words.
 *  - If a function that takes a callback returns an error, that callback never
 *    runs.  If it returns success, the callback runs exactly once (repeating
 *    timers: once per expiry; signal watchers: once per delivery until
 *    stopped), always from iou_loop_run()/iou_loop_run_once()
 *    and NEVER synchronously from inside the call that queued it.
 *  - Callbacks receive the same kind of signed result: a byte count, 0 for
 *    end-of-file, or a negative error; -ECANCELED when the operation was
 *    cancelled because its stream or server was closed.
 *  - One iou_loop is one io_uring driven by one thread: create the loop on the
 *    thread that runs it.  Only iou_loop_post() and iou_loop_stop() may be called
 *    from other threads; everything else belongs to the loop's thread.
 *  - Invalid arguments (NULL pointers, zero sizes, out-of-range options) return
 *    -EINVAL and change nothing.
 *
 * Lifetimes (libuv's handle rules; the same text is in README.md and iou(7)):
 *
 *  1. A stream is the application's from the moment iou hands it over
 *     (iou_stream_open(), iou_tcp_connect()'s *out and connect callback, a
 *     server's connection callback) until its close callback has run.  The
 *     library never frees it before: iou_close() or iou_close_graceful() is
 *     the only end of a stream.  (One exception, stated where it happens: a
 *     connect that failed releases its stream when the connect callback
 *     returns, unless the callback closed it.)
 *  2. After a close, every callback still pending runs once (reads with
 *     -ECANCELED, writes with their result or -ECANCELED), then the close
 *     callback; the stream's memory goes when the close callback returns.
 *     Later calls on a closing stream return IOU_ECLOSED.
 *  3. A server never frees its connections.  When it cuts one (idle
 *     timeout: -ETIMEDOUT; end of a shutdown's grace period: -ECONNABORTED)
 *     the stream's pending callbacks get that error, its socket is shut
 *     down (a reset if bytes were left unsent or unread), on_cut tells the
 *     application, and later calls return IOU_ECLOSED; the application
 *     still closes it.  A server's done callback runs after the last
 *     connection's close callback; the server is freed when it returns.
 *  4. Memory passed to a write belongs to the application but must stay
 *     valid until the write's callback ran; bytes handed to a read callback
 *     are valid until it returns.  The kernel never writes into memory that
 *     was released: every operation is drained before its owner is freed.
 *  5. A one-shot timer is freed after its callback returns, a repeating one
 *     by iou_timer_cancel().
 */
#ifndef IOU_H
#define IOU_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOU_VERSION_MAJOR 0
#define IOU_VERSION_MINOR 2
#define IOU_VERSION_PATCH 0

#if defined(__GNUC__)
#define IOU_EXTERN __attribute__((visibility("default")))
#else
#define IOU_EXTERN
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* iou-specific error codes, returned negated like errno values. */
enum {
	IOU_EINCOMPLETE = 4201, /* peer closed inside a message: some of the
				   requested bytes arrived, not all (they stay
				   buffered); with nothing buffered, end of
				   file is res 0 instead */
	IOU_EOVERFLOW   = 4202, /* read_until: `max` bytes arrived without the
				   separator; nothing was consumed */
	IOU_ECLOSED     = 4203, /* the stream (or its read/write side) is closed
				   or closing */
	IOU_ENOURING    = 4204, /* io_uring is unavailable: kernel too old,
				   kernel.io_uring_disabled, or a seccomp filter */
	IOU_ERESOLVE    = 4205, /* the host name could not be resolved */
	IOU_ENOFEATURE  = 4206, /* the kernel's io_uring lacks a required feature
				   (multishot accept/recv, buffer rings: 6.0+) */
};

/* Words for any value a function or callback of iou returns (0 and positive
 * values give "success").  The string is static; never NULL.  Any thread. */
IOU_EXTERN const char *iou_strerror(int err);

/* "MAJOR.MINOR.PATCH" of the library actually linked.  Any thread. */
IOU_EXTERN const char *iou_version(void);

/* ------------------------------------------------------------------------ */
/* Loop                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct iou_loop iou_loop;
typedef struct iou_stream iou_stream;
typedef struct iou_server iou_server;
typedef struct iou_timer iou_timer;

/* iou_loop_opts.flags */
#define IOU_LOOP_NO_DEFER_TASKRUN 0x1u /* kill switch: never ask for
					  SINGLE_ISSUER|DEFER_TASKRUN */
#define IOU_LOOP_NO_RECV_BUNDLE   0x2u /* kill switch: one buffer per receive
					  even where the kernel (6.10+) can
					  fill several */

struct iou_loop_opts {
	unsigned queue_depth; /* SQ entries, 1..32768, default 512; not a
				 limit on operations: those that find the SQ
				 full wait in the loop, in order, and go out
				 as it drains */
	unsigned buf_size;    /* bytes per provided receive buffer,
				 64..1 MiB, default 16384 */
	unsigned buf_count;   /* receive buffers in the loop's ring at most,
				 a power of two 1..32768, default 1024 (16
				 MiB of address space, resident only as
				 used: 16 buffers circulate at first, more
				 join when receives find none free, and
				 after 10 s of lighter load the surplus
				 leaves and its memory is released) */
	unsigned flags;       /* IOU_LOOP_* */
	unsigned backend;     /* IOU_BACKEND_*, default IOU_BACKEND_AUTO */
};

/* The kernel interface a loop runs on; every function behaves the same on
 * both.  AUTO: io_uring where this process may use it and the kernel has
 * what iou needs, epoll otherwise (seccomp filters of containers,
 * kernel.io_uring_disabled, kernels before 6.0); the environment variable
 * IOU_BACKEND=uring or =epoll picks one for AUTO loops (tests, debugging). */
#define IOU_BACKEND_AUTO  0u
#define IOU_BACKEND_URING 1u
#define IOU_BACKEND_EPOLL 2u

/* Fill `opts` with the defaults above.  Any thread. */
IOU_EXTERN void iou_loop_opts_init(struct iou_loop_opts *opts);

/* Create a loop (one io_uring plus its provided-buffer ring, or an epoll
 * set and the same pool: see IOU_BACKEND_*) owned by the calling thread;
 * `opts` may be NULL for the defaults.  On success *out is set and 0
 * returned.  On epoll, queue_depth and the IOU_LOOP_NO_DEFER_TASKRUN flag
 * mean nothing and are ignored.
 * Errors: -EINVAL (bad option, NULL out, or an IOU_BACKEND value other than
 * uring, io_uring or epoll), and for IOU_BACKEND_URING only: IOU_ENOURING
 * (io_uring disabled or filtered), IOU_ENOFEATURE (kernel older than 6.0);
 * -ENOMEM (also: RLIMIT_MEMLOCK too low for the memory io_uring pins,
 * without CAP_IPC_LOCK), -errno of epoll_create1(). */
IOU_EXTERN int iou_loop_create(iou_loop **out, const struct iou_loop_opts *opts);

/* The backend `loop` runs on: "io_uring" or "epoll" (NULL for NULL). */
IOU_EXTERN const char *iou_loop_backend(const iou_loop *loop);

/* Destroy a loop that has no work left (see iou_loop_alive()).  Returns
 * -EBUSY and changes nothing while streams, servers, timers, posted
 * callbacks, in-flight operations or started signal watchers remain: close
 * or stop them and run the loop until it returns first.  -EINVAL for NULL.
 * A posted callback may run before its iou_loop_post() returned on the
 * posting thread: destroy waits for such calls (and iou_loop_stop()'s) to
 * return, so a loop may be destroyed as soon as the last posted callback
 * ran; no post or stop may start once destroy was called. */
IOU_EXTERN int iou_loop_destroy(iou_loop *loop);

/* Run until the loop has no work left or a turn took a stop request (see
 * iou_loop_stop()).  Returns 0 when out of work, 1 when stopped, or a
 * negative error from the ring (the loop stays usable).  With no work left
 * it runs no turn, so a pending stop request stays pending. */
IOU_EXTERN int iou_loop_run(iou_loop *loop);

/* Run one turn: submit what is queued, wait up to `timeout_ms` (0: do not
 * wait, -1: wait until something happens) for completions, timers or posted
 * callbacks, and run their callbacks.  Returns the number of callbacks and
 * completions handled (>= 0), or a negative error. */
IOU_EXTERN int iou_loop_run_once(iou_loop *loop, int timeout_ms);

/* Request a stop: a one-shot request that the turn in progress takes when
 * it ends (a loop blocked in the kernel wakes at once; with no turn in
 * progress, the next turn takes it and does not block).  The iou_loop_run()
 * containing that turn then returns 1; an iou_loop_run_once() turn just
 * returns as usual.  Either way the request is used up: the next
 * iou_loop_run_once(loop, -1) blocks again and the next iou_loop_run() runs
 * until out of work or stopped anew.  Several requests before a turn takes
 * them count as one.  Any thread. */
IOU_EXTERN void iou_loop_stop(iou_loop *loop);

/* Run fn(ud) on the loop's thread during a coming turn.  Any thread; wakes
 * the loop at once.  Callbacks posted from one thread run in the order they
 * were posted.  Errors: -EINVAL, -ENOMEM. */
IOU_EXTERN int iou_loop_post(iou_loop *loop, void (*fn)(void *ud), void *ud);

/* 1 if the loop has work (in-flight operations, open streams or servers,
 * active timers, posted callbacks, pending name look-ups), else 0.  Signal
 * watchers do not count (see iou_signal_start()). */
IOU_EXTERN int iou_loop_alive(const iou_loop *loop);

/* The loop's cached monotonic clock in milliseconds, updated once per turn. */
IOU_EXTERN uint64_t iou_loop_now(const iou_loop *loop);

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */
/* ------------------------------------------------------------------------ */

/* Runs when the timer expires.  A one-shot timer is freed after its
 * callback returns; a repeating one stays until iou_timer_cancel(). */
typedef void (*iou_timer_cb)(iou_timer *t, void *ud);

/* Start a timer that fires after `after_ms` milliseconds and then, if
 * `repeat_ms` > 0, every `repeat_ms`.  Timers that expire in the same turn
 * fire in deadline order (start order for equal deadlines).  Timers cost no
 * SQE: the loop waits with the nearest deadline as its timeout.  *out gets
 * the handle for iou_timer_cancel(); a one-shot timer (repeat_ms == 0) may
 * pass NULL for out when it will never be cancelled (it frees itself after
 * its callback); a repeating one needs it.
 * Errors: -EINVAL (also: out NULL with repeat_ms > 0), -ENOMEM. */
IOU_EXTERN int iou_timer_start(iou_loop *loop, uint64_t after_ms,
			       uint64_t repeat_ms, iou_timer_cb cb, void *ud,
			       iou_timer **out);

/* Stop and free a timer; its callback never runs afterwards.  May be called
 * from the timer's own callback.  Errors: -EINVAL. */
IOU_EXTERN int iou_timer_cancel(iou_timer *t);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* No iou function is async-signal-safe, so a server that stops on SIGINT or
 * SIGTERM takes them as loop callbacks instead: the loop reads them from a
 * signalfd through its ring. */

typedef struct iou_signal iou_signal;

/* Runs on the loop's thread once per delivery of `signo` (the kernel merges
 * deliveries of a standard signal that arrive before the loop reads them:
 * one callback for those).  The watcher stays started until
 * iou_signal_stop(). */
typedef void (*iou_signal_cb)(iou_signal *sig, int signo, void *ud);

/* Watch `signo` on `loop`: block it in the calling thread's signal mask
 * and call cb(sig, signo, ud) for each delivery, from iou_loop_run*().
 * Other threads keep their own masks: start watchers before creating
 * threads (which inherit the mask), or block the signal in them yourself,
 * else a thread with the signal unblocked takes it (default action: the
 * process ends).  Each delivery goes to one loop: watch a signal on one loop
 * of the process (several watchers on that loop all run).  The signal's
 * disposition is left alone; one the process ignores (SIG_IGN) still comes
 * while the main thread has it blocked too.
 * A started watcher does not keep the loop alive: iou_loop_run() returns
 * when nothing else is left (a server that shut down lets it return), and
 * iou_loop_alive() does not count it.  iou_loop_destroy() returns -EBUSY
 * until every watcher of the loop is stopped.
 * Errors: -EINVAL (NULL loop, cb or out; not a signal; SIGKILL, SIGSTOP, or
 * a signal the C library keeps for itself), -ENOMEM, -errno from
 * signalfd(2) (-EMFILE, ...), -EAGAIN (no SQE). */
IOU_EXTERN int iou_signal_start(iou_loop *loop, int signo, iou_signal_cb cb,
				void *ud, iou_signal **out);

/* Stop and free a watcher: its callback never runs afterwards, also for a
 * delivery the loop read in the same turn.  May be called from any
 * callback on the loop's thread, the watcher's own included.  When the
 * last watcher of a signal in this thread stops, the signal is unblocked
 * again unless it was blocked before the first start (a delivery still
 * pending then takes its default action or the process's handler).  When
 * the last watcher of the loop stops, the signalfd read is cancelled: that
 * counts as work until its completion, so run the loop until it returns
 * before iou_loop_destroy().  Call it once per watcher.  Errors: -EINVAL. */
IOU_EXTERN int iou_signal_stop(iou_signal *sig);

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

struct iou_stream_opts {
	int nodelay;          /* TCP_NODELAY, default 1 */
	int keepalive_s;      /* TCP keepalive idle seconds, 0 = off (default) */
	int sndbuf;           /* SO_SNDBUF bytes, 0 = kernel default */
	int rcvbuf;           /* SO_RCVBUF bytes, 0 = kernel default */
	size_t max_buffered;  /* receive bytes buffered before the stream stops
				 receiving (backpressure), default 256 KiB,
				 at least 1 */
};

/* Fill `opts` with the defaults above. */
IOU_EXTERN void iou_stream_opts_init(struct iou_stream_opts *opts);

struct iou_connect_opts {
	struct iou_stream_opts stream;
	unsigned timeout_ms;     /* whole connect including name look-up,
				    0 = no limit (default) */
	const char *bind_host;   /* local address to bind, NULL = any */
};

/* Fill `opts` with the defaults: stream defaults, no timeout, no bind
 * address.  NULL is ignored.  Any thread. */
IOU_EXTERN void iou_connect_opts_init(struct iou_connect_opts *opts);

/* Connect callback: `s` is the stream iou_tcp_connect() handed back.
 * res == 0: it is connected.  res < 0: the connect failed, and `s` is
 * released when the callback returns unless the callback iou_close()s it
 * (then its close callback runs).  Errors: -ECANCELED (iou_close() before
 * the connect ended), IOU_ERESOLVE (name not found), -ECONNREFUSED,
 * -ETIMEDOUT (the timeout_ms limit passed), -ENETUNREACH/-EHOSTUNREACH,
 * -EADDRNOTAVAIL (bind_host), other -errno from socket/connect. */
typedef void (*iou_connect_cb)(iou_stream *s, int res, void *ud);

/* Connect to host:port over TCP.  `host` is a numeric IPv4/IPv6 address or a
 * name; names are resolved on a helper thread, never on the loop's thread.
 * Each resolved address is tried in turn; the error of the last one is
 * reported.  `opts` may be NULL.  On success *out (if `out` is not NULL)
 * gets the stream at once, in a connecting state: iou_close() on it cancels
 * the connect (the callback gets -ECANCELED, then the close callback runs;
 * a pending look-up is abandoned and keeps nothing waiting), reads, writes
 * and shutdown return -ENOTCONN until the callback, and iou_stream_fd()
 * returns -1.  A connected stream belongs to the caller, who must
 * iou_close() it.  Errors (returned): -EINVAL, -ENOMEM, -EAGAIN (no thread
 * for the look-up). */
IOU_EXTERN int iou_tcp_connect(iou_loop *loop, const char *host, uint16_t port,
			       const struct iou_connect_opts *opts,
			       iou_connect_cb cb, void *ud, iou_stream **out);

/* Wrap a connected stream socket `fd` (the stream takes ownership of the fd,
 * clears O_NONBLOCK (io_uring waits for readiness itself) and applies
 * `opts`, which may be NULL).  TCP (AF_INET/AF_INET6) and other stream
 * sockets such as AF_UNIX ones (socketpair()) work alike; the TCP options
 * (nodelay, keepalive_s) apply to TCP sockets only and are ignored on the
 * others.  On error the fd stays the caller's, open.
 * Errors: -EINVAL (also: not a stream socket), -ENOMEM, -ENOTSOCK, -EBADF,
 * and -errno from applying `opts`. */
IOU_EXTERN int iou_stream_open(iou_loop *loop, int fd,
			       const struct iou_stream_opts *opts,
			       iou_stream **out);

/* Read callback.  res > 0: `data` points at res bytes, valid only until the
 * callback returns (copy what you keep).  res == 0: end of file with
 * nothing buffered, a clean end between messages (every read; `data` is
 * NULL).  res < 0: an error, `data` is NULL. */
typedef void (*iou_read_cb)(iou_stream *s, ssize_t res, const void *data,
			    void *ud);

/* Write callback.  res >= 0: bytes sent; res < 0: error (-EPIPE,
 * -ECONNRESET, -ECANCELED when the stream was closed first, ...). */
typedef void (*iou_write_cb)(iou_stream *s, ssize_t res, void *ud);

/* Runs once the stream is closed; the stream is freed when it returns. */
typedef void (*iou_close_cb)(iou_stream *s, void *ud);

/* One read operation may be pending per stream: a second one returns -EBUSY.
 * Read operations return IOU_ECLOSED after iou_shutdown(SHUT_RD) or
 * iou_close().  Received bytes are buffered in the stream (up to
 * max_buffered) whether or not a read is pending, once the first read was
 * issued.  A read that needs bytes spanning receive buffers copies them
 * together; if that copy cannot be allocated its callback gets -ENOMEM and
 * every byte stays buffered (the read may be issued again). */

/* Read up to `max` (>= 1) bytes: every byte buffered (up to max, as one
 * run: zero-copy when they sit in one receive buffer, else copied as said
 * above), or when nothing is buffered the next bytes to arrive.  The
 * callback gets 0 at end of file. */
IOU_EXTERN int iou_read(iou_stream *s, size_t max, iou_read_cb cb, void *ud);

/* Read exactly n (>= 1, <= max_buffered) bytes.  If the peer closes first:
 * 0 when nothing was buffered (a clean end of file between messages),
 * else IOU_EINCOMPLETE (a truncated message) and the bytes that did arrive
 * stay buffered (iou_take_buffer()).  Errors: -EINVAL (also n above
 * max_buffered: for more, use iou_read_exactly_into()), -EBUSY,
 * IOU_ECLOSED. */
IOU_EXTERN int iou_read_exactly(iou_stream *s, size_t n, iou_read_cb cb,
				void *ud);

/* Callback of iou_read_exactly_into().  res: n once all n bytes are in the
 * buffer; 0 at end of file before any byte arrived (a clean end between
 * messages); else an error: -IOU_EINCOMPLETE (end of file after some of
 * the bytes), -ECONNRESET, IOU_ECLOSED (SHUT_RD), -ECANCELED (close), ...
 * `got` is the number of bytes stored at the start of the buffer: n on
 * success, fewer otherwise.  They are consumed from the stream either
 * way. */
typedef void (*iou_read_into_cb)(iou_stream *s, ssize_t res, size_t got,
				 void *ud);

/* Read exactly n (1..SSIZE_MAX) bytes into buf[0..n): bytes already
 * buffered first, then the next ones to arrive, each copied into buf as it
 * comes, so n has no max_buffered limit (the stream itself still buffers
 * at most max_buffered: backpressure holds).  buf must stay valid, and is
 * the library's to write, until the callback runs.  A read like the others
 * (one at a time).  Errors: -EINVAL, -EBUSY, IOU_ECLOSED. */
IOU_EXTERN int iou_read_exactly_into(iou_stream *s, void *buf, size_t n,
				     iou_read_into_cb cb, void *ud);

/* Like iou_read_exactly() but the bytes stay buffered: the next read sees
 * them again. */
IOU_EXTERN int iou_peek(iou_stream *s, size_t n, iou_read_cb cb, void *ud);

/* Read up to and including the first occurrence of sep[0..seplen) (any
 * length >= 1, also spanning receive buffers).  If `max` (>= seplen,
 * <= max_buffered) bytes are buffered without the separator: IOU_EOVERFLOW
 * and nothing is consumed: every byte is still readable.  End of file first:
 * 0 with nothing buffered, else IOU_EINCOMPLETE (the bytes stay buffered),
 * as iou_read_exactly().  `sep` is copied; it need not outlive the call. */
IOU_EXTERN int iou_read_until(iou_stream *s, const void *sep, size_t seplen,
			      size_t max, iou_read_cb cb, void *ud);

/* Cancel the pending read (any of the reads above, or a forward still
 * waiting for bytes): its callback runs on a later turn with -ECANCELED and
 * every byte stays buffered, so that a program can switch the stream from
 * reading to forwarding.  Issue the next read from that callback or later
 * (until then the read is still pending: -EBUSY).  Returns 0; -ENOENT when
 * no read is pending; -EBUSY for a forward whose bytes are already queued
 * on its target (it completes with their count); -EINVAL. */
IOU_EXTERN int iou_read_cancel(iou_stream *s);

/* Deadlines, in ms from the moment each operation is issued (0, the
 * default: none); they apply to operations issued after the call.
 * A read (iou_read .. iou_read_until, and a forward until its bytes were
 * queued on its target) not served in time gets -ETIMEDOUT: no byte is
 * lost, everything received stays buffered, and the stream stays usable.
 * A write (iou_write, iou_write_all, iou_drain, and the bytes a forward
 * queued on this stream) not fully sent in time gets -ETIMEDOUT, and so does
 * every write queued behind it: the peer does not read, the stream's
 * sending side is broken (later writes return -ETIMEDOUT; part of the bytes
 * may have gone out), close it.  Connects take opts->timeout_ms.  Errors:
 * -EINVAL, IOU_ECLOSED (the stream is closing), -ENOMEM (the stream's
 * timer could not be set up; nothing changed). */
IOU_EXTERN int iou_stream_set_read_timeout(iou_stream *s, unsigned ms);
IOU_EXTERN int iou_stream_set_write_timeout(iou_stream *s, unsigned ms);

/* Bytes received and not yet consumed; inside a read callback, not
 * counting the bytes that callback got (they are consumed when it
 * returns). */
IOU_EXTERN size_t iou_buffered(const iou_stream *s);

/* Move up to `cap` buffered bytes into dst and consume them.  Returns the
 * count; -EBUSY while a read is pending and inside a read callback that got
 * data (whose bytes are consumed when it returns); -EINVAL. */
IOU_EXTERN ssize_t iou_take_buffer(iou_stream *s, void *dst, size_t cap);

/* Send up to `len` (1..UINT32_MAX, else -EINVAL) bytes from `buf` with one
 * send: the callback gets
 * the count actually sent, which may be short.  `buf` must stay valid until
 * the callback runs.  `cb` may be NULL here, in iou_write_all() and in
 * iou_drain(): the write goes out all the same (with no callback, `buf`
 * must stay valid until a later write's callback or the close callback
 * ran).  Writes (of every kind) go out and complete in the order
 * they were issued; a failed write fails every write queued behind it with
 * the same error.  Never raises SIGPIPE.
 * Errors: -EINVAL, IOU_ECLOSED (after SHUT_WR or close), -ENOMEM, or the
 * error that failed an earlier write (-EPIPE, -ECONNRESET, ...): once a
 * write failed, every later write, feed and drain returns it. */
IOU_EXTERN int iou_write(iou_stream *s, const void *buf, size_t len,
			 iou_write_cb cb, void *ud);

/* Send all `len` bytes; the callback gets len, or the error that stopped it.
 * Same rules as iou_write(). */
IOU_EXTERN int iou_write_all(iou_stream *s, const void *buf, size_t len,
			     iou_write_cb cb, void *ud);

/* Append a copy of data[0..len) to the stream's write buffer without
 * sending.  Errors: -EINVAL (also: the bytes fed and not yet drained would
 * pass UINT32_MAX, what one drain can send), IOU_ECLOSED, -ENOMEM; on
 * error nothing was fed. */
IOU_EXTERN int iou_feed(iou_stream *s, const void *data, size_t len);

/* Bytes fed and not yet handed to iou_drain(). */
IOU_EXTERN size_t iou_fed(const iou_stream *s);

/* Bytes of queued writes (iou_write, iou_write_all, iou_drain, forwards
 * into this stream) not yet sent, including those of the send in flight:
 * for application-level backpressure (stop producing above a mark, resume
 * from a write callback).  0 for NULL. */
IOU_EXTERN size_t iou_write_queued(const iou_stream *s);

/* Send everything fed so far, in order with other writes.  The callback
 * (may be NULL) gets the byte count (0 when nothing was fed) or an error. */
IOU_EXTERN int iou_drain(iou_stream *s, iou_write_cb cb, void *ud);

/* Take the next received bytes (up to `max`) from `from` and send all of them
 * on `to` straight from the receive buffer, without copying (an echo server
 * passes the same stream twice; a proxy two streams).  The callback (which
 * gets `from`) receives the count forwarded, 0 at end of file on `from`, or an
 * error of either side.  This is a read on `from` (one at a time) and a write
 * on `to` (ordered with its other writes).  Bytes wait in the receive buffer
 * until sent, so forwards whose targets do not send hold buffers of the
 * loop's pool: forwards hold at most a quarter of it, and copy beyond. */
IOU_EXTERN int iou_forward(iou_stream *from, iou_stream *to, size_t max,
			   iou_write_cb cb, void *ud);

/* Shut down one side: SHUT_RD stops receiving (a pending read fails with
 * IOU_ECLOSED; buffered bytes stay readable with iou_take_buffer()); SHUT_WR
 * sends FIN once every queued write went out; SHUT_RDWR both.  Idempotent.
 * Errors: -EINVAL, IOU_ECLOSED (closing). */
IOU_EXTERN int iou_shutdown(iou_stream *s, int how);

/* Close at once (abortive, as uv_close): cancel what is in flight (pending
 * reads and writes complete with -ECANCELED, also writes queued in the same
 * turn that were not sent yet, and fed bytes are dropped: to send
 * everything first, use iou_close_graceful()), wait for the kernel to
 * finish with every operation, close the fd, then call cb (may be NULL)
 * and free the stream.  Works in every state: connecting, cut by a server,
 * after a failed write.  The stream pointer is valid until cb ran.  Calling
 * it (or iou_close_graceful) a second time returns IOU_ECLOSED. */
IOU_EXTERN int iou_close(iou_stream *s, iou_close_cb cb, void *ud);

/* Graceful close: send every queued write and fed byte, then the FIN, then
 * close.  From the call on, reads and writes return IOU_ECLOSED; a pending
 * read gets -ECANCELED (on a later turn); queued writes go out and their
 * callbacks run with their results.  After the FIN the receive side reads
 * and discards until the peer's end of file (so that bytes the application
 * did not read do not turn the close into a reset that destroys the answer
 * at the peer), then the fd closes and cb (may be NULL) runs, as with
 * iou_close().  If that has not happened within timeout_ms (0: no limit;
 * give one to servers), the stream closes at once: writes still queued get
 * -ETIMEDOUT and the peer gets a reset if bytes were left unsent.  A server
 * cuts a stream that is still flushing at the end of a shutdown's grace
 * period the same way.  The stream pointer is valid until cb ran.  Errors:
 * -EINVAL, IOU_ECLOSED (iou_close or iou_close_graceful called already),
 * -ENOMEM (nothing changed). */
IOU_EXTERN int iou_close_graceful(iou_stream *s, unsigned timeout_ms,
				  iou_close_cb cb, void *ud);

/* Application data attached to the stream. */
IOU_EXTERN void iou_stream_set_data(iou_stream *s, void *data);
IOU_EXTERN void *iou_stream_data(const iou_stream *s);
IOU_EXTERN iou_loop *iou_stream_loop(const iou_stream *s);
IOU_EXTERN int iou_stream_fd(const iou_stream *s);

/* Address of the peer / of our side as text ("127.0.0.1", "::1") and port.
 * `host` gets at least 46 bytes (INET6_ADDRSTRLEN).  Errors: -EINVAL,
 * -ENOSPC (hostlen too small), -errno from getpeername/getsockname. */
IOU_EXTERN int iou_peer_address(const iou_stream *s, char *host,
				size_t hostlen, uint16_t *port);
IOU_EXTERN int iou_local_address(const iou_stream *s, char *host,
				 size_t hostlen, uint16_t *port);

/* Text form of a socket address (IPv4 or IPv6).  Same errors as above. */
IOU_EXTERN int iou_sockaddr_text(const struct sockaddr *sa, char *host,
				 size_t hostlen, uint16_t *port);

/* ------------------------------------------------------------------------ */
/* Servers                                                                  */
/* ------------------------------------------------------------------------ */

typedef void (*iou_server_event_cb)(iou_server *srv, void *ud);

/* The server cut connection `s` (err: -ETIMEDOUT for the idle timeout,
 * -ECONNABORTED at the end of a shutdown's grace period).  By then every
 * pending callback of `s` got err; `s` stays valid and the application's
 * until it calls iou_close(s) (which it should do now, or from the failed
 * callback).  Not called for a stream the application already closed. */
typedef void (*iou_connection_cut_cb)(iou_server *srv, iou_stream *s,
				      int err, void *ud);

struct iou_server_opts {
	const char *host;         /* numeric IPv4/IPv6 listen address,
				     default "127.0.0.1" */
	uint16_t port;            /* 0 = any free port (see iou_server_port) */
	int backlog;              /* listen backlog, default 511 */
	int reuseport;            /* set SO_REUSEPORT, default 0 */
	unsigned max_conns;       /* 0 = no limit; past it new connections are
				     accepted and closed at once (counted as
				     refused) */
	unsigned idle_timeout_ms; /* cut a connection that neither receives
				     nor sends a byte that long (-ETIMEDOUT),
				     0 = never */
	struct iou_stream_opts stream;   /* for every accepted stream */
	iou_server_event_cb on_shutdown; /* optional: shutdown has begun */
	iou_connection_cut_cb on_cut;    /* optional: a connection was cut */
};

/* Fill `opts` with the defaults (127.0.0.1, port 0, see the fields).
 * NULL is ignored.  Any thread. */
IOU_EXTERN void iou_server_opts_init(struct iou_server_opts *opts);

/* A new connection: `s` belongs to the application, which closes it with
 * iou_close() or iou_close_graceful() when done, also after the server cut
 * it (idle timeout, grace limit: see on_cut).  `peer` is the peer's
 * address, valid during the call. */
typedef void (*iou_connection_cb)(iou_server *srv, iou_stream *s,
				  const struct sockaddr *peer, void *ud);

/* Start listening and accepting with one multishot accept.  `ud` is passed
 * to every callback of the server.  A connection that fails before it is
 * accepted (aborted, reset) is skipped at once; running out of fds or
 * memory, or an error every accept would get again (the listening socket
 * shut down under the server), pauses accepting for 10 ms, doubling up to
 * 1 s while it lasts, instead of spinning.  Errors: -EINVAL (bad option,
 * host not a numeric address), -EADDRINUSE, -EADDRNOTAVAIL, -EACCES,
 * -ENOMEM, other -errno from socket/bind/listen. */
IOU_EXTERN int iou_server_start(iou_loop *loop,
				const struct iou_server_opts *opts,
				iou_connection_cb on_connection, void *ud,
				iou_server **out);

/* The port the server listens on (the real one when started with port 0). */
IOU_EXTERN uint16_t iou_server_port(const iou_server *srv);

struct iou_server_stats {
	uint64_t open;        /* connections open now */
	uint64_t accepted;    /* connections handed to on_connection */
	uint64_t refused;     /* closed at once because of max_conns */
	uint64_t idle_closed; /* closed by the idle timeout */
	uint64_t finished;    /* shutdown: closed by the application in grace */
	uint64_t cut;         /* shutdown: closed by the server, at the limit
				 or by the idle timeout */
};

/* Copy the server's counters into *st (both must be non-NULL, else nothing
 * happens).  Loop thread only. */
IOU_EXTERN void iou_server_get_stats(const iou_server *srv,
				     struct iou_server_stats *st);

/* Shutdown finished: every connection closed by the application (this runs
 * after the last close callback), every fd closed, every in-flight
 * operation completed.  The server is freed when this returns. */
typedef void (*iou_server_done_cb)(iou_server *srv, uint64_t finished,
				   uint64_t cut, void *ud);

/* Graceful shutdown: stop accepting at once (from the return on, new
 * connects are refused), run on_shutdown, keep serving open connections
 * until each is closed or `grace_ms` passes, then cut what is left (see
 * on_cut; streams still flushing in iou_close_graceful() are cut too) and
 * wait until the application has closed every connection, drain every
 * operation, and call cb (may be NULL).  Calling it again while the
 * shutdown runs returns IOU_ECLOSED and changes nothing.  Loop thread only:
 * from another thread, go through iou_loop_post(); for signals, call it from
 * an iou_signal_start() callback (no iou function is async-signal-safe). */
IOU_EXTERN int iou_server_shutdown(iou_server *srv, unsigned grace_ms,
				   iou_server_done_cb cb, void *ud);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * A task is a function that runs on its own stack on the loop's thread and
 * calls blocking-style functions (iou_task_read(), iou_task_write_all(), ...)
 * that suspend only the task: the loop and every other task and callback
 * go on meanwhile.  Tasks and the callback API share the loop and the
 * streams.  A task resumes straight from the callback of the operation it
 * waited for.
 *
 * Every blocking call: returns -EPERM outside a task; -ECANCELED once the
 * task was cancelled (iou_task_cancel()); takes a timeout in ms (-1: none;
 * past it -ETIMEDOUT, and no received byte is lost: what arrived stays
 * buffered in the stream).  A task never drives the loop: iou_loop_run()
 * and iou_loop_run_once() from a task return -EBUSY.
 */
typedef struct iou_task iou_task;
typedef void (*iou_task_fn)(void *arg);

struct iou_task_opts {
	size_t stack_size; /* bytes of address space, 16 KiB..64 MiB, default
			      64 KiB; resident only as touched; a guard page
			      below it turns an overflow into SIGSEGV */
};

/* Fill `opts` with the defaults.  NULL is ignored.  Any thread. */
IOU_EXTERN void iou_task_opts_init(struct iou_task_opts *opts);

/* Start fn(arg) as a task; it first runs at the end of a coming loop turn,
 * never inside this call.  With `out` NULL the task is detached: its stack
 * is released when fn returns.  With `out`, *out is valid until
 * iou_task_join() or iou_task_detach(), one of which must be called.  A live
 * task (and a joinable ended one) keeps iou_loop_run() running.  Errors:
 * -EINVAL, -ENOMEM. */
IOU_EXTERN int iou_task_spawn(iou_loop *loop, iou_task_fn fn, void *arg,
			      const struct iou_task_opts *opts, iou_task **out);

/* The running task, NULL outside tasks. */
IOU_EXTERN iou_task *iou_task_self(void);

/* Let the loop turn once (and other tasks run) before going on.  0, or
 * -EPERM / -ECANCELED. */
IOU_EXTERN int iou_task_yield(void);

/* Sleep ms milliseconds.  0, -EPERM, -ECANCELED (also when cancelled while
 * sleeping), -ENOMEM. */
IOU_EXTERN int iou_task_sleep(unsigned ms);

/* Cancel a task: the blocking call it waits in returns -ECANCELED soon
 * (reads, connects, sleeps, joins at once; writes, drains and a forward
 * whose bytes wait on its target on a coming turn, once the kernel let go
 * of the send in flight: the stream's sending side is then broken, as by a
 * write deadline, and its later writes fail), and so do its later blocking
 * calls, except iou_task_close(), which closes at once (also when
 * cancelled during its graceful close: a reset if bytes were left).  Any
 * task or callback of the loop's thread.  0; -ESRCH if it has ended;
 * -EINVAL. */
IOU_EXTERN int iou_task_cancel(iou_task *t);

/* From a task: wait until t has ended, then release it (t is invalid
 * afterwards).  0; -EINVAL (NULL, detached, itself), -EBUSY (another task
 * joins it), -EPERM, -ECANCELED (the caller was cancelled: t stays
 * joinable). */
IOU_EXTERN int iou_task_join(iou_task *t);

/* Release t when it ends (now, if it has).  0, -EINVAL, -EBUSY (joined). */
IOU_EXTERN int iou_task_detach(iou_task *t);

/*
 * Task groups (libdill's bundles): tasks that end together.  Each member is
 * a detached task released when its function returns; the group can be
 * waited for (from a task), cancelled as a whole, and destroyed at any time
 * (while members run, from inside a member, from a callback): destroy
 * cancels the members and the group's memory goes when the last one ended.
 * Members keep iou_loop_run() running as any task does; an empty group is
 * no work.
 */
typedef struct iou_task_group iou_task_group;

/* Runs from the loop (never inside a call the application made) each time
 * the last member of g ended: right after its function returned and the
 * tasks waiting for g resumed, if g is still empty then.  g may be spawned
 * into or destroyed from here. */
typedef void (*iou_task_group_cb)(iou_task_group *g, void *ud);

/* An empty group on `loop`; *out is valid until iou_task_group_destroy().
 * Errors: -EINVAL, -ENOMEM. */
IOU_EXTERN int iou_task_group_create(iou_loop *loop, iou_task_group **out);

/* Start fn(arg) as a member of g (iou_task_spawn() with its opts, which
 * may be NULL): it first runs on a coming turn, and is released when fn
 * returns.  Also from a member.  Errors: -EINVAL, -ENOMEM, -ECANCELED (g
 * is being destroyed: only a member can still reach it then). */
IOU_EXTERN int iou_task_group_spawn(iou_task_group *g, iou_task_fn fn,
				    void *arg, const struct iou_task_opts *opts);

/* Members of g that have not ended yet (those spawned and not yet run
 * included).  0 for NULL. */
IOU_EXTERN unsigned iou_task_group_count(const iou_task_group *g);

/* From a task: wait until g has no member (at once if it has none), at
 * most timeout_ms (-1: no limit).  Several tasks may wait.  0;
 * -ETIMEDOUT; -ECANCELED (the caller was cancelled); -EPERM outside a
 * task; -EDEADLK when the caller is a member of g (it would wait for
 * itself); -EINVAL. */
IOU_EXTERN int iou_task_group_wait(iou_task_group *g, int timeout_ms);

/* Cancel every member of g now (iou_task_cancel(): their blocking calls
 * return -ECANCELED); members spawned later are not.  Any task or
 * callback of the loop's thread, a member of g included.  0, -EINVAL. */
IOU_EXTERN int iou_task_group_cancel(iou_task_group *g);

/* Call cb(g, ud) each time the last member of g ends (cb NULL: stop).  A
 * group already empty gets no call until it has had members again.  0,
 * -EINVAL. */
IOU_EXTERN int iou_task_group_on_empty(iou_task_group *g, iou_task_group_cb cb,
				       void *ud);

/* Cancel every member and release g: at once when it has none, else when
 * the last one ended (after the on_empty callback, which runs then as
 * usual).  The caller must not pass g to any call afterwards, but its
 * members still may (spawn returns -ECANCELED, wait -EDEADLK).  Tasks
 * waiting in iou_task_group_wait() return 0 once the members ended.  Any
 * task or callback of the loop's thread, a member of g included, or the
 * on_empty callback.  0, -EINVAL (NULL; a member destroying it again). */
IOU_EXTERN int iou_task_group_destroy(iou_task_group *g);

/* Blocking reads: bytes land in the caller's buffer.  iou_task_read: up to
 * len of what is buffered, or the next bytes; 0 at end of file.
 * iou_task_read_exactly: exactly n (any size), 0 at a clean end of file,
 * -IOU_EINCOMPLETE if the file ended inside.  iou_task_peek: n (<=
 * max_buffered) bytes that stay buffered.  iou_task_read_until: up to and
 * including sep, at most cap bytes (-IOU_EOVERFLOW past it, nothing
 * consumed).  They return the byte count or a negative error as the
 * callback reads do. */
IOU_EXTERN ssize_t iou_task_read(iou_stream *s, void *buf, size_t len,
				 int timeout_ms);
IOU_EXTERN ssize_t iou_task_read_exactly(iou_stream *s, void *buf, size_t n,
					 int timeout_ms);
IOU_EXTERN ssize_t iou_task_peek(iou_stream *s, void *buf, size_t n,
				 int timeout_ms);
IOU_EXTERN ssize_t iou_task_read_until(iou_stream *s, void *buf, size_t cap,
				       const void *sep, size_t seplen,
				       int timeout_ms);

/* Blocking writes, ordered with every other write of the stream: one send
 * (the count sent), all of buf, or everything fed (iou_feed()).  A
 * deadline that passes breaks the stream's sending side (see
 * iou_stream_set_write_timeout()), and so does a cancel of the task
 * (-ECANCELED). */
IOU_EXTERN ssize_t iou_task_write(iou_stream *s, const void *buf, size_t len,
				  int timeout_ms);
IOU_EXTERN ssize_t iou_task_write_all(iou_stream *s, const void *buf,
				      size_t len, int timeout_ms);
IOU_EXTERN ssize_t iou_task_drain(iou_stream *s, int timeout_ms);

/* Forward the next received bytes (up to max) from `from` to `to` without
 * copying (iou_forward()): the count, 0 at end of file on `from`, or an
 * error of either side.  The deadline is the read's on `from`; once the
 * bytes are queued on `to`, the call waits for their send (a cancel then
 * takes effect when it ends). */
IOU_EXTERN ssize_t iou_task_forward(iou_stream *from, iou_stream *to,
				    size_t max, int timeout_ms);

/* Read without copying: waits as iou_task_read() and sets *data to the
 * next received bytes, the first contiguous run of what is buffered (at
 * most max, up to one receive buffer), and returns their count; 0 at end
 * of file (*data untouched), or an error as iou_task_read()'s.  The bytes
 * leave the stream at once (callback reads and iou_buffered() see what
 * comes after them) and are the task's: they stay valid, whatever happens
 * to the stream (a close, a cut, new receives), until the task's next read
 * call on s (any iou_task_read*(), _peek, _forward, _read_view),
 * iou_task_release(s), or the end of the task, which releases what it
 * still holds.  So a view can be passed to iou_task_write_all() on any
 * stream.  A whole receive buffer is handed over as it is (the loop's pool
 * then has one buffer less until the release, within the budget forwards
 * use); part of one, bytes spanning buffers, or past the budget are
 * copied.  Errors also -EINVAL (data NULL, max 0), -ENOMEM. */
IOU_EXTERN ssize_t iou_task_read_view(iou_stream *s, size_t max,
				      int timeout_ms, const void **data);

/* End the task's view of s now (its memory goes back to the loop).  s is
 * only compared, never used: also valid after s was closed.  0 (also when
 * there was no view), -EPERM outside a task, -EINVAL. */
IOU_EXTERN int iou_task_release(iou_stream *s);

/* Half-close: send everything queued and fed, then the FIN
 * (iou_shutdown(s, SHUT_WR)), and wait until the FIN's shutdown completed;
 * reads go on until the peer's end of file.  The deadline covers the
 * sending (a write deadline: past it -ETIMEDOUT, the sending side broken
 * and no FIN sent, so that the peer cannot take the cut for the end of
 * the data).  A cancel breaks the sending side the same way (no FIN).  0, or a write error (-ECONNRESET, -EPIPE, ...), -IOU_ECLOSED (s
 * closing, or shut for writing already), -ENOTCONN, -EINVAL, -EPERM,
 * -ECANCELED, or the error of a cut. */
IOU_EXTERN int iou_task_shutdown(iou_stream *s, int timeout_ms);

/* Forward both ways between a and b without copying (iou_forward()) until
 * each has sent its end of file, which goes on to the other as a
 * half-close (iou_shutdown(SHUT_WR), after the bytes before it).  The
 * deadline is an idle limit: -ETIMEDOUT once no byte went either way for
 * timeout_ms, or a send waited that long (it sets the read and write
 * timeouts of a and b).  Returns the bytes forwarded both ways, or the
 * first error of either direction (the other stops then; bytes not
 * forwarded stay buffered, and a forward being sent breaks its target's
 * sending side, as a cancel of iou_task_forward() does).  Also -EINVAL (NULL,
 * a == b, streams of two loops).  The streams stay open: the task closes
 * them. */
IOU_EXTERN ssize_t iou_task_proxy(iou_stream *a, iou_stream *b,
				  int timeout_ms);

/* Connect (host names resolved off the loop's thread); *out gets the
 * connected stream, which the task closes.  timeout_ms covers look-up and
 * connect (-1: opts->timeout_ms).  Errors as iou_tcp_connect()'s. */
IOU_EXTERN int iou_task_connect(const char *host, uint16_t port,
				const struct iou_connect_opts *opts,
				int timeout_ms, iou_stream **out);

/* A connection handler of a task server: runs in its own task, one per
 * connection; `s` is closed (gracefully, within 10 s) when it returns, so
 * the handler must not close it itself. */
typedef void (*iou_task_handler)(iou_stream *s, void *ud);

/* iou_server_start() whose connections are each handled by
 * handler(s, ud) in a task of `topts` (may be NULL): aio's
 * start_tcp_server(host, port, handler).  iou_server_shutdown() works as
 * for any server: handlers still running at the grace limit are cut (the
 * call they block in returns -ECONNABORTED or -ECANCELED: clean up and
 * return), and the done callback runs once every handler returned and its
 * stream closed.  The server takes opts->on_cut and the streams' user data
 * (iou_stream_set_data) for itself.  Errors as iou_server_start(). */
IOU_EXTERN int iou_task_server_start(iou_loop *loop,
				     const struct iou_server_opts *opts,
				     iou_task_handler handler, void *ud,
				     const struct iou_task_opts *topts,
				     iou_server **out);

/* Close s gracefully (iou_close_graceful() with the timeout; at once if
 * the task was cancelled) and wait until it is closed.  s is invalid
 * afterwards.  0, -EPERM, -EINVAL, IOU_ECLOSED. */
IOU_EXTERN int iou_task_close(iou_stream *s, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* IOU_H */
