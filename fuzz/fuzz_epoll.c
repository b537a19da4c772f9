/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the receive and send sides of streams on the epoll
 * backend (lib/epoll.c), through the public API only.  (fuzz_bufstream.c
 * fakes an io_uring kernel; this one fakes nothing.)
 *
 * The whole library is linked, built with the fuzzer's flags.  Per input:
 * one loop with opts.backend = IOU_BACKEND_EPOLL and a small pool (buffer
 * size, count and bundles from the input, so that -ENOBUFS, starvation and
 * spills happen), and 1-3 streams over real AF_UNIX SOCK_STREAM
 * socketpairs (iou_stream_open()) whose other ends this file drives as the
 * peer.  The input is a script of steps: the peer writes, shuts down its
 * sending side, closes (a reset when bytes it did not read are left);
 * the library reads (read, read_exactly, read_exactly_into, peek,
 * read_until; pipelined from the callback, or closing from it), forwards
 * (to another stream or back to its own peer), cancels the read, takes
 * the buffer, writes (write, write_all, feed, drain), shuts down, closes
 * (abortive or graceful), with read deadlines of 0 or a few ms; the loop
 * turns once, settles, or waits 1 ms; a freed stream is replaced by a new
 * one (the fd number comes back: epoll's fd table).  A forward's bytes
 * must be the source's next ones and reach the target's peer in order; a
 * failed forward leaves both models' bytes unknown from then on.
 *
 * A model per stream (the bytes the peer sent, the consumed offset, how
 * the peer ended) predicts each read's outcome (bytes, end of file,
 * IOU_EINCOMPLETE, IOU_EOVERFLOW, -ECONNRESET, ...) and every API call's
 * return; the bytes the library writes must reach the peer in order: the
 * peer's bytes are those of the completed writes followed by a prefix of
 * the pending ones.  Checked too: no callback runs inside the call that
 * queued it; every callback runs once, writes complete in order, the
 * close callback comes last; once the loop settled, a pending read is one
 * the bytes cannot serve and the stream buffered what it may; at the end,
 * after closing everything and running the loop until it has no work,
 * iou_loop_destroy() succeeds, nothing leaks (LSan) and no fd is left
 * open.  Any difference: abort().  FUZZ_VERBOSE=1 traces the steps.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iou.h"

#define FUZZ_NAME "fuzz_epoll"
#include "fuzz.h"

#define NSLOTS 3
#define MAX_OPENS 8      /* streams per input, replacements included */
#define MAX_STEPS 3000
#define MAX_WAITS 1      /* turns that may block (1 ms): deadlines pass */
#define WQ 32            /* writes pending per stream */
#define SETTLE_TURNS 2000

/* ---- state -------------------------------------------------------------- */


enum { R_NONE, R_READ, R_EXACTLY, R_PEEK, R_UNTIL, R_INTO, R_FWD };
enum { W_SOME, W_ALL, W_DRAIN };
enum { END_NONE, END_EOF, END_RESET };

struct wr {
	unsigned char *buf; /* ours; NULL for an empty drain */
	size_t len;
	int kind;
};

struct model {
	iou_stream *s;     /* NULL once its close callback ran */
	int slot;
	int pfd;           /* the peer's end, -1 once closed */
	size_t max_buffered;
	bool closing;      /* iou_close or iou_close_graceful returned 0 */
	bool graceful;
	unsigned grace_ms;
	bool rd_shut, wr_shut;
	bool ever_read;    /* a read was issued: the stream receives */
	unsigned rto;      /* read timeout for reads issued from now on */
	unsigned outstanding; /* callbacks owed: the read and the writes */

	/* receive side */
	struct bytes sent; /* every byte the peer's socket accepted */
	size_t cons;       /* consumed by the application */
	bool peer_shut, peer_closed;
	bool eof_ok, reset_ok; /* how the library may see the peer end */
	int lib_end;       /* how it did (END_*) */

	/* the pending read */
	int rk;
	size_t rn;
	unsigned char sep[8];
	size_t seplen;
	unsigned chain;    /* the callback issues the same read again */
	bool close_in_cb;
	bool cancelled;    /* iou_read_cancel() returned 0 for it */
	unsigned r_to;     /* its deadline (ms), 0 none */
	unsigned char *into;
	int fwd_to;        /* R_FWD: the target's slot */
	bool rx_desync;    /* a failed forward took bytes: cons unknown */

	/* send side */
	struct wr wq[WQ];
	unsigned wq_head, wq_n;
	struct bytes fed;  /* fed, not yet drained */
	struct bytes exp;  /* bytes of the completed writes, in order */
	struct bytes got;  /* what the peer read */
	size_t verified;   /* got and exp agree up to here */
	bool desync;       /* a failed write sent an unknown part */
	int wr_err;
	unsigned fwd_in;   /* forwards pending into this stream */
	bool wr_unknown;   /* a failed forward may have set its write error */
	bool peer_eof;     /* the peer's read saw the end */
};

static iou_loop *loop;
static struct model m[NSLOTS];
static int nslots, opens, waits;
static int in_api;         /* inside a call of the public API */
static unsigned sndbuf_lib, sndbuf_peer, pool_count;
static unsigned char scratch[65536];

#define API(call)                                                            \
	({                                                                   \
		in_api++;                                                    \
		__auto_type api_ret_ = (call);                               \
		in_api--;                                                    \
		api_ret_;                                                    \
	})

static size_t avail(const struct model *md)
{
	return md->sent.len - md->cons;
}

/* Whether p[0..n) are the peer's next bytes for the model. */
static bool peer_bytes(const struct model *md, const void *p, size_t n)
{
	return n <= md->sent.len - md->cons &&
	       (!n || memcmp(p, md->sent.p + md->cons, n) == 0);
}

