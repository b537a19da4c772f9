/* SPDX-License-Identifier: MIT */
/*
 * soak: a churning, checking load for a TCP echo server, on iou (public API
 * only).  Used by bench/soak.sh and bench/scale.sh.
 *
 * Soak mode (default).  Keeps CONNS connections open for SECONDS.  Each
 * connection does a random number (0..MAXEX) of request/response exchanges
 * of random length (1..MAXLEN bytes, log-uniform so that small and large
 * messages are both common), then ends in one of four ways, chosen at
 * random, and is replaced by a new connection:
 *   close      iou_close() after the last exchange;
 *   reset      SO_LINGER {1, 0} then iou_close(): the server sees a RST;
 *   abort      write a message, then reset at once without reading it (the
 *              server gets a RST with data in flight; the write's callback
 *              may see any result);
 *   halfclose  send a last message, iou_shutdown(SHUT_WR), read the whole
 *              echo, then read to end of file (the server must echo what it
 *              got and close).
 * Every message is a window, at a random offset, of one read-only buffer of
 * pseudo-random bytes, and every echoed byte is compared with it.  After
 * SECONDS no new connection is opened and each one ends after its current
 * exchange.
 *
 * Scale mode (-S).  Opens CONNS connections (at most 256 connects in flight)
 * and prints "connected N"; then every connection does one exchange of LEN
 * bytes, all at the same time ("exchanged N"); then each connection
 * ping-pongs LEN-byte messages for SECONDS (closed loop) and the rate is
 * printed; then "served N ..." and the connections are held open until
 * stdin reaches end of file, and closed (the time the closes took is
 * printed).
 *
 * The random generator is seeded from -s SEED or from the time and pid; the
 * seed is printed first ("seed N"), so a run can be repeated with -s.
 *
 * Bounded in time: in soak mode a connection that makes no progress for
 * STALL seconds, or any connection still open SECONDS + 30 s after the
 * start, fails the run (all are then closed); in scale mode every phase must
 * finish within -T seconds (default 120, not counting the hold).
 *
 * Output: progress on stderr; a summary line on stdout
 *   "soak: ... errors E mismatches M" / "scale: ... errors E mismatches M".
 * Exit status 0 when there was no error and no mismatch, 1 otherwise, 2 on
 * bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "iou.h"

#define PATTERN_LEN (1u << 20)
#define MAXLEN_MAX 65536u
#define CONNECTS_AT_ONCE 256
#define MAX_REPORTS 10

enum end_mode { END_CLOSE, END_RESET, END_ABORT, END_HALFCLOSE, END_MODES };
static const char *const end_names[END_MODES] = { "close", "reset", "abort",
						  "halfclose" };

struct conn {
	iou_stream *s;
	uint64_t id;          /* connection number, from 1 */
	const unsigned char *msg;
	size_t len;
	int left;             /* exchanges still to do */
	int mode;             /* enum end_mode */
	int wdone, rdone;     /* this exchange */
	int last;             /* this is the half-close message */
	int closing, aborting, connecting;
	uint64_t progress_ms; /* last progress, for the stall check */
};

static struct {
	const char *host;
	uint16_t port;
	unsigned conns;
	double seconds;
	unsigned maxlen;
	int maxex;
	int scale;
	unsigned len;
	unsigned nsrc;
	double stall_s;
	double limit_s;
	unsigned long long seed;
} cfg = {
	.host = "127.0.0.1", .port = 8080, .conns = 1000, .seconds = 60,
	.maxlen = MAXLEN_MAX, .maxex = 20, .len = 64, .nsrc = 1, .stall_s = 10,
	.limit_s = 120,
};

static unsigned char *pattern;
static uint64_t rng_state;
static iou_loop *loop;
static struct conn *conns;
static iou_timer *tick;
static uint64_t t0_ms, now_ms_cached;

/* counters */
static uint64_t opened, closed_n, connecting_n, open_n, exchanges, bytes_checked;
static uint64_t errors, mismatches, mismatched_bytes, ended[END_MODES];
static int stopping, failed_hard, reports;
static uint64_t next_conn_id = 1;
static unsigned pending_connects;

