/* SPDX-License-Identifier: MIT */
/*
 * Helpers for check_stream and check_bufstream: deterministic test bytes and
 * a "peer" thread that drives the far end of a real TCP connection with a
 * plain blocking socket (send in chunks of 1 byte .. large bursts, receive
 * and verify, then keep, shut down, close or reset the connection).
 *
 * Peer sockets get SO_RCVTIMEO/SO_SNDTIMEO so that no peer blocks for more
 * than TSP_IO_TIMEOUT_S at a time, and tsp_join() first waits a bounded time
 * and then shuts the socket down to unblock the thread.
 */
#ifndef T_STREAM_PEER_H
#define T_STREAM_PEER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "iou.h"

#define TSP_IO_TIMEOUT_S 20

/* Byte `off` of the test stream `seed` (no short period, differs per
 * seed). */
unsigned char tsp_byte(uint64_t seed, uint64_t off);
void tsp_fill(void *buf, size_t len, uint64_t seed, uint64_t off);
/* Index of the first byte of buf[0..len) that differs from the stream
 * `seed` at offset `off`, or len when all match. */
size_t tsp_mismatch(const void *buf, size_t len, uint64_t seed, uint64_t off);

/* What the peer does when its job is done. */
enum tsp_after {
	TSP_KEEP,     /* nothing: the test closes the fd */
	TSP_SHUT_WR,  /* shutdown(SHUT_WR): the stream sees EOF */
	TSP_RST,      /* SO_LINGER {1, 0} and close: the stream sees RST */
};

struct tsp_peer {
	pthread_t thread;
	int fd;
	int started;
	/* job */
	int sending;              /* 1: send, 0: receive */
	uint64_t seed;
	size_t len;               /* bytes to send, or to receive (SIZE_MAX:
				     until EOF) */
	size_t chunk;             /* bytes per send(), 0 = 64 KiB bursts */
	unsigned pause_us;        /* sleep between sends */
	enum tsp_after after;
	const unsigned char *src; /* send: these bytes instead of the stream
				     `seed` (tsp_send_buf_start) */
	unsigned char *store;     /* receive: keep the bytes here if set */
	size_t store_cap;
	int verify;               /* receive: compare with the stream `seed` */
	/* results */
	size_t done;              /* bytes sent or received */
	size_t bad_at;            /* first mismatch offset, SIZE_MAX if none */
	int eof;                  /* receive: saw end of file */
	int err;                  /* errno of a failed call, 0 if none */
	volatile int finished;
};

/* Start a thread that sends `len` bytes of the stream `seed` on fd in
 * chunks of `chunk` bytes (0: 64 KiB), sleeping pause_us between sends,
 * then does `after`.  The peer does not own fd (except TSP_RST closes it
 * and sets p->fd to -1). */
void tsp_send_start(struct tsp_peer *p, int fd, uint64_t seed, size_t len,
		    size_t chunk, unsigned pause_us, enum tsp_after after);

/* Same, sending src[0..len) (which must outlive the thread). */
void tsp_send_buf_start(struct tsp_peer *p, int fd, const void *src,
			size_t len, size_t chunk, unsigned pause_us,
			enum tsp_after after);

/* Start a thread that receives `len` bytes (SIZE_MAX: until EOF) on fd,
 * verifying them against the stream `seed` when verify is set and keeping
 * them in store[0..cap) when store is set, then does `after`. */
void tsp_recv_start(struct tsp_peer *p, int fd, size_t len, int verify,
		    uint64_t seed, unsigned char *store, size_t cap,
		    enum tsp_after after);

/* Wait up to timeout_ms for the thread; if it is still running, shut the
 * socket down to unblock it, then join.  Returns 0 if it had finished on
 * its own, -1 if it had to be unblocked.  No-op for a peer never started. */
int tsp_join(struct tsp_peer *p, int timeout_ms);

/* Reset the connection from this side: SO_LINGER {1, 0} and close. */
void tsp_rst(int fd);

/* Sets SO_RCVTIMEO/SO_SNDTIMEO to TSP_IO_TIMEOUT_S on fd. */
void tsp_set_timeouts(int fd);

/* One loop turn that waits at most 1 ms and, when it handled nothing,
 * sleeps 50 us.  The sleep lets peer threads run under valgrind, whose
 * scheduler does not hand the CPU to another thread while one waits in
 * io_uring_enter (a peer sending 1 byte at a time would starve).  Returns
 * iou_loop_run_once()'s result. */
int tsp_turn(iou_loop *loop);

/* tsp_turn() until *flag != 0 (or *count >= target), at most timeout_ms of
 * wall time and a bounded number of turns.  Returns 0, -ETIMEDOUT, or the
 * error of a turn. */
int tsp_run_until(iou_loop *loop, const int *flag, int timeout_ms);
int tsp_run_until_count(iou_loop *loop, const int *count, int target,
			int timeout_ms);

/* A connected TCP pair: *s wraps one side, the other fd is returned for
 * the peer. */
int tsp_open_pair(iou_loop *loop, const struct iou_stream_opts *o,
		  iou_stream **s);
/* Close callback counting into *(int *)ud. */
void tsp_count_close_cb(iou_stream *s, void *ud);
/* iou_close(s) and run until its callback ran (bounded). */
void tsp_close_and_wait(iou_loop *loop, iou_stream *s);
/* Run turns for about ms milliseconds. */
void tsp_run_for(iou_loop *loop, int ms);

#endif /* T_STREAM_PEER_H */