/* Data that read_until finds separators in: lines of letters of 0-60
 * bytes, made once (a loop per byte, instrumented, cost a third of the
 * time); `seed` picks where to start. */
static unsigned char lines[sizeof(scratch) + 4096];

static void lines_init(void)
{
	uint32_t x = 1;

	for (size_t i = 0, left = 0; i < sizeof(lines); i++) {
		x = x * 1103515245u + 12345u;
		if (!left) {
			lines[i] = '\n';
			left = 1 + (x >> 16) % 61;
		} else {
			lines[i] = (unsigned char)('a' + (x >> 16) % 26);
			left--;
		}
	}
}

static void pattern(unsigned char *p, size_t n, unsigned seed)
{
	memcpy(p, lines + (seed * 61u) % 4096, n);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d, "opendir /proc/self/fd: %d", errno);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* ---- the peer ----------------------------------------------------------- */

/* The peer's bytes must be those of the completed writes, then a prefix of
 * the pending ones (in order; a pending write's bytes go out from its
 * start). */
static void check_out(struct model *md)
{
	size_t n = md->got.len < md->exp.len ? md->got.len : md->exp.len;
	size_t at;

	if (md->desync)
		return;
	if (n > md->verified) {
		CHECK(memcmp(md->got.p + md->verified, md->exp.p + md->verified,
			     n - md->verified) == 0,
		      "slot %d: the peer got bytes %zu..%zu other than written",
		      md->slot, md->verified, n);
		md->verified = n;
	}
	if (md->fwd_in)
		return; /* where forwarded bytes go is known at their callback */
	at = md->exp.len;
	for (unsigned k = 0; k < md->wq_n && at < md->got.len; k++) {
		const struct wr *w = &md->wq[(md->wq_head + k) % WQ];
		size_t c = md->got.len - at < w->len ? md->got.len - at : w->len;

		CHECK(!c || memcmp(md->got.p + at, w->buf, c) == 0,
		      "slot %d: the peer got bytes at %zu other than those of "
		      "pending write %u", md->slot, at, k);
		at += c;
	}
	CHECK(at >= md->got.len,
	      "slot %d: the peer got %zu bytes, written (done and pending) %zu",
	      md->slot, md->got.len, at);
}

/* The peer reads up to max bytes (without blocking); how many it got. */
static size_t peer_read(struct model *md, size_t max)
{
	size_t total = 0;

	while (md->pfd >= 0 && !md->peer_eof && total < max) {
		size_t want = max - total < sizeof(scratch) ? max - total
							    : sizeof(scratch);
		ssize_t r = recv(md->pfd, scratch, want, MSG_DONTWAIT);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			/* The library's end: its FIN, its close; a reset
			 * when it closed with bytes of ours unread. */
			CHECK(r == 0 || errno == ECONNRESET,
			      "slot %d: peer recv: %d", md->slot, errno);
			CHECK(md->wr_shut || md->closing || md->wr_err,
			      "slot %d: the peer sees the end (%zd, %d), the "
			      "library did not end its side", md->slot, r,
			      r < 0 ? errno : 0);
			CHECK(r == 0 || md->closing,
			      "slot %d: the peer got a reset, no close", md->slot);
			md->peer_eof = true;
			if (r == 0 && !md->closing && !md->wr_err && !md->desync) {
				check_out(md);
				CHECK(md->wq_n == 0 && md->got.len == md->exp.len,
				      "slot %d: FIN after %zu bytes, %zu written, %u "
				      "writes pending", md->slot, md->got.len,
				      md->exp.len, md->wq_n);
			}
			break;
		}
		bytes_add(&md->got, scratch, (size_t)r);
		total += (size_t)r;
	}
	check_out(md);
	return total;
}

static void peer_write(struct model *md, const unsigned char *p, size_t n)
{
	while (md->pfd >= 0 && !md->peer_shut && n) {
		ssize_t r = send(md->pfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			CHECK(errno == EAGAIN || errno == EWOULDBLOCK ||
				      errno == EPIPE || errno == ECONNRESET,
			      "slot %d: peer send: %d", md->slot, errno);
			break;
		}
		bytes_add(&md->sent, p, (size_t)r);
		TRACE("  peer %d: sent %zd (total %zu)\n", md->slot, r,
		      md->sent.len);
		p += r;
		n -= (size_t)r;
	}
}

static void peer_shutdown(struct model *md)
{
	if (md->pfd < 0 || md->peer_shut)
		return;
	CHECK(shutdown(md->pfd, SHUT_WR) == 0, "peer shutdown: %d", errno);
	md->peer_shut = true;
	md->eof_ok = true;
}

/* Close the peer's end: AF_UNIX gives the library -ECONNRESET (after the
 * bytes) if bytes of the library's were left unread, else end of file. */
static void peer_close(struct model *md, bool read_first)
{
	int unread = 0;

	if (md->pfd < 0)
		return;
	if (read_first)
		peer_read(md, SIZE_MAX);
	CHECK(ioctl(md->pfd, FIONREAD, &unread) == 0, "FIONREAD: %d", errno);
	if (unread > 0)
		md->reset_ok = true;
	else
		md->eof_ok = true;
	TRACE("  peer %d: close (%d unread)\n", md->slot, unread);
	close(md->pfd);
	md->pfd = -1;
	md->peer_closed = true;
}

/* ---- reads -------------------------------------------------------------- */

static void issue(struct model *md, int kind, size_t n, const void *sep,
		  size_t seplen, unsigned chain, bool close_in_cb);

static void end_seen(struct model *md, int how)
{
	if (how == END_EOF)
		CHECK(md->eof_ok, "slot %d: end of file, the peer did not end",
		      md->slot);
	else
		CHECK(md->reset_ok, "slot %d: -ECONNRESET, the peer did not "
		      "reset", md->slot);
	CHECK(md->lib_end == END_NONE || md->lib_end == how,
	      "slot %d: the stream ended two ways", md->slot);
	md->lib_end = how;
}