/* scale mode */
static int phase; /* 0 connecting, 1 one exchange each, 2 timed run, 3 wait, 4 hold, 5 closing */
static uint64_t phase_done, requests_in_window, phase_start_ns, run_end_ns;
static uint64_t close_start_ns;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void) { return now_ns() / 1000000u; }

/* splitmix64 */
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

/* log-uniform length in 1..cfg.maxlen */
static size_t rnd_len(void)
{
	unsigned bits = 0, m = cfg.maxlen;
	uint64_t lo, hi;

	while ((1u << bits) < m)
		bits++;
	unsigned b = (unsigned)rnd_below(bits + 1); /* 0..bits */
	lo = b ? (1ull << (b - 1)) + 1 : 1;
	hi = 1ull << b;
	if (hi > m)
		hi = m;
	if (lo > hi)
		lo = hi;
	return (size_t)(lo + rnd_below(hi - lo + 1));
}

static void report(struct conn *c, const char *what, long err)
{
	if (reports++ < MAX_REPORTS)
		fprintf(stderr, "soak: connection %llu (%s): %s%s%s\n",
			(unsigned long long)c->id, end_names[c->mode], what,
			err ? ": " : "", err ? iou_strerror((int)err) : "");
	else if (reports == MAX_REPORTS + 1)
		fprintf(stderr, "soak: further errors not shown\n");
}

static void start_conn(struct conn *c);
static void next_step(struct conn *c);
static void maybe_finish(void);

static void on_closed(iou_stream *s, void *ud)
{
	struct conn *c = ud;

	(void)s;
	c->s = NULL;
	c->closing = 0;
	open_n--;
	closed_n++;
	if (!cfg.scale && !stopping && !failed_hard)
		start_conn(c);
	maybe_finish();
}

static void conn_close(struct conn *c)
{
	if (!c->s || c->closing)
		return;
	c->closing = 1;
	if (iou_close(c->s, on_closed, c) < 0) {
		errors++;
		report(c, "iou_close failed", 0);
	}
}

static void conn_fail(struct conn *c, const char *what, long err)
{
	if (c->closing)
		return;
	errors++;
	report(c, what, err);
	conn_close(c);
}

static void check_echo(struct conn *c, const void *data, size_t n)
{
	const unsigned char *got = data;

	if (memcmp(got, c->msg, n) != 0) {
		size_t bad = 0, first = n;

		for (size_t i = 0; i < n; i++)
			if (got[i] != c->msg[i]) {
				bad++;
				if (first == n)
					first = i;
			}
		mismatches++;
		mismatched_bytes += bad;
		if (reports++ < MAX_REPORTS)
			fprintf(stderr, "soak: connection %llu: echo of %zu bytes differs in %zu bytes, first at %zu\n",
				(unsigned long long)c->id, n, bad, first);
	}
	bytes_checked += n;
}

static void exchange_done(struct conn *c)
{
	exchanges++;
	c->progress_ms = now_ms_cached;
	if (cfg.scale) {
		phase_done++;
		if (phase == 2) {
			if (now_ns() < run_end_ns) {
				requests_in_window++;
				next_step(c);
				return;
			}
		}
		maybe_finish();
		return;
	}
	c->left--;
	next_step(c);
}

static void on_eof(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct conn *c = ud;

	(void)s;
	(void)data;
	if (c->closing)
		return;
	if (res != 0) {
		conn_fail(c, res > 0 ? "bytes after the last echo" : "read to EOF failed",
			  res > 0 ? 0 : (long)res);
		return;
	}
	ended[END_HALFCLOSE]++;
	conn_close(c);
}

static void on_read(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct conn *c = ud;
	int ret;

	if (c->closing)
		return;
	if (res < 0) {
		conn_fail(c, "read failed", (long)res);
		return;
	}
	if ((size_t)res != c->len) {
		conn_fail(c, "short read", 0);
		return;
	}
	check_echo(c, data, c->len);
	c->rdone = 1;
	if (c->last) {
		/* half-close: everything echoed; now the server must close */
		exchanges++;
		ret = iou_read(s, 1, on_eof, c);
		if (ret < 0)
			conn_fail(c, "iou_read", ret);
		return;
	}
	if (c->wdone)
		exchange_done(c);
}