/* Whether sep occurs in the first n bytes the model holds. */
static bool sep_within(const struct model *md, size_t n)
{
	if (n > avail(md))
		n = avail(md);
	return n >= md->seplen &&
	       memmem(md->sent.p + md->cons, n, md->sep, md->seplen);
}

/* A read's end without the bytes it wants (0, IOU_EINCOMPLETE, a reset):
 * everything the peer sent arrived first. */
static void check_end(struct model *md, ssize_t res, size_t b, size_t got)
{
	CHECK(b + got == avail(md),
	      "slot %d: read ends with %zd, %zu buffered + %zu got, the peer "
	      "sent %zu more", md->slot, res, b, got, avail(md));
	if (res == 0) {
		CHECK(b == 0 && got == 0, "slot %d: 0 with %zu buffered",
		      md->slot, b);
		end_seen(md, END_EOF);
	} else if (res == -IOU_EINCOMPLETE) {
		CHECK(b + got > 0, "slot %d: IOU_EINCOMPLETE with nothing",
		      md->slot);
		end_seen(md, END_EOF);
	} else {
		end_seen(md, END_RESET);
	}
}

static void take_in_cb(iou_stream *s, struct model *md)
{
	unsigned char tmp[4];

	CHECK(API(iou_take_buffer(s, tmp, sizeof(tmp))) == -EBUSY,
	      "slot %d: take_buffer inside a read callback with data",
	      md->slot);
}

static void close_cb(iou_stream *s, void *ud);

static void after_read(struct model *md, int kind, ssize_t res)
{
	if (md->close_in_cb) {
		CHECK(API(iou_close(md->s, close_cb, md)) == 0,
		      "slot %d: close from the read callback", md->slot);
		md->closing = true;
		return;
	}
	if (md->chain && res > 0 && !md->closing)
		issue(md, kind, md->rn, md->sep, md->seplen, md->chain - 1,
		      false);
}

/* What every read callback checks first; false: a cancel or a close
 * ended it (checked). */
static bool read_begin(struct model *md, iou_stream *s, ssize_t res)
{
	CHECK(!in_api, "slot %d: read callback inside an API call", md->slot);
	CHECK(md->s == s, "read callback for a stream not (any more) open");
	CHECK(md->rk != R_NONE, "slot %d: read callback, no read pending",
	      md->slot);
	CHECK(md->outstanding > 0, "slot %d: callbacks underflow", md->slot);
	md->outstanding--;
	if (md->closing || md->cancelled) {
		/* also when its deadline passed meanwhile */
		CHECK(res == -ECANCELED,
		      "slot %d: read (kind %d) after %s got %zd", md->slot,
		      md->rk, md->closing ? "close" : "cancel", res);
		return false;
	}
	if (res == -ETIMEDOUT) {
		CHECK(md->r_to, "slot %d: -ETIMEDOUT without a deadline",
		      md->slot);
		return false;
	}
	if (res == -ECANCELED)
		fail("slot %d: -ECANCELED, no cancel, no close", md->slot);
	return true;
}

static void read_cb(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct model *md = ud;
	int kind = md->rk;
	size_t b = iou_buffered(s);

	TRACE("  cb: slot %d read kind %d n %zu -> %zd (buffered %zu, model "
	      "%zu)\n", md->slot, kind, md->rn, res, b, avail(md));
	if (!read_begin(md, s, res)) {
		md->rk = R_NONE;
		CHECK(!data, "slot %d: data with %zd", md->slot, res);
		if (!md->closing)
			after_read(md, kind, res);
		return;
	}
	md->rk = R_NONE;
	if (md->rx_desync) {
		CHECK(res > 0 ? data != NULL : !data, "slot %d: data with %zd",
		      md->slot, res);
		after_read(md, kind, res);
		return;
	}
	if (res > 0) {
		size_t n = (size_t)res;

		CHECK(data && peer_bytes(md, data, n),
		      "slot %d: read kind %d delivered %zu bytes other than the "
		      "peer's", md->slot, kind, n);
		switch (kind) {
		case R_READ:
			CHECK(n <= md->rn && (n == md->rn || b == 0),
			      "slot %d: read(%zu) got %zu, %zu left buffered",
			      md->slot, md->rn, n, b);
			break;
		case R_EXACTLY:
		case R_PEEK:
			CHECK(n == md->rn, "slot %d: read_exactly/peek(%zu) got "
			      "%zu", md->slot, md->rn, n);
			CHECK(kind == R_EXACTLY || b >= n,
			      "slot %d: peek: %zu buffered after", md->slot, b);
			break;
		case R_UNTIL:
			CHECK(n <= md->rn && n >= md->seplen &&
				      !memcmp((const char *)data + n - md->seplen,
					      md->sep, md->seplen) &&
				      !memmem(data, n - 1, md->sep, md->seplen),
			      "slot %d: read_until(max %zu) got %zu bytes not "
			      "ending at the first separator", md->slot, md->rn,
			      n);
			break;
		}
		if (kind != R_PEEK)
			md->cons += n;
		take_in_cb(s, md);
	} else if (res == 0 || res == -IOU_EINCOMPLETE || res == -ECONNRESET) {
		CHECK(!data, "slot %d: data with %zd", md->slot, res);
		CHECK(res != -IOU_EINCOMPLETE || kind != R_READ,
		      "slot %d: IOU_EINCOMPLETE for a read", md->slot);
		if (kind == R_EXACTLY || kind == R_PEEK)
			CHECK(b < md->rn, "slot %d: end %zd with %zu of %zu",
			      md->slot, res, b, md->rn);
		if (kind == R_UNTIL)
			CHECK(b < md->rn && !sep_within(md, b),
			      "slot %d: read_until ends %zd with the bytes there",
			      md->slot, res);
		if (kind == R_READ)
			CHECK(b == 0, "slot %d: read ends %zd with %zu "
			      "buffered", md->slot, res, b);
		check_end(md, res, b, 0);
	} else if (res == -IOU_EOVERFLOW) {
		CHECK(kind == R_UNTIL && b >= md->rn && b <= avail(md) &&
			      !sep_within(md, md->rn),
		      "slot %d: IOU_EOVERFLOW, kind %d max %zu buffered %zu",
		      md->slot, kind, md->rn, b);
	} else if (res == -IOU_ECLOSED) {
		CHECK(md->rd_shut, "slot %d: IOU_ECLOSED, not shut", md->slot);
	} else {
		fail("slot %d: read kind %d got %zd", md->slot, kind, res);
	}
	after_read(md, kind, res);
}

static void into_cb(iou_stream *s, ssize_t res, size_t got, void *ud)
{
	struct model *md = ud;
	size_t b = iou_buffered(s);

	TRACE("  cb: slot %d into n %zu -> %zd got %zu (buffered %zu, model "
	      "%zu)\n", md->slot, md->rn, res, got, b, avail(md));
	CHECK(got <= md->rn && (md->rx_desync || peer_bytes(md, md->into, got)),
	      "slot %d: read_exactly_into stored %zu bytes other than the "
	      "peer's", md->slot, got);
	CHECK(res < 0 || (size_t)res == got, "slot %d: into %zd, got %zu",
	      md->slot, res, got);
	free(md->into);
	md->into = NULL;
	if (!read_begin(md, s, res)) {
		md->rk = R_NONE;
		md->cons += got; /* consumed either way */
		return;
	}
	md->rk = R_NONE;
	if (md->rx_desync) {
		CHECK(res <= 0 || got == md->rn, "slot %d: into %zd", md->slot,
		      res);
		return;
	}
	if (res > 0) {
		CHECK(got == md->rn, "slot %d: into(%zu) got %zu", md->slot,
		      md->rn, got);
	} else if (res == 0 || res == -IOU_EINCOMPLETE || res == -ECONNRESET) {
		CHECK(b == 0 && got < md->rn && (res != 0 || got == 0),
		      "slot %d: into(%zu) ends %zd after %zu, %zu buffered",
		      md->slot, md->rn, res, got, b);
		check_end(md, res, b, got);
	} else if (res == -IOU_ECLOSED) {
		CHECK(md->rd_shut, "slot %d: IOU_ECLOSED, not shut", md->slot);
	} else {
		fail("slot %d: into got %zd", md->slot, res);
	}
	md->cons += got;
}

/* Issue a read; the model predicts the return. */
static void issue(struct model *md, int kind, size_t n, const void *sep,
		  size_t seplen, unsigned chain, bool close_in_cb)
{
	int want, ret;

	if (md->closing || md->rd_shut)
		want = -IOU_ECLOSED;
	else if (md->rk != R_NONE)
		want = -EBUSY;
	else
		want = 0;
	if ((kind == R_EXACTLY || kind == R_PEEK) && n > md->max_buffered)
		want = -EINVAL;
	if (kind == R_UNTIL && (n < seplen || n > md->max_buffered))
		want = -EINVAL;
	if (kind == R_UNTIL && want == 0) {
		memmove(md->sep, sep, seplen); /* also md->sep itself */
		md->seplen = seplen;
	}
	switch (kind) {
	case R_READ:
		ret = API(iou_read(md->s, n, read_cb, md));
		break;
	case R_EXACTLY:
		ret = API(iou_read_exactly(md->s, n, read_cb, md));
		break;
	case R_PEEK:
		ret = API(iou_peek(md->s, n, read_cb, md));
		break;
	case R_UNTIL:
		ret = API(iou_read_until(md->s, sep, seplen, n, read_cb, md));
		break;
	default: {
		unsigned char *buf = malloc(n);

		CHECK(buf, "out of memory");
		ret = API(iou_read_exactly_into(md->s, buf, n, into_cb, md));
		if (ret == 0)
			md->into = buf;
		else
			free(buf);
		break;
	}
	}
	TRACE("  slot %d: read kind %d n %zu sep %zu chain %u -> %d\n",
	      md->slot, kind, n, seplen, chain, ret);
	CHECK(ret == want, "slot %d: read kind %d n %zu returned %d, want %d",
	      md->slot, kind, n, ret, want);
	if (ret < 0)
		return;
	md->rk = kind;
	md->rn = n;
	md->chain = chain;
	md->close_in_cb = close_in_cb;
	md->cancelled = false;
	md->r_to = md->rto;
	md->ever_read = true;
	md->outstanding++;
}

/* A forward's bytes are the source's next ones and go out on the target
 * in order with its writes (its callback comes at their send's end).  A
 * failed one leaves both sides unknown: bytes may have been taken, and
 * some sent. */