static void on_write(iou_stream *s, ssize_t res, void *ud)
{
	struct conn *c = ud;

	(void)s;
	if (c->aborting || c->closing)
		return; /* any result is fine once we chose to reset */
	if (res < 0 || (size_t)res != c->len) {
		conn_fail(c, "write failed", res < 0 ? (long)res : 0);
		return;
	}
	c->wdone = 1;
	if (c->rdone && !c->last)
		exchange_done(c);
}

static int send_msg(struct conn *c, size_t len)
{
	int ret;

	c->len = len;
	c->msg = pattern + rnd_below(PATTERN_LEN - len + 1);
	c->wdone = c->rdone = 0;
	ret = iou_write_all(c->s, c->msg, len, on_write, c);
	if (ret < 0) {
		conn_fail(c, "iou_write_all", ret);
		return ret;
	}
	return 0;
}

static void set_linger0(struct conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(iou_stream_fd(c->s), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		conn_fail(c, "SO_LINGER", -errno);
}

static void next_step(struct conn *c)
{
	int ret;

	if (c->closing)
		return;
	if (stopping && !cfg.scale && c->left > 0)
		c->left = 0;
	if (cfg.scale || c->left > 0) {
		if (send_msg(c, cfg.scale ? cfg.len : rnd_len()) < 0)
			return;
		ret = iou_read_exactly(c->s, c->len, on_read, c);
		if (ret < 0)
			conn_fail(c, "iou_read_exactly", ret);
		return;
	}
	switch (c->mode) {
	case END_CLOSE:
		ended[END_CLOSE]++;
		conn_close(c);
		break;
	case END_RESET:
		set_linger0(c);
		ended[END_RESET]++;
		conn_close(c);
		break;
	case END_ABORT:
		if (send_msg(c, rnd_len()) < 0)
			return;
		c->aborting = 1;
		set_linger0(c);
		ended[END_ABORT]++;
		conn_close(c);
		break;
	case END_HALFCLOSE:
		/* a last message one time in four is empty: just the FIN */
		if (rnd_below(4) == 0) {
			c->last = 1;
			c->rdone = 1;
			ret = iou_shutdown(c->s, SHUT_WR);
			if (ret < 0) {
				conn_fail(c, "iou_shutdown", ret);
				return;
			}
			ret = iou_read(c->s, 1, on_eof, c);
			if (ret < 0)
				conn_fail(c, "iou_read", ret);
			return;
		}
		if (send_msg(c, rnd_len()) < 0)
			return;
		c->last = 1;
		ret = iou_shutdown(c->s, SHUT_WR);
		if (ret < 0) {
			conn_fail(c, "iou_shutdown", ret);
			return;
		}
		ret = iou_read_exactly(c->s, c->len, on_read, c);
		if (ret < 0)
			conn_fail(c, "iou_read_exactly", ret);
		break;
	}
}

static void launch_connects(void);

static void on_connect(iou_stream *s, int res, void *ud)
{
	struct conn *c = ud;

	c->connecting = 0;
	connecting_n--;
	pending_connects--;
	if (res < 0) {
		errors++;
		report(c, "connect failed", res);
		if (errors >= 100)
			failed_hard = stopping = 1; /* no point going on */
		if (!cfg.scale && !stopping && !failed_hard)
			start_conn(c);
		maybe_finish();
		return;
	}
	c->s = s;
	open_n++;
	opened++;
	c->progress_ms = now_ms_cached;
	if (cfg.scale) {
		launch_connects();
		maybe_finish();
		return;
	}
	c->left = rnd_below(4) == 0 ? 0 : (int)rnd_below((uint64_t)cfg.maxex + 1);
	c->mode = (int)rnd_below(END_MODES);
	if (stopping || failed_hard) {
		ended[END_CLOSE]++;
		conn_close(c);
		return;
	}
	next_step(c);
}

static void start_conn(struct conn *c)
{
	struct iou_connect_opts o;
	char src[32];
	int ret;

	memset(c, 0, sizeof(*c));
	c->id = next_conn_id++;
	iou_connect_opts_init(&o);
	o.timeout_ms = 10000;
	if (cfg.nsrc > 1) {
		snprintf(src, sizeof(src), "127.0.0.%u", 1 + (unsigned)(c->id % cfg.nsrc));
		o.bind_host = src;
	}
	c->connecting = 1;
	c->progress_ms = now_ms_cached;
	ret = iou_tcp_connect(loop, cfg.host, cfg.port, &o, on_connect, c, NULL);
	if (ret < 0) {
		c->connecting = 0;
		errors++;
		report(c, "iou_tcp_connect", ret);
		failed_hard = 1;
		return;
	}
	connecting_n++;
	pending_connects++;
}

/* scale: keep up to CONNECTS_AT_ONCE connects in flight */
static unsigned next_slot;

static void launch_connects(void)
{
	while (phase == 0 && !failed_hard && next_slot < cfg.conns &&
	       pending_connects < CONNECTS_AT_ONCE)
		start_conn(&conns[next_slot++]);
}

static void close_all(void)
{
	for (unsigned i = 0; i < cfg.conns; i++)
		conn_close(&conns[i]);
}

static void stop_tick(void)
{
	if (tick) {
		iou_timer_cancel(tick);
		tick = NULL;
	}
}

static void maybe_finish(void)
{
	if (!cfg.scale) {
		if ((stopping || failed_hard) && open_n == 0 && connecting_n == 0)
			stop_tick();
		return;
	}
	switch (phase) {
	case 0:
		if (next_slot == cfg.conns && pending_connects == 0) {
			if (opened != cfg.conns) {
				failed_hard = 1;
				phase = 5;
				close_all();
				break;
			}
			printf("connected %llu in %.2f s\n", (unsigned long long)opened,
			       (now_ns() - phase_start_ns) / 1e9);
			fflush(stdout);
			phase = 1;
			phase_done = 0;
			phase_start_ns = now_ns();
			run_end_ns = 0;
			for (unsigned i = 0; i < cfg.conns; i++)
				next_step(&conns[i]);
		}
		break;
	case 1:
		if (phase_done + errors >= cfg.conns) {
			printf("exchanged %llu (one %u-byte echo each, all open) in %.2f s\n",
			       (unsigned long long)phase_done, cfg.len,
			       (now_ns() - phase_start_ns) / 1e9);
			fflush(stdout);
			if (errors || mismatches) {
				phase = 5;
				close_all();
				break;
			}
			phase = 2;
			phase_done = 0;
			phase_start_ns = now_ns();
			run_end_ns = phase_start_ns + (uint64_t)(cfg.seconds * 1e9);
			for (unsigned i = 0; i < cfg.conns; i++)
				next_step(&conns[i]);
		}
		break;
	case 2:
		if (phase_done - requests_in_window + errors >= cfg.conns) {
			double d = (run_end_ns - phase_start_ns) / 1e9;

			printf("served %llu connections: %llu requests of %u bytes in %.2f s, %.0f req/s\n",
			       (unsigned long long)open_n,
			       (unsigned long long)requests_in_window, cfg.len,
			       d, requests_in_window / d);
			printf("holding (close stdin to end)\n");
			fflush(stdout);
			phase = 4;
		}
		break;
	default:
		break;
	}
	if (phase == 5 && open_n == 0 && connecting_n == 0)
		stop_tick();
}

static void on_tick(iou_timer *t, void *ud)
{
	static uint64_t last_print_ms;
	uint64_t now = now_ms();
	double el = (now - t0_ms) / 1000.0;

	(void)t;
	(void)ud;
	now_ms_cached = now;
	if (!cfg.scale ? el > cfg.seconds + 60 :
	    phase == 5 && close_start_ns ? now_ns() - close_start_ns > 60000000000ull :
	    phase != 4 && el > cfg.limit_s + 30) {
		/* the closes themselves hang: give up (leaks nothing: exiting) */
		fprintf(stderr, "soak: %llu connections not closed 30 s after the limit, giving up\n",
			(unsigned long long)(open_n + connecting_n));
		fflush(stdout);
		_exit(1);
	}
	if (cfg.scale) {
		if (phase == 4) {
			struct pollfd p = { .fd = 0, .events = POLLIN };
			char buf[256];

			if (poll(&p, 1, 0) > 0 && read(0, buf, sizeof(buf)) <= 0) {
				phase = 5;
				close_start_ns = now_ns();
				close_all();
			}
		} else if (phase != 5 && el > cfg.limit_s) {
			fprintf(stderr, "scale: phase %d not finished after %.0f s: %llu open, %llu done\n",
				phase, cfg.limit_s, (unsigned long long)open_n,
				(unsigned long long)phase_done);
			errors++;
			failed_hard = 1;
			phase = 5;
			close_all();
		}
		maybe_finish();
		return;
	}
	if (!stopping && el >= cfg.seconds) {
		stopping = 1;
		fprintf(stderr, "soak: %.0f s passed, letting %llu connections finish\n",
			el, (unsigned long long)(open_n + connecting_n));
	}
	if (now - last_print_ms >= 10000) {
		last_print_ms = now;
		fprintf(stderr, "soak: t=%.0fs open %llu opened %llu exchanges %llu bytes %llu errors %llu mismatches %llu\n",
			el, (unsigned long long)open_n, (unsigned long long)opened,
			(unsigned long long)exchanges, (unsigned long long)bytes_checked,
			(unsigned long long)errors, (unsigned long long)mismatches);
	}
	/* stall check: every connection must progress within stall_s */
	if (!failed_hard) {
		for (unsigned i = 0; i < cfg.conns; i++) {
			struct conn *c = &conns[i];

			if ((c->s || c->connecting) && !c->closing &&
			    now - c->progress_ms > (uint64_t)(cfg.stall_s * 1000)) {
				errors++;
				report(c, c->connecting ? "connect stalled" : "no progress (stall)", 0);
				c->progress_ms = now;
				if (c->s)
					conn_close(c);
			}
		}
	}
	if (!failed_hard && el > cfg.seconds + 30) {
		fprintf(stderr, "soak: %llu connections still open %.0f s after the end\n",
			(unsigned long long)(open_n + connecting_n), el - cfg.seconds);
		errors++;
		failed_hard = 1;
		close_all();
	}
	maybe_finish();
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: soak [-H ADDR] [-p PORT] [-c CONNS] [-d SECONDS] [-m MAXLEN] [-x MAXEX]\n"
		"            [-s SEED] [-n NSRC] [-S [-l LEN] [-T LIMIT]] [-h]\n"
		"  -c CONNS    connections open at once (default 1000)\n"
		"  -d SECONDS  soak: how long new connections are opened (default 60);\n"
		"              scale: length of the timed ping-pong run (default 60)\n"
		"  -m MAXLEN   soak: largest message, 1..65536 (default 65536)\n"
		"  -x MAXEX    soak: most exchanges per connection (default 20)\n"
		"  -s SEED     random seed (default: time and pid)\n"
		"  -n NSRC     bind connections to 127.0.0.1..127.0.0.NSRC in turn (default 1: no bind)\n"
		"  -S          scale mode (see the header of bench/soak.c)\n"
		"  -l LEN      scale: message length (default 64)\n"
		"  -T LIMIT    scale: seconds the phases may take in all (default 120)\n"
		"  -t STALL    soak: seconds without progress that count as a stall (default 10)\n");
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	int opt, ret;

	cfg.seed = (unsigned long long)time(NULL) * 1000003ull ^ (unsigned long long)getpid();
	while ((opt = getopt(argc, argv, "H:p:c:d:m:x:s:n:Sl:T:t:h")) != -1) {
		switch (opt) {
		case 'H': cfg.host = optarg; break;
		case 'p': cfg.port = (uint16_t)atoi(optarg); break;
		case 'c': cfg.conns = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': cfg.seconds = atof(optarg); break;
		case 'm': cfg.maxlen = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'x': cfg.maxex = atoi(optarg); break;
		case 's': cfg.seed = strtoull(optarg, NULL, 0); break;
		case 'n': cfg.nsrc = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'S': cfg.scale = 1; break;
		case 'l': cfg.len = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'T': cfg.limit_s = atof(optarg); break;
		case 't': cfg.stall_s = atof(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || !cfg.port || !cfg.conns || cfg.seconds < 0 ||
	    cfg.maxlen < 1 || cfg.maxlen > MAXLEN_MAX || cfg.maxex < 0 ||
	    cfg.len < 1 || cfg.len > MAXLEN_MAX || cfg.nsrc < 1 || cfg.nsrc > 254 ||
	    cfg.stall_s <= 0) {
		usage(stderr);
		return 2;
	}
	printf("seed %llu\n", cfg.seed);
	fflush(stdout);
	rng_state = cfg.seed;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pattern = malloc(PATTERN_LEN);
	conns = calloc(cfg.conns, sizeof(*conns));
	if (!pattern || !conns) {
		fprintf(stderr, "soak: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < PATTERN_LEN; i += 8) {
		uint64_t v = rnd();

		memcpy(pattern + i, &v, 8);
	}
	ret = iou_loop_create(&loop, NULL);
	if (ret < 0) {
		fprintf(stderr, "soak: iou_loop_create: %s\n", iou_strerror(ret));
		return 1;
	}
	t0_ms = now_ms_cached = now_ms();
	phase_start_ns = now_ns();
	ret = iou_timer_start(loop, cfg.scale ? 50 : 100, cfg.scale ? 50 : 100,
			      on_tick, NULL, &tick);
	if (ret < 0) {
		fprintf(stderr, "soak: iou_timer_start: %s\n", iou_strerror(ret));
		return 1;
	}
	if (cfg.scale)
		launch_connects();
	else
		for (unsigned i = 0; i < cfg.conns && !failed_hard; i++)
			start_conn(&conns[i]);
	if (failed_hard && !cfg.scale)
		close_all();

	ret = iou_loop_run(loop);
	if (ret < 0) {
		fprintf(stderr, "soak: iou_loop_run: %s\n", iou_strerror(ret));
		errors++;
	}
	ret = iou_loop_destroy(loop);
	if (ret < 0) {
		fprintf(stderr, "soak: iou_loop_destroy: %s (work left)\n", iou_strerror(ret));
		errors++;
	}
	if (cfg.scale) {
		if (close_start_ns)
			printf("closed %llu connections in %.2f s\n",
			       (unsigned long long)closed_n,
			       (now_ns() - close_start_ns) / 1e9);
		printf("scale: connections %llu, requests %llu, bytes checked %llu, errors %llu mismatches %llu\n",
		       (unsigned long long)opened, (unsigned long long)exchanges,
		       (unsigned long long)bytes_checked,
		       (unsigned long long)errors, (unsigned long long)mismatches);
	} else {
		printf("soak: seed %llu, %.1f s, connections %llu (close %llu, reset %llu, abort %llu, halfclose %llu, ended by an error %llu), exchanges %llu, bytes checked %llu, errors %llu mismatches %llu\n",
		       cfg.seed, (now_ms() - t0_ms) / 1000.0,
		       (unsigned long long)opened,
		       (unsigned long long)ended[END_CLOSE],
		       (unsigned long long)ended[END_RESET],
		       (unsigned long long)ended[END_ABORT],
		       (unsigned long long)ended[END_HALFCLOSE],
		       (unsigned long long)(opened - ended[END_CLOSE] - ended[END_RESET] -
					    ended[END_ABORT] - ended[END_HALFCLOSE]),
		       (unsigned long long)exchanges,
		       (unsigned long long)bytes_checked,
		       (unsigned long long)errors, (unsigned long long)mismatches);
	}
	free(conns);
	free(pattern);
	return errors || mismatches || failed_hard ? 1 : 0;
}