static void fwd_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct model *md = ud, *to = &m[md->fwd_to];
	size_t b = iou_buffered(s);

	TRACE("  cb: slot %d forward to %d max %zu -> %zd\n", md->slot,
	      md->fwd_to, md->rn, res);
	CHECK(!in_api, "slot %d: forward callback inside an API call",
	      md->slot);
	CHECK(md->s == s && md->rk == R_FWD && md->outstanding > 0,
	      "forward callback, no forward pending");
	CHECK(to->fwd_in > 0, "slot %d: forward into %d not counted",
	      md->slot, md->fwd_to);
	md->rk = R_NONE;
	md->outstanding--;
	to->fwd_in--;
	if (res > 0) {
		size_t n = (size_t)res;

		/* (after a close too: its send was in flight, and writes
		 * end with their result or -ECANCELED) */
		CHECK(!md->cancelled, "slot %d: forward done after its cancel",
		      md->slot);
		CHECK(n <= md->rn, "slot %d: forward(max %zu) sent %zu",
		      md->slot, md->rn, n);
		if (!md->rx_desync) {
			CHECK(peer_bytes(md, md->sent.p + md->cons, n),
			      "slot %d: forward past the peer's bytes", md->slot);
			if (!to->desync)
				bytes_add(&to->exp, md->sent.p + md->cons, n);
			md->cons += n;
		} else {
			to->desync = true;
		}
		check_out(to);
	} else if (res == 0) {
		CHECK(!md->cancelled && !md->closing,
		      "slot %d: forward end of file after its cancel or close",
		      md->slot);
		if (!md->rx_desync)
			check_end(md, 0, b, 0);
	} else {
		CHECK(!md->cancelled || res == -ECANCELED,
		      "slot %d: cancelled forward got %zd", md->slot, res);
		md->rx_desync = true;
		to->desync = true;
		to->wr_unknown = true;
	}
}

static void issue_forward(struct model *md, struct model *to, size_t max)
{
	int want, ret;

	if (to->closing || to->wr_shut)
		want = -IOU_ECLOSED;
	else if (md->rk != R_NONE)
		want = -EBUSY;
	else if (md->closing || md->rd_shut)
		want = -IOU_ECLOSED;
	else
		want = 0;
	ret = API(iou_forward(md->s, to->s, max, fwd_cb, md));
	TRACE("  slot %d: forward to %d max %zu -> %d\n", md->slot, to->slot,
	      max, ret);
	CHECK(ret == want, "slot %d: forward returned %d, want %d", md->slot,
	      ret, want);
	if (ret < 0)
		return;
	md->rk = R_FWD;
	md->rn = max;
	md->fwd_to = to->slot;
	md->cancelled = false;
	md->close_in_cb = false;
	md->chain = 0;
	md->ever_read = true;
	md->outstanding++;
	to->fwd_in++;
}

/* ---- writes ------------------------------------------------------------- */

static void write_cb(iou_stream *s, ssize_t res, void *ud)
{
	struct model *md = ud;
	struct wr *w;

	CHECK(!in_api, "slot %d: write callback inside an API call", md->slot);
	CHECK(md->s == s, "write callback for a stream not (any more) open");
	CHECK(md->wq_n > 0, "slot %d: write callback, none pending", md->slot);
	w = &md->wq[md->wq_head];
	TRACE("  cb: slot %d write kind %d len %zu -> %zd\n", md->slot,
	      w->kind, w->len, res);
	md->wq_head = (md->wq_head + 1) % WQ;
	md->wq_n--;
	md->outstanding--;
	if (res >= 0) {
		CHECK(!md->wr_err || md->wr_unknown,
		      "slot %d: write %zd after error %d", md->slot, res,
		      md->wr_err);
		CHECK((size_t)res == w->len ||
			      (w->kind == W_SOME && res > 0 &&
			       (size_t)res < w->len),
		      "slot %d: write kind %d of %zu got %zd", md->slot, w->kind,
		      w->len, res);
		bytes_add(&md->exp, w->buf, (size_t)res);
		check_out(md);
	} else {
		/* Once a write failed, the ones behind it fail the same way. */
		CHECK(!md->wr_err || res == md->wr_err || md->wr_unknown,
		      "slot %d: write failed %zd after %d", md->slot, res,
		      md->wr_err);
		CHECK((res == -ECANCELED && md->closing) ||
			      ((res == -EPIPE || res == -ECONNRESET) &&
			       md->peer_closed) ||
			      (res == -ETIMEDOUT && md->graceful && md->grace_ms),
		      "slot %d: write failed with %zd", md->slot, res);
		md->wr_err = (int)res;
		md->desync = true; /* part of it may have gone */
	}
	free(w->buf);
}

/* What a write, feed or drain returns now; 1: 0 or an error, unknown
 * (learnt from the return). */
static int write_want(const struct model *md)
{
	if (md->closing || md->wr_shut)
		return -IOU_ECLOSED;
	return md->wr_unknown && !md->wr_err ? 1 : md->wr_err;
}

static bool write_ret_ok(struct model *md, int want, int ret)
{
	if (want != 1)
		return ret == want;
	if (ret < 0 && ret != -IOU_ECLOSED)
		md->wr_err = ret;
	return ret <= 0;
}

static void queue_wr(struct model *md, unsigned char *buf, size_t len,
		     int kind)
{
	struct wr *w = &md->wq[(md->wq_head + md->wq_n) % WQ];

	w->buf = buf;
	w->len = len;
	w->kind = kind;
	md->wq_n++;
	md->outstanding++;
}

static void do_drain(struct model *md)
{
	int want = write_want(md), ret;

	if (md->wq_n == WQ)
		return;
	ret = API(iou_drain(md->s, write_cb, md));
	TRACE("  slot %d: drain %zu -> %d\n", md->slot, md->fed.len, ret);
	CHECK(write_ret_ok(md, want, ret), "slot %d: drain returned %d, want "
	      "%d", md->slot, ret, want);
	if (ret < 0)
		return;
	queue_wr(md, md->fed.p, md->fed.len, W_DRAIN);
	memset(&md->fed, 0, sizeof(md->fed));
}

static void do_write(struct model *md, unsigned p, size_t len, unsigned seed)
{
	int want = write_want(md), ret, kind = p % 4;
	unsigned char *buf;

	if (md->wq_n == WQ)
		return;
	if (kind == 3) {
		do_drain(md);
		return;
	}
	buf = malloc(len);
	CHECK(buf, "out of memory");
	pattern(buf, len, seed);
	if (kind == 2) {
		ret = API(iou_feed(md->s, buf, len));
		TRACE("  slot %d: feed %zu -> %d\n", md->slot, len, ret);
		CHECK(write_ret_ok(md, want, ret), "slot %d: feed returned %d, "
		      "want %d", md->slot, ret, want);
		if (ret == 0)
			bytes_add(&md->fed, buf, len);
		CHECK(API(iou_fed(md->s)) == md->fed.len, "slot %d: iou_fed",
		      md->slot);
		free(buf);
		return;
	}
	if (kind == 0)
		ret = API(iou_write(md->s, buf, len, write_cb, md));
	else
		ret = API(iou_write_all(md->s, buf, len, write_cb, md));
	TRACE("  slot %d: write%s %zu -> %d\n", md->slot, kind ? "_all" : "",
	      len, ret);
	CHECK(write_ret_ok(md, want, ret), "slot %d: write returned %d, want "
	      "%d", md->slot, ret, want);
	if (ret < 0) {
		free(buf);
		return;
	}
	queue_wr(md, buf, len, kind ? W_ALL : W_SOME);
}

/* ---- streams ------------------------------------------------------------ */

static void close_cb(iou_stream *s, void *ud)
{
	struct model *md = ud;

	TRACE("  cb: slot %d closed\n", md->slot);
	CHECK(!in_api, "slot %d: close callback inside an API call", md->slot);
	CHECK(md->s == s && md->closing, "close callback of a stream not "
	      "closing");
	CHECK(md->outstanding == 0 && md->rk == R_NONE && md->wq_n == 0 &&
		      md->fwd_in == 0,
	      "slot %d: close callback before %u other callbacks", md->slot,
	      md->outstanding);
	md->s = NULL;
}

static void model_free(struct model *md)
{
	free(md->sent.p);
	free(md->fed.p);
	free(md->exp.p);
	free(md->got.p);
	free(md->into);
	memset(md, 0, sizeof(*md));
	md->pfd = -1;
}

static void open_stream(struct model *md, int slot, unsigned p, unsigned q)
{
	struct iou_stream_opts o;
	int sv[2], ret;

	if (md->pfd >= 0)
		close(md->pfd);
	model_free(md);
	md->slot = slot;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0,
	      "socketpair: %d", errno);
	CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0, "fcntl: %d", errno);
	/* (bounds what a peer can have in flight: settle() turns) */
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf_peer,
		   sizeof(sndbuf_peer));
	iou_stream_opts_init(&o);
	o.max_buffered = 1 + (p | q << 8) % 6000;
	o.sndbuf = (int)sndbuf_lib;
	ret = API(iou_stream_open(loop, sv[0], &o, &md->s));
	CHECK(ret == 0, "iou_stream_open: %d", ret);
	md->pfd = sv[1];
	md->max_buffered = o.max_buffered;
	opens++;
	TRACE("slot %d: stream on fd %d, max_buffered %zu\n", slot, sv[0],
	      md->max_buffered);
}

static void do_close(struct model *md, unsigned p)
{
	int ret, want = md->closing ? -IOU_ECLOSED : 0;

	/* fed bytes first, with a callback of ours: a graceful close would
	 * drain them without */
	if ((p & 1) && !md->closing && md->fed.len && !md->wr_err &&
	    !md->wr_shut)
		do_drain(md);
	if ((p & 1) && !(md->fed.len && !md->closing)) {
		unsigned ms = (p >> 1) % 4 == 3 ? 1 + (p >> 3) % 5 : 0;

		ret = API(iou_close_graceful(md->s, ms, close_cb, md));
		TRACE("  slot %d: close_graceful(%u) -> %d\n", md->slot, ms,
		      ret);
		if (ret == 0) {
			md->graceful = true;
			md->grace_ms = ms;
		}
	} else {
		ret = API(iou_close(md->s, close_cb, md));
		TRACE("  slot %d: close -> %d\n", md->slot, ret);
	}
	CHECK(ret == want, "slot %d: close returned %d, want %d", md->slot, ret,
	      want);
	md->closing = true;
}

static void do_shutdown(struct model *md, int how)
{
	int ret, want = md->closing ? -IOU_ECLOSED : 0;

	if (how != SHUT_RD && !md->closing && md->fed.len && !md->wr_err &&
	    !md->wr_shut) {
		do_drain(md);
		if (md->fed.len)
			return; /* no room for the drain */
	}
	ret = API(iou_shutdown(md->s, how));
	TRACE("  slot %d: shutdown(%d) -> %d\n", md->slot, how, ret);
	CHECK(ret == want, "slot %d: shutdown returned %d, want %d", md->slot,
	      ret, want);
	if (ret < 0)
		return;
	if (how != SHUT_WR)
		md->rd_shut = true;
	if (how != SHUT_RD)
		md->wr_shut = true;
}

static void do_take(struct model *md, size_t cap)
{
	size_t b = iou_buffered(md->s);
	ssize_t ret = API(iou_take_buffer(md->s, scratch, cap));

	TRACE("  slot %d: take %zu -> %zd\n", md->slot, cap, ret);
	if (md->rk != R_NONE) {
		CHECK(ret == -EBUSY, "slot %d: take_buffer with a read pending: "
		      "%zd", md->slot, ret);
		return;
	}
	CHECK(ret == (ssize_t)(cap < b ? cap : b) &&
		      (md->rx_desync || peer_bytes(md, scratch, (size_t)ret)),
	      "slot %d: take_buffer(%zu) with %zu buffered: %zd, or other "
	      "bytes", md->slot, cap, b, ret);
	md->cons += (size_t)ret;
}

/* ---- turns -------------------------------------------------------------- */

static int turn(int ms)
{
	int n = iou_loop_run_once(loop, ms);

	CHECK(n >= 0, "iou_loop_run_once: %d", n);
	return n;
}

/* Turn until nothing happens for a few turns in a row (the peer reading
 * too, if asked); bounded: a stream takes at most max_buffered bytes a
 * turn. */
static void settle(bool peer_reads)
{
	int idle = 0, i, max = SETTLE_TURNS;

	for (int k = 0; k < nslots; k++)
		if (m[k].s)
			max += 2 * (int)(avail(&m[k]) / m[k].max_buffered);
	/* Two quiet turns: the second starts what the first queued. */
	for (i = 0; i < max && idle < 2; i++) {
		size_t got = 0;

		if (peer_reads)
			for (int k = 0; k < nslots; k++)
				got += peer_read(&m[k], SIZE_MAX);
		idle = turn(0) == 0 && !got ? idle + 1 : 0;
	}
	CHECK(idle >= 2, "the loop is still busy after %d turns", i);
}

/* After settling: a pending read is one the bytes cannot serve, and a
 * stream that reads took what the peer sent, up to max_buffered. */
static void check_settled(void)
{
	/* A pool of one buffer: the forwards' budget (a quarter, at least
	 * one) is all of it, and a forward stalled behind a target whose
	 * peer does not read starves every stream until that peer reads. */
	for (int k = 0; k < nslots && pool_count == 1; k++)
		if (m[k].s && m[k].rk == R_FWD)
			return;
	for (int k = 0; k < nslots; k++) {
		struct model *md = &m[k];
		size_t b, want;

		if (!md->s || md->closing || md->rx_desync || md->rk == R_FWD)
			continue;
		b = iou_buffered(md->s);
		CHECK(b <= md->max_buffered && b <= avail(md),
		      "slot %d: %zu buffered, max_buffered %zu, sent %zu",
		      k, b, md->max_buffered, avail(md));
		if (md->rk == R_INTO) {
			CHECK(b == 0 && !md->eof_ok && !md->reset_ok,
			      "slot %d: read_exactly_into waits, %zu buffered, "
			      "peer ended %d", k, b, md->eof_ok || md->reset_ok);
			continue;
		}
		if (md->ever_read && !md->rd_shut) {
			want = avail(md) < md->max_buffered ? avail(md)
							    : md->max_buffered;
			CHECK(b == want, "slot %d: settled with %zu buffered, the "
			      "peer sent %zu (max_buffered %zu)", k, b,
			      avail(md), md->max_buffered);
		}
		if (md->rk == R_NONE)
			continue;
		CHECK(!md->cancelled, "slot %d: cancelled read still pending", k);
		CHECK(!md->eof_ok && !md->reset_ok,
		      "slot %d: read kind %d waits, the peer ended", k, md->rk);
		switch (md->rk) {
		case R_READ:
			CHECK(b == 0, "slot %d: read waits, %zu buffered", k, b);
			break;
		case R_EXACTLY:
		case R_PEEK:
			CHECK(b < md->rn, "slot %d: read_exactly/peek(%zu) waits, "
			      "%zu buffered", k, md->rn, b);
			break;
		case R_UNTIL:
			CHECK(b < md->rn && !sep_within(md, b),
			      "slot %d: read_until(max %zu) waits, %zu buffered",
			      k, md->rn, b);
			break;
		}
	}
}

/* ---- the driver --------------------------------------------------------- */

static void step_read(struct model *md, unsigned op)
{
	unsigned p = u8(), chain = p & 3;
	bool cic = (p & 0x1c) == 0x1c;
	size_t n;

	switch (op) {
	case 4:
		n = 1 + u16() % 8192;
		issue(md, R_READ, n, NULL, 0, chain, cic);
		break;
	case 5:
		n = 1 + u16() % (md->max_buffered + 64);
		issue(md, p & 0x80 ? R_PEEK : R_EXACTLY, n, NULL, 0, chain, cic);
		break;
	case 6: {
		unsigned char sep[8];
		size_t seplen = 1 + (p >> 5) % 4;

		for (size_t i = 0; i < seplen; i++)
			sep[i] = (unsigned char)u8();
		n = 1 + u16() % (md->max_buffered + 8);
		issue(md, R_UNTIL, n, sep, seplen, chain, cic);
		break;
	}
	default:
		if (p & 0x20) {
			struct model *to = &m[u8() % nslots];

			n = 1 + u16() % 12000;
			if (to->s)
				issue_forward(md, to, n);
			break;
		}
		n = 1 + u16() % 12000;
		issue(md, R_INTO, n, NULL, 0, 0, cic);
		break;
	}
}

static void step_misc(struct model *md, unsigned p)
{
	int ret;

	switch (p % 8) {
	case 0:
	case 1: /* a read deadline for the reads to come */
		if (md->closing)
			break;
		md->rto = (p >> 3) % 3 == 0 ? 0 : 1 + (p >> 5) % 4;
		ret = API(iou_stream_set_read_timeout(md->s, md->rto));
		CHECK(ret == (md->closing ? -IOU_ECLOSED : 0),
		      "slot %d: set_read_timeout: %d", md->slot, ret);
		break;
	case 2:
	case 3:
		if (waits < MAX_WAITS) {
			waits++;
			turn(1);
		}
		break;
	case 4:
		do_shutdown(md, SHUT_RD);
		break;
	case 5:
		do_shutdown(md, SHUT_WR);
		break;
	default:
		if (!md->closing)
			do_take(md, (p >> 3) * 97);
		break;
	}
}

static void run_steps(void)
{
	for (int k = 0; k < MAX_STEPS && in_n; k++) {
		unsigned b = u8(), op = b & 15, slot = (b >> 4) % nslots;
		struct model *md = &m[slot];

		if (!md->s) {
			/* freed: a new stream takes the slot (op 15), or the
			 * peer acts alone */
			if (op == 15 && opens < MAX_OPENS) {
				unsigned p = u8();

				open_stream(md, (int)slot, p, u8());
			} else if (op == 13) {
				turn(0);
			} else if (op == 11) {
				peer_read(md, SIZE_MAX);
			}
			continue;
		}
		TRACE("step %d: op %u slot %u\n", k, op, slot);
		switch (op) {
		case 0: { /* the peer writes bytes of the input */
			size_t len = 1 + u8();

			if (len > in_n)
				len = in_n;
			peer_write(md, in_p, len);
			in_p += len;
			in_n -= len;
			break;
		}
		case 1: { /* ... or many */
			size_t len = 1 + u16() % sizeof(scratch);

			pattern(scratch, len, u8());
			peer_write(md, scratch, len);
			break;
		}
		case 2:
			peer_shutdown(md);
			break;
		case 3:
			peer_close(md, u8() & 1);
			break;
		case 4:
		case 5:
		case 6:
		case 7:
			step_read(md, op);
			break;
		case 8:
			if (!md->closing) {
				int ret = API(iou_read_cancel(md->s));

				TRACE("  slot %d: read_cancel -> %d\n", md->slot,
				      ret);
				CHECK(ret == (md->rk != R_NONE ? 0 : -ENOENT) ||
					      (md->rk == R_FWD && ret == -EBUSY),
				      "slot %d: read_cancel returned %d", md->slot,
				      ret);
				if (ret == 0)
					md->cancelled = true;
			}
			break;
		case 9:
		case 10: {
			unsigned p = u8();
			size_t len = 1 + u16() % (p & 4 ? 24000 : 300);

			do_write(md, p, len, p >> 3);
			break;
		}
		case 11:
			peer_read(md, 1 + u16() * 4);
			break;
		case 12:
			do_close(md, u8());
			break;
		case 13:
			turn(0);
			break;
		case 14:
			settle(false);
			check_settled();
			break;
		default:
			step_misc(md, u8());
			break;
		}
	}
}

/* The peer reads everything and the loop settles: writes of streams whose
 * peer is there are done; then everything is closed (the peers end their
 * sides so that graceful closes finish) and the loop runs out of work. */
static void finish(void)
{
	int i;

	settle(true);
	check_settled();
	for (int k = 0; k < nslots; k++) {
		struct model *md = &m[k];

		if (md->s && !md->closing && !md->peer_closed)
			CHECK(md->wq_n == 0, "slot %d: %u writes never completed",
			      k, md->wq_n);
		if (md->s && !md->closing && !md->desync && !md->fwd_in)
			CHECK(md->got.len == md->exp.len || md->peer_closed,
			      "slot %d: the peer got %zu bytes of %zu written", k,
			      md->got.len, md->exp.len);
	}
	for (int k = 0; k < nslots; k++) {
		struct model *md = &m[k];

		peer_shutdown(md);
		if (md->s && !md->closing) {
			CHECK(API(iou_close(md->s, close_cb, md)) == 0,
			      "slot %d: final close", k);
			md->closing = true;
		}
	}
	for (i = 0; i < SETTLE_TURNS && iou_loop_alive(loop); i++) {
		for (int k = 0; k < nslots; k++)
			peer_read(&m[k], SIZE_MAX);
		turn(0);
	}
	for (int k = 0; k < nslots; k++)
		CHECK(!m[k].s, "slot %d: never closed (%d turns)", k, i);
	CHECK(!iou_loop_alive(loop), "the loop has work after closing all");
	CHECK(iou_loop_destroy(loop) == 0, "iou_loop_destroy");
	loop = NULL;
	for (int k = 0; k < nslots; k++) {
		if (m[k].pfd >= 0)
			close(m[k].pfd);
		model_free(&m[k]);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	lines_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct iou_loop_opts o;
	int fds = count_fds(), ret;
	unsigned b0, b1, b2;

	in_p = data;
	in_n = size;
	b0 = u8();
	b1 = u8();
	b2 = u8();
	iou_loop_opts_init(&o);
	o.backend = IOU_BACKEND_EPOLL;
	o.buf_size = 64 + (b0 | (b1 & 0xf0) << 4) % 4033;
	o.buf_count = 1u << (b1 % 5);
	pool_count = o.buf_count;
	if (b1 & 8)
		o.flags |= IOU_LOOP_NO_RECV_BUNDLE;
	nslots = 1 + (b2 & 3) % NSLOTS;
	sndbuf_lib = (b2 >> 2) & 1 ? 4096 : 0;
	sndbuf_peer = (b2 >> 3) & 1 ? 4096 : 32768;
	opens = waits = 0;
	in_api = 0;
	TRACE("loop: buf_size %u count %u bundles %d, %d streams, sndbuf %u/%u\n",
	      o.buf_size, o.buf_count, !(o.flags & IOU_LOOP_NO_RECV_BUNDLE),
	      nslots, sndbuf_lib, sndbuf_peer);
	ret = iou_loop_create(&loop, &o);
	CHECK(ret == 0, "iou_loop_create: %d", ret);
	CHECK(!strcmp(iou_loop_backend(loop), "epoll"), "not on epoll");
	for (int k = 0; k < NSLOTS; k++) {
		memset(&m[k], 0, sizeof(m[k]));
		m[k].pfd = -1;
	}
	for (int k = 0; k < nslots; k++) {
		unsigned p = u8();

		open_stream(&m[k], k, p, u8());
	}
	run_steps();
	finish();
	CHECK(count_fds() == fds, "fds: %d before, %d after", fds,
	      count_fds());
	return 0;
}
