/* SPDX-License-Identifier: MIT */
/*
 * iou-bench: a load generator for TCP echo servers, on iou.
 *
 * CONNS connections, split across THREADS event loops (one iou_loop per
 * thread), each send messages of LENGTH bytes and check every byte of the
 * echo.  Built on the public API only.
 *
 * Messages.  Every message is a window of one shared, read-only buffer of
 * pseudo-random bytes: the window of request k on connection c starts at
 * (c * CSTEP + k * KSTEP) mod PERIOD (PERIOD prime), so every byte depends
 * on the connection, the request number and its offset.  A corrupted,
 * dropped, shifted or misrouted byte makes the echo differ from the
 * expected window: that response counts as a mismatch (never accepted).
 * The buffer is never written after start-up, so it stays valid until each
 * write callback, and a request costs no allocation and no copy.
 *
 * Closed loop (default): each connection keeps DEPTH requests in flight:
 * iou_write_all() per request, iou_read_exactly(LENGTH) per response;
 * latency runs from the moment the request was issued.
 *
 * Open loop (-r RATE): requests are scheduled at RATE per second in total,
 * round-robin over the connections of each loop (a loop of n connections
 * gets RATE * n / CONNS).  A 1 ms repeating timer (and every completion)
 * sends each request scheduled up to one tick ahead, so a request goes out
 * at most about 1 ms before its scheduled time instead of up to 1 ms after
 * it (the library's timers have millisecond resolution).  Latency runs from
 * the earlier of the scheduled and the actual send time: a request sent
 * early is timed from its real send, one sent late (its connection at the
 * in-flight cap, the loop held up) from its schedule, so a stalled server
 * shows up in the percentiles (no coordinated omission).  Scheduled times
 * are a pure function of the request number, so the per-connection FIFO of
 * scheduled times is implicit and cannot overflow.  In-flight requests per
 * connection are capped (-P if given, else 64); requests that fall due
 * while a connection is at the cap wait and go out as soon as a response
 * frees a slot.  In both modes, the latency origin of each request in
 * flight is kept in a ring of DEPTH per connection.
 *
 * Start-up.  RLIMIT_NOFILE is raised to its hard limit; a host name is
 * resolved once (its first address is used); every connection must be
 * established before the load starts (at most 256 connects at a time per
 * loop), else one line on stderr and exit 1.  THREADS above CONNS is
 * lowered to CONNS.  SIGINT/SIGTERM end the measurement early (the summary
 * is still printed); a second one exits at once.
 *
 * Timing.  All connections are established first.  Then a warm-up
 * (--warmup, default 0.5 s), then the measured DURATION (the window).  In
 * closed loop a request counts when its response completes inside the
 * window.  In open loop a request counts when it was SCHEDULED inside the
 * window, whenever its response comes, so a stall that runs past the end
 * is still seen; requests/s is then the number of those answered divided
 * by DURATION.  After the window no new request is issued (open loop: none
 * is scheduled, but those already scheduled are still sent); for up to 2 s
 * the outstanding responses are awaited.  Each request still owed then (in
 * open loop, also one never sent) counts as a timeout, and in open loop a
 * measured one is recorded with its latency up to that moment.  Then every
 * connection is closed with iou_close() and each loop runs until it has no
 * work and is destroyed.
 *
 * Latency goes into a log-linear histogram per thread (nanoseconds, 2^k
 * ranges of 128 linear sub-buckets: < 0.8 % error, 58 KiB), merged at the
 * end and reported in microseconds.
 *
 * Errors: a connection that fails (read/write error, early end of file)
 * counts 1 and is closed; each request still owed after the drain limit
 * counts 1 (also reported as "timeouts").
 *
 * --backend picks the kernel interface of every loop (io_uring, epoll, or
 * the library's choice); the summary and the JSON name the one in use.
 *
 * Exit status: 0 when every connection worked and nothing mismatched, 1 on
 * connection errors, timeouts or mismatches (or when it cannot run: no
 * connection, the backend unavailable), 2 on bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "iou.h"

#define MAX_CONNS 1000000ul
#define MAX_LENGTH (64ul << 20)
#define MAX_DEPTH 65536ul
#define MAX_THREADS 1024ul
#define OPEN_LOOP_DEPTH 64      /* in-flight cap in open loop without -P */
#define DRAIN_MS 2000           /* wait for outstanding responses at the end */
#define CONNECT_TIMEOUT_MS 10000
#define CONNECTS_AT_ONCE 256    /* per loop */
#define TICK_MS 1               /* open-loop schedule tick */

/* The message pattern: PERIOD + LENGTH pseudo-random bytes. */
#define PERIOD 65521u           /* prime: windows never alias by buffer sizes */
#define KSTEP 40503u            /* window step per request (coprime to PERIOD) */
#define CSTEP 7919u             /* window step per connection */

/* ---- configuration ------------------------------------------------------ */

struct config {
	const char *host;
	uint16_t port;
	unsigned long conns;
	double duration_s;
	size_t length;
	unsigned long depth;    /* in flight per connection, at most */
	unsigned long threads;
	double rate;
	double warmup_s;
	bool json;
	bool progress;
	unsigned backend;       /* IOU_BACKEND_* */
	const char *backend_arg; /* as given to --backend, NULL if not */
};

static struct config cfg = {
	.host = "127.0.0.1",
	.port = 8080,
	.conns = 50,
	.duration_s = 10.0,
	.length = 512,
	.depth = 1,
	.threads = 1,
	.warmup_s = 0.5,
};

static char addr_text[INET6_ADDRSTRLEN]; /* the numeric address we connect to */
static unsigned char *pattern;           /* PERIOD + length bytes, read-only */

/* ---- histogram ---------------------------------------------------------- */

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t *b; /* HIST_BUCKETS */
};

static unsigned hist_index(uint64_t v)
{
	unsigned shift;

	if (v < HIST_SUB)
		return (unsigned)v;
	shift = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
	return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The largest value that lands in bucket i. */
static uint64_t hist_highest(unsigned i)
{
	unsigned shift;
	uint64_t sub;

	if (i < HIST_SUB)
		return i;
	shift = i / HIST_SUB - 1;
	sub = i % HIST_SUB + HIST_SUB;
	return ((sub + 1) << shift) - 1;
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

static void hist_merge(struct hist *to, const struct hist *from)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		to->b[i] += from->b[i];
	to->count += from->count;
	to->sum += from->sum;
	if (from->max > to->max)
		to->max = from->max;
}

/* Value at percentile p (0..100]: the highest value of the bucket holding
 * the ceil(p% * count)-th smallest sample, at most the maximum seen. */
static uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	rank = (uint64_t)(p / 100.0 * (double)h->count);
	if ((double)rank < p / 100.0 * (double)h->count)
		rank++; /* ceil, without libm */
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = hist_highest(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

/* ---- state -------------------------------------------------------------- */

enum phase { PH_CONNECT, PH_RUN, PH_DRAIN };

struct worker;

struct conn {
	struct worker *w;
	iou_stream *s;
	unsigned idx;          /* in the worker */
	unsigned long id;      /* global */
	bool closing;
	bool reading;          /* a read_exactly is pending */
	uint64_t sent;         /* requests issued */
	uint64_t recvd;        /* responses received */
	uint64_t sched;        /* open loop: requests scheduled so far */
	uint32_t send_off;     /* pattern window of the next request */
	uint32_t recv_off;     /* pattern window of the next response */
	uint64_t *origin_ns;   /* latency origin of each request in flight,
				  ring of DEPTH */
};

struct worker {
	pthread_t tid;
	unsigned index;
	iou_loop *loop;
	struct conn *conns;
	unsigned n;
	uint64_t *origin_ns;
	enum phase phase;
	unsigned open;         /* streams not yet freed */
	unsigned connecting, next_connect;
	int connect_err;       /* first connect error */
	int loop_err;          /* iou_loop_create() error */
	const char *backend;   /* iou_loop_backend() of its loop */

	/* timing (copied from the globals at go) */
	uint64_t go_ns, start_ns, end_ns;

	/* open loop */
	double interval_ns;    /* between scheduled requests of this loop */
	uint64_t next_j;       /* loop-wide index of the next scheduled request */
	uint64_t next_sched_ns;

	iou_timer *tick, *end_timer, *drain_timer;

	/* results */
	struct hist hist;
	uint64_t requests;     /* counted in the window */
	uint64_t mismatches, mismatched_bytes;
	uint64_t conn_errors, timeouts;
	_Atomic uint64_t done; /* every completion, for the progress line */

	/* hand-shakes with the main thread */
	bool ready, finished, loop_gone;
	pthread_mutex_t lock;
};

static struct worker *workers;
static pthread_t main_thread;
static pthread_mutex_t go_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go_cond = PTHREAD_COND_INITIALIZER;
static unsigned n_ready;
static int go_state;            /* 0 wait, 1 go, -1 abort */
static uint64_t g_go_ns, g_start_ns, g_end_ns;
static atomic_int reported;     /* one error line per kind */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- usage -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iou-bench [-H ADDR] [-p PORT] [-c CONNS] [-d SECONDS] [-l BYTES] [-P DEPTH]\n"
		"                 [-t THREADS] [-r RATE] [--warmup SECONDS] [--progress] [--json]\n"
		"                 [--backend NAME] [-h] [-V]\n"
		"Load an echo server and check every echoed byte.\n"
		"  -H, --host ADDR          server address or name (default 127.0.0.1)\n"
		"  -p, --port PORT          server port (default 8080)\n"
		"  -c, --connections N      connections (default 50)\n"
		"  -d, --duration SECONDS   measured time, fractional allowed (default 10)\n"
		"  -l, --length BYTES       message length (default 512)\n"
		"  -P, --pipeline DEPTH     requests in flight per connection (default 1); with -r,\n"
		"                           the most in flight per connection (default there 64)\n"
		"  -t, --threads N          event loops, connections split across them (default 1)\n"
		"  -r, --rate N             open loop: N requests/s in total, latency counted from\n"
		"                           each request's scheduled time, or from its send if\n"
		"                           earlier (default 0 = closed loop)\n"
		"      --warmup SECONDS     uncounted warm-up before measuring (default 0.5)\n"
		"      --progress           a progress line per second on stderr (default when\n"
		"                           stderr is a terminal)\n"
		"      --json               the result as one JSON object, the last line of stdout\n"
		"      --backend NAME       uring, epoll or auto (default: auto, io_uring where\n"
		"                           usable, else epoll; the IOU_BACKEND variable decides\n"
		"                           for auto)\n"
		"  -h, --help               this text on stdout, exit 0\n"
		"  -V, --version            version on stdout, exit 0\n"
		"Exit status: 0 all connections worked and every byte matched; 1 connection\n"
		"errors, timeouts or mismatches; 2 bad usage.\n");
}

static void bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "iou-bench: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (try --help)\n");
	exit(2);
}

static unsigned long parse_ulong(const char *s, unsigned long min,
				 unsigned long max, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		bad_usage(what, s);
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		bad_usage(what, s);
	return v;
}

static double parse_double(const char *s, double min, double max, bool min_ok,
			   const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !*s || !isfinite(v) || v < min ||
	    (!min_ok && v == min) || v > max)
		bad_usage(what, s);
	return v;
}

static unsigned parse_backend(const char *s)
{
	if (strcmp(s, "uring") == 0)
		return IOU_BACKEND_URING;
	if (strcmp(s, "epoll") == 0)
		return IOU_BACKEND_EPOLL;
	if (strcmp(s, "auto") != 0)
		bad_usage("bad --backend '%s': want uring, epoll or auto", s);
	return IOU_BACKEND_AUTO;
}

static void parse_args(int argc, char **argv)
{
	enum { OPT_JSON = 256, OPT_PROGRESS, OPT_WARMUP, OPT_BACKEND };
	bool depth_set = false;
	static const struct option longs[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "connections", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'd' },
		{ "length", required_argument, NULL, 'l' },
		{ "pipeline", required_argument, NULL, 'P' },
		{ "threads", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'r' },
		{ "warmup", required_argument, NULL, OPT_WARMUP },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "progress", no_argument, NULL, OPT_PROGRESS },
		{ "backend", required_argument, NULL, OPT_BACKEND },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":H:p:c:d:l:P:t:r:hV", longs,
				NULL)) != -1) {
		switch (c) {
		case 'H':
			if (!*optarg)
				bad_usage("bad host '%s': want an address or name", optarg);
			cfg.host = optarg;
			break;
		case 'p':
			cfg.port = (uint16_t)parse_ulong(optarg, 1, 65535,
				"bad port '%s': want 1..65535");
			break;
		case 'c':
			cfg.conns = parse_ulong(optarg, 1, MAX_CONNS,
				"bad connection count '%s': want 1..1000000");
			break;
		case 'd':
			cfg.duration_s = parse_double(optarg, 0, 1e6, false,
				"bad duration '%s': want seconds > 0");
			break;
		case 'l':
			cfg.length = parse_ulong(optarg, 1, MAX_LENGTH,
				"bad length '%s': want 1..67108864 bytes");
			break;
		case 'P':
			cfg.depth = parse_ulong(optarg, 1, MAX_DEPTH,
				"bad pipeline depth '%s': want 1..65536");
			depth_set = true;
			break;
		case 't':
			cfg.threads = parse_ulong(optarg, 1, MAX_THREADS,
				"bad thread count '%s': want 1..1024");
			break;
		case 'r':
			cfg.rate = parse_double(optarg, 0, 1e9, true,
				"bad rate '%s': want requests/s >= 0");
			break;
		case OPT_WARMUP:
			cfg.warmup_s = parse_double(optarg, 0, 3600, true,
				"bad warm-up '%s': want seconds >= 0");
			break;
		case OPT_JSON:
			cfg.json = true;
			break;
		case OPT_PROGRESS:
			cfg.progress = true;
			break;
		case OPT_BACKEND:
			cfg.backend = parse_backend(optarg);
			cfg.backend_arg = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("iou-bench %s\n", iou_version());
			exit(0);
		case ':':
			bad_usage("option '%s' needs a value", argv[optind - 1]);
			break;
		default:
			bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);
	if (cfg.threads > cfg.conns)
		cfg.threads = cfg.conns; /* a loop without connections is useless */
	if (cfg.rate > 0 && !depth_set)
		cfg.depth = OPEN_LOOP_DEPTH;
}

/* ---- messages ----------------------------------------------------------- */

static int make_pattern(void)
{
	size_t len = PERIOD + cfg.length, i;
	uint64_t x = 0x9e3779b97f4a7c15ull;

	pattern = malloc(len + 8);
	if (!pattern)
		return -ENOMEM;
	for (i = 0; i < len; i += 8) {
		/* xorshift64* */
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545f4914f6cdd1dull;
		memcpy(pattern + i, &v, 8);
	}
	return 0;
}

static inline uint32_t next_off(uint32_t off)
{
	off += KSTEP;
	return off >= PERIOD ? off - PERIOD : off;
}

/* ---- errors ------------------------------------------------------------- */

enum { REP_IO = 1, REP_MISMATCH = 2 };

static bool first_report(int kind)
{
	return !(atomic_fetch_or(&reported, kind) & kind);
}

static const char *host_port(char *buf, size_t len)
{
	snprintf(buf, len, strchr(cfg.host, ':') ? "[%s]:%u" : "%s:%u",
		 cfg.host, (unsigned)cfg.port);
	return buf;
}

/* One line: why no loop could be created on the backend asked for. */
static void report_loop_error(int err)
{
	const char *why = iou_strerror(err);

	if (cfg.backend_arg)
		fprintf(stderr, "iou-bench: cannot create the event loop (--backend %s): %s\n",
			cfg.backend_arg, why);
	else
		fprintf(stderr, "iou-bench: cannot create the event loop: %s\n", why);
}

/* ---- connections -------------------------------------------------------- */

static void on_response(iou_stream *s, ssize_t res, const void *data, void *ud);
static void begin_drain(struct worker *w);

static void on_closed(iou_stream *s, void *ud)
{
	struct conn *c = ud;
	struct worker *w = c->w;

	(void)s;
	c->s = NULL;
	if (--w->open == 0) {
		/* Nothing left to wait for: let the loop run out of work. */
		if (w->tick) {
			iou_timer_cancel(w->tick);
			w->tick = NULL;
		}
		if (w->end_timer) {
			iou_timer_cancel(w->end_timer);
			w->end_timer = NULL;
		}
		if (w->drain_timer) {
			iou_timer_cancel(w->drain_timer);
			w->drain_timer = NULL;
		}
	}
}

static void conn_close(struct conn *c)
{
	if (c->closing || !c->s)
		return;
	c->closing = true;
	iou_close(c->s, on_closed, c);
}

static void conn_fail(struct conn *c, const char *what, long err)
{
	if (c->closing)
		return;
	c->w->conn_errors++;
	if (first_report(REP_IO)) {
		char hp[300];

		fprintf(stderr, "iou-bench: connection %lu to %s: %s: %s\n",
			c->id, host_port(hp, sizeof(hp)), what,
			iou_strerror((int)err));
	}
	conn_close(c);
}

static void on_written(iou_stream *s, ssize_t res, void *ud)
{
	(void)s;
	if (res < 0)
		conn_fail(ud, "write failed", (long)res);
}

static inline uint64_t sched_ns(const struct worker *w, uint64_t j)
{
	return w->go_ns + (uint64_t)((double)j * w->interval_ns);
}

/* Open loop: the scheduled time of request k of c. */
static inline uint64_t conn_sched_ns(const struct conn *c, uint64_t k)
{
	return sched_ns(c->w, k * c->w->n + c->idx);
}

/* The requests c must answer for: in open loop every one scheduled (some
 * may still wait to be sent), in closed loop every one sent. */
static inline uint64_t owed(const struct conn *c)
{
	return cfg.rate > 0 ? c->sched : c->sent;
}

/* Whether request k of c, answered (or given up) at t, is measured: in open
 * loop when it was scheduled inside the window, in closed loop when t is. */
static bool measured(const struct conn *c, uint64_t k, uint64_t t)
{
	if (cfg.rate > 0)
		t = conn_sched_ns(c, k);
	return t >= c->w->start_ns && t < c->w->end_ns;
}

static void ensure_read(struct conn *c)
{
	int ret;

	if (c->reading || c->closing || c->sent == c->recvd)
		return;
	ret = iou_read_exactly(c->s, cfg.length, on_response, c);
	if (ret < 0)
		conn_fail(c, "read failed", ret);
	else
		c->reading = true;
}

/* Issue the next request, timed from `origin`. */
static bool send_request(struct conn *c, uint64_t origin)
{
	int ret;

	ret = iou_write_all(c->s, pattern + c->send_off, cfg.length, on_written, c);
	if (ret < 0) {
		conn_fail(c, "write failed", ret);
		return false;
	}
	c->origin_ns[c->sent % cfg.depth] = origin;
	c->send_off = next_off(c->send_off);
	c->sent++;
	return true;
}

/* Open loop: send what is scheduled on this connection, up to the cap; `t`
 * is now.  Each request is timed from its scheduled time or from `t`,
 * whichever is earlier (it may go out up to a tick early). */
static void open_send(struct conn *c, uint64_t t)
{
	while (c->sent < c->sched && c->sent - c->recvd < cfg.depth &&
	       !c->closing) {
		uint64_t s = conn_sched_ns(c, c->sent);

		if (!send_request(c, s < t ? s : t))
			return;
	}
	ensure_read(c);
}

/* Open loop: hand every request scheduled by one tick after `t` (now), and
 * before the end, to its connection.  Costs O(min(requests due,
 * connections)). */
static void pump(struct worker *w, uint64_t t)
{
	uint64_t due, h = t + TICK_MS * 1000000u;

	if (w->phase != PH_RUN)
		return;
	if (h >= w->end_ns)
		h = w->end_ns - 1;
	if (h < w->go_ns || w->next_sched_ns > h)
		return;
	/* due: the number of requests scheduled at or before h */
	due = (uint64_t)((double)(h - w->go_ns) / w->interval_ns) + 1;
	while (due > w->next_j && sched_ns(w, due - 1) > h)
		due--;
	while (sched_ns(w, due) <= h)
		due++;
	if (due <= w->next_j)
		return;
	if (due - w->next_j <= w->n) {
		for (uint64_t j = w->next_j; j < due; j++) {
			struct conn *c = &w->conns[j % w->n];

			c->sched++;
			if (!c->closing)
				open_send(c, t);
		}
	} else {
		/* Far behind (a long stall): set every connection's count. */
		for (unsigned i = 0; i < w->n; i++) {
			struct conn *c = &w->conns[i];

			c->sched = due > i ? (due - i + w->n - 1) / w->n : 0;
			if (!c->closing)
				open_send(c, t);
		}
	}
	w->next_j = due;
	w->next_sched_ns = sched_ns(w, due);
}

static void count_mismatch(struct conn *c, const unsigned char *got,
			   const unsigned char *want)
{
	size_t bad = 0, first = 0;

	for (size_t i = 0; i < cfg.length; i++) {
		if (got[i] != want[i]) {
			if (!bad)
				first = i;
			bad++;
		}
	}
	c->w->mismatches++;
	c->w->mismatched_bytes += bad;
	if (first_report(REP_MISMATCH))
		fprintf(stderr, "iou-bench: mismatch: connection %lu, response %llu, byte %zu is 0x%02x, want 0x%02x (%zu of %zu bytes wrong)\n",
			c->id, (unsigned long long)c->recvd, first,
			got[first], want[first], bad, cfg.length);
}

static void on_response(iou_stream *s, ssize_t res, const void *data, void *ud)
{
	struct conn *c = ud;
	struct worker *w = c->w;
	const unsigned char *want;
	uint64_t t;

	(void)s;
	c->reading = false;
	if (c->closing)
		return;
	if (res <= 0) {
		conn_fail(c, res == 0 || res == -IOU_EINCOMPLETE ?
			  "server closed the connection" : "read failed",
			  (long)res);
		return;
	}
	t = now_ns();
	want = pattern + c->recv_off;
	if (memcmp(data, want, cfg.length) != 0)
		count_mismatch(c, data, want);
	if (measured(c, c->recvd, t)) {
		w->requests++;
		hist_record(&w->hist, t - c->origin_ns[c->recvd % cfg.depth]);
	}
	c->recv_off = next_off(c->recv_off);
	c->recvd++;
	atomic_store_explicit(&w->done, atomic_load_explicit(&w->done,
			      memory_order_relaxed) + 1, memory_order_relaxed);
	if (w->phase == PH_RUN && t >= w->end_ns)
		begin_drain(w);
	if (c->closing)
		return; /* begin_drain closed it */
	if (cfg.rate > 0) {
		pump(w, t);
		open_send(c, t); /* in the drain too: what is scheduled still goes */
	} else if (w->phase == PH_RUN) {
		send_request(c, t);
	}
	if (w->phase == PH_DRAIN && c->recvd == owed(c)) {
		conn_close(c);
		return;
	}
	ensure_read(c);
}

/* ---- phases ------------------------------------------------------------- */

static void on_drain_limit(iou_timer *t, void *ud)
{
	struct worker *w = ud;
	uint64_t now = now_ns();

	(void)t;
	w->drain_timer = NULL;
	for (unsigned i = 0; i < w->n; i++) {
		struct conn *c = &w->conns[i];

		if (!c->s || c->closing)
			continue;
		/* Every request still owed times out, and a measured one
		 * is recorded with its latency so far. */
		for (uint64_t k = c->recvd; k < owed(c); k++) {
			if (measured(c, k, now))
				hist_record(&w->hist, now - (k < c->sent ?
					c->origin_ns[k % cfg.depth] :
					conn_sched_ns(c, k)));
		}
		w->timeouts += owed(c) - c->recvd;
		conn_close(c);
	}
}

static void begin_drain(struct worker *w)
{
	if (w->phase != PH_RUN)
		return;
	w->phase = PH_DRAIN;
	if (w->tick) {
		iou_timer_cancel(w->tick);
		w->tick = NULL;
	}
	if (w->end_timer) {
		iou_timer_cancel(w->end_timer);
		w->end_timer = NULL;
	}
	for (unsigned i = 0; i < w->n; i++) {
		struct conn *c = &w->conns[i];

		if (c->s && !c->closing && c->recvd == owed(c))
			conn_close(c);
	}
	if (w->open && !w->drain_timer &&
	    iou_timer_start(w->loop, DRAIN_MS, 0, on_drain_limit, w,
			    &w->drain_timer) < 0) {
		w->drain_timer = NULL;
		on_drain_limit(NULL, w);
	}
}

static void on_end(iou_timer *t, void *ud)
{
	struct worker *w = ud;
	uint64_t now = now_ns();

	(void)t;
	w->end_timer = NULL;
	if (now < w->end_ns) { /* the ms clock fired a little early */
		if (iou_timer_start(w->loop, (w->end_ns - now) / 1000000 + 1, 0,
				    on_end, w, &w->end_timer) == 0)
			return;
		w->end_timer = NULL;
	}
	begin_drain(w);
}

static void on_tick(iou_timer *t, void *ud)
{
	(void)t;
	pump(ud, now_ns());
}

/* Posted by the main thread on SIGINT/SIGTERM: stop now. */
static void stop_now(void *ud)
{
	struct worker *w = ud;
	uint64_t t = now_ns();

	if (w->phase != PH_RUN)
		return;
	if (t < w->end_ns)
		w->end_ns = t;
	begin_drain(w);
}

/* ---- connecting --------------------------------------------------------- */

static void start_connects(struct worker *w);

static void on_connect(iou_stream *s, int res, void *ud)
{
	struct conn *c = ud;
	struct worker *w = c->w;

	w->connecting--;
	if (res < 0) {
		if (!w->connect_err)
			w->connect_err = res;
	} else {
		c->s = s;
		w->open++;
		iou_stream_set_data(s, c);
	}
	start_connects(w);
}

static void start_connects(struct worker *w)
{
	struct iou_connect_opts o;

	iou_connect_opts_init(&o);
	o.timeout_ms = CONNECT_TIMEOUT_MS;
	/* read_exactly(length) needs length <= max_buffered; twice that lets
	 * the next response arrive while one is being checked. */
	if (o.stream.max_buffered < 2 * cfg.length)
		o.stream.max_buffered = 2 * cfg.length;
	while (!w->connect_err && w->next_connect < w->n &&
	       w->connecting < CONNECTS_AT_ONCE) {
		struct conn *c = &w->conns[w->next_connect];
		int ret = iou_tcp_connect(w->loop, addr_text, cfg.port, &o,
					  on_connect, c, NULL);

		if (ret < 0) {
			w->connect_err = ret;
			break;
		}
		w->next_connect++;
		w->connecting++;
	}
}

/* ---- workers ------------------------------------------------------------ */

static void close_all(struct worker *w)
{
	for (unsigned i = 0; i < w->n; i++)
		conn_close(&w->conns[i]);
}

static void go(struct worker *w)
{
	uint64_t t;

	w->go_ns = g_go_ns;
	w->start_ns = g_start_ns;
	w->end_ns = g_end_ns;
	w->phase = PH_RUN;
	t = now_ns();
	if (cfg.rate > 0) {
		w->interval_ns = 1e9 * (double)cfg.conns / (cfg.rate * w->n);
		w->next_j = 0;
		w->next_sched_ns = w->go_ns;
		if (iou_timer_start(w->loop, TICK_MS, TICK_MS, on_tick, w,
				    &w->tick) < 0)
			w->tick = NULL;
		pump(w, t);
	} else {
		for (unsigned i = 0; i < w->n; i++) {
			struct conn *c = &w->conns[i];

			for (unsigned long k = 0; k < cfg.depth && !c->closing; k++)
				send_request(c, t);
			ensure_read(c);
		}
	}
	if (iou_timer_start(w->loop, t < w->end_ns ? (w->end_ns - t) / 1000000 + 1 : 0,
			    0, on_end, w, &w->end_timer) < 0) {
		w->end_timer = NULL;
		begin_drain(w);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct iou_loop_opts lo;
	int ret, state;
	unsigned depth = 256;

	iou_loop_opts_init(&lo);
	while (depth < 4096 && depth < 2 * w->n)
		depth *= 2;
	if (depth > lo.queue_depth)
		lo.queue_depth = depth;
	if (cfg.length > 16384) {
		lo.buf_size = 65536;
		lo.buf_count = 512;
	}
	lo.backend = cfg.backend;
	ret = iou_loop_create(&w->loop, &lo);
	if (ret < 0) {
		w->loop_err = ret;
		w->loop = NULL;
	} else {
		w->backend = iou_loop_backend(w->loop);
		start_connects(w);
		while (w->connecting > 0) {
			ret = iou_loop_run_once(w->loop, -1);
			if (ret < 0 && ret != -EINTR) {
				if (!w->connect_err)
					w->connect_err = ret;
				break;
			}
		}
	}

	pthread_mutex_lock(&go_lock);
	w->ready = true;
	n_ready++;
	pthread_cond_broadcast(&go_cond);
	while (!go_state)
		pthread_cond_wait(&go_cond, &go_lock);
	state = go_state;
	pthread_mutex_unlock(&go_lock);

	if (w->loop) {
		if (state > 0)
			go(w);
		else
			close_all(w);
		for (;;) {
			ret = iou_loop_run(w->loop);
			if (ret < 0 && first_report(REP_IO))
				fprintf(stderr, "iou-bench: event loop failed: %s\n",
					iou_strerror(ret));
			pthread_mutex_lock(&w->lock);
			if (!iou_loop_alive(w->loop)) {
				w->loop_gone = true;
				pthread_mutex_unlock(&w->lock);
				break;
			}
			pthread_mutex_unlock(&w->lock);
			if (ret < 0)
				close_all(w);
		}
		if (iou_loop_destroy(w->loop) < 0)
			fprintf(stderr, "iou-bench: loop still busy at exit\n");
	}
	pthread_mutex_lock(&w->lock);
	w->loop_gone = true;
	w->finished = true;
	pthread_mutex_unlock(&w->lock);
	pthread_kill(main_thread, SIGUSR1); /* tell main this one is done */
	return NULL;
}

/* ---- main --------------------------------------------------------------- */

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void resolve_host(void)
{
	struct addrinfo hints = { 0 }, *res = NULL;
	int rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(cfg.host, NULL, &hints, &res);
	if (rc != 0 || !res) {
		fprintf(stderr, "iou-bench: cannot resolve host '%s': %s\n",
			cfg.host, rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		exit(1);
	}
	if (iou_sockaddr_text(res->ai_addr, addr_text, sizeof(addr_text), NULL) < 0) {
		fprintf(stderr, "iou-bench: cannot use the address of '%s'\n", cfg.host);
		exit(1);
	}
	freeaddrinfo(res);
}

static void post_stop_all(unsigned nw)
{
	for (unsigned i = 0; i < nw; i++) {
		struct worker *w = &workers[i];

		pthread_mutex_lock(&w->lock);
		if (!w->loop_gone && w->loop)
			iou_loop_post(w->loop, stop_now, w);
		pthread_mutex_unlock(&w->lock);
	}
}

static uint64_t total_done(unsigned nw)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < nw; i++)
		n += atomic_load_explicit(&workers[i].done, memory_order_relaxed);
	return n;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

int main(int argc, char **argv)
{
	unsigned nw, finished = 0;
	sigset_t sigs;
	struct hist all = { 0 };
	uint64_t requests = 0, mismatches = 0, mismatched_bytes = 0;
	uint64_t conn_errors = 0, timeouts = 0, errors, last_done = 0;
	uint64_t stop_ns = 0, next_progress, last_progress;
	double duration, rps, bps;
	bool progress, stopping = false;
	char hp[300];
	int connect_err = 0, loop_err = 0, ret = 1;

	parse_args(argc, argv);
	progress = cfg.progress || isatty(STDERR_FILENO);
	raise_fd_limit();
	resolve_host();
	if (make_pattern() < 0) {
		fprintf(stderr, "iou-bench: out of memory\n");
		return 1;
	}
	main_thread = pthread_self();
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	nw = (unsigned)cfg.threads;
	workers = calloc(nw, sizeof(*workers));
	all.b = calloc(HIST_BUCKETS, sizeof(uint64_t));
	if (!workers || !all.b) {
		fprintf(stderr, "iou-bench: out of memory\n");
		return 1;
	}
	for (unsigned i = 0; i < nw; i++) {
		struct worker *w = &workers[i];

		w->index = i;
		w->n = (unsigned)(cfg.conns / nw + (i < cfg.conns % nw));
		w->conns = calloc(w->n, sizeof(*w->conns));
		w->hist.b = calloc(HIST_BUCKETS, sizeof(uint64_t));
		w->origin_ns = calloc((size_t)w->n * cfg.depth, sizeof(uint64_t));
		if (!w->conns || !w->hist.b || !w->origin_ns) {
			fprintf(stderr, "iou-bench: out of memory\n");
			return 1;
		}
		pthread_mutex_init(&w->lock, NULL);
		for (unsigned k = 0; k < w->n; k++) {
			struct conn *c = &w->conns[k];

			c->w = w;
			c->idx = k;
			c->id = (unsigned long)k * nw + i;
			c->send_off = c->recv_off =
				(uint32_t)((c->id * CSTEP) % PERIOD);
			c->origin_ns = w->origin_ns + (size_t)k * cfg.depth;
		}
	}
	for (unsigned i = 0; i < nw; i++) {
		if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0) {
			fprintf(stderr, "iou-bench: cannot start a thread\n");
			exit(1);
		}
	}

	/* Every connection up (or failed) on every loop: go, or give up. */
	pthread_mutex_lock(&go_lock);
	while (n_ready < nw)
		pthread_cond_wait(&go_cond, &go_lock);
	for (unsigned i = 0; i < nw; i++) {
		if (workers[i].loop_err && !loop_err)
			loop_err = workers[i].loop_err;
		if (workers[i].connect_err && !connect_err)
			connect_err = workers[i].connect_err;
	}
	g_go_ns = now_ns();
	g_start_ns = g_go_ns + (uint64_t)(cfg.warmup_s * 1e9);
	g_end_ns = g_start_ns + (uint64_t)(cfg.duration_s * 1e9);
	go_state = loop_err || connect_err ? -1 : 1;
	pthread_cond_broadcast(&go_cond);
	pthread_mutex_unlock(&go_lock);
	if (loop_err)
		report_loop_error(loop_err);
	else if (connect_err)
		fprintf(stderr, "iou-bench: cannot connect to %s: %s\n",
			host_port(hp, sizeof(hp)), iou_strerror(connect_err));

	/* Progress lines, signals, and the workers' "done". */
	last_progress = g_go_ns;
	next_progress = g_go_ns + 1000000000u;
	while (finished < nw) {
		struct timespec ts;
		siginfo_t si;
		uint64_t t = now_ns();
		int sig;

		if (progress && go_state > 0 && !stopping && t >= next_progress) {
			uint64_t d = total_done(nw);
			double el = (double)(t - g_go_ns) / 1e9;

			fprintf(stderr, "iou-bench: %6.1f s %10.0f req/s, %llu responses so far%s\n",
				el, (double)(d - last_done) * 1e9 / (double)(t - last_progress),
				(unsigned long long)d, t < g_start_ns ? " (warm-up)" : "");
			last_done = d;
			last_progress = t;
			while (next_progress <= t)
				next_progress += 1000000000u;
		}
		t = now_ns();
		ts.tv_sec = 0;
		ts.tv_nsec = 200000000;
		if (progress && next_progress > t && next_progress - t < 200000000u)
			ts.tv_nsec = (long)(next_progress - t);
		sig = sigtimedwait(&sigs, &si, &ts);
		if (sig == SIGUSR1) {
			finished = 0;
			for (unsigned i = 0; i < nw; i++) {
				pthread_mutex_lock(&workers[i].lock);
				finished += workers[i].finished;
				pthread_mutex_unlock(&workers[i].lock);
			}
		} else if (sig == SIGINT || sig == SIGTERM) {
			if (stopping) {
				fprintf(stderr, "iou-bench: second signal, exiting now\n");
				_exit(1);
			}
			stopping = true;
			stop_ns = now_ns();
			post_stop_all(nw);
		}
	}
	for (unsigned i = 0; i < nw; i++) {
		struct worker *w = &workers[i];

		pthread_join(w->tid, NULL);
		hist_merge(&all, &w->hist);
		requests += w->requests;
		mismatches += w->mismatches;
		mismatched_bytes += w->mismatched_bytes;
		conn_errors += w->conn_errors;
		timeouts += w->timeouts;
	}
	if (go_state < 0)
		goto out;

	duration = cfg.duration_s;
	if (stopping && stop_ns < g_end_ns)
		duration = stop_ns > g_start_ns ? (double)(stop_ns - g_start_ns) / 1e9 : 0;
	errors = conn_errors + timeouts;
	rps = duration > 0 ? (double)requests / duration : 0;
	bps = rps * (double)cfg.length;

	printf("iou-bench: %s, %lu connection%s, %lu thread%s, %zu B messages, ",
	       host_port(hp, sizeof(hp)), cfg.conns, cfg.conns == 1 ? "" : "s",
	       cfg.threads, cfg.threads == 1 ? "" : "s", cfg.length);
	if (cfg.rate > 0)
		printf("open loop at %.6g req/s (at most %lu in flight per connection)\n",
		       cfg.rate, cfg.depth);
	else
		printf("closed loop, pipeline %lu\n", cfg.depth);
	printf("  backend      %s\n", workers[0].backend);
	printf("  duration     %.3f s measured, after %.3f s warm-up%s\n", duration,
	       cfg.warmup_s, stopping ? " (interrupted)" : "");
	printf("  requests     %llu (%.1f req/s)\n", (unsigned long long)requests, rps);
	printf("  throughput   %.2f MiB/s sent, %.2f MiB/s received\n",
	       bps / 1048576.0, bps / 1048576.0);
	printf("  latency us   p50 %.1f, p90 %.1f, p99 %.1f, p99.9 %.1f, max %.1f, mean %.1f\n",
	       us(hist_percentile(&all, 50)), us(hist_percentile(&all, 90)),
	       us(hist_percentile(&all, 99)), us(hist_percentile(&all, 99.9)),
	       us(all.max), all.count ? us(all.sum / all.count) : 0.0);
	printf("  errors       %llu (%llu connection%s failed, %llu response%s timed out)\n",
	       (unsigned long long)errors, (unsigned long long)conn_errors,
	       conn_errors == 1 ? "" : "s", (unsigned long long)timeouts,
	       timeouts == 1 ? "" : "s");
	printf("  mismatches   %llu (%llu byte%s wrong)\n",
	       (unsigned long long)mismatches, (unsigned long long)mismatched_bytes,
	       mismatched_bytes == 1 ? "" : "s");
	if (cfg.json) {
		printf("{\"host\":\"%s\",\"port\":%u,\"connections\":%lu,\"length\":%zu,"
		       "\"pipeline\":%lu,\"threads\":%lu,\"backend\":\"%s\",\"rate\":%.6g,"
		       "\"duration_s\":%.6f,\"warmup_s\":%.6f,\"requests\":%llu,"
		       "\"rps\":%.3f,\"bytes_per_s\":%.1f,\"errors\":%llu,"
		       "\"conn_errors\":%llu,\"timeouts\":%llu,\"mismatches\":%llu,"
		       "\"mismatched_bytes\":%llu,\"latency_us\":{\"p50\":%.1f,"
		       "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
		       "\"mean\":%.1f}}\n",
		       addr_text, (unsigned)cfg.port, cfg.conns, cfg.length,
		       cfg.depth, cfg.threads, workers[0].backend,
		       cfg.rate, duration, cfg.warmup_s,
		       (unsigned long long)requests, rps, bps,
		       (unsigned long long)errors, (unsigned long long)conn_errors,
		       (unsigned long long)timeouts, (unsigned long long)mismatches,
		       (unsigned long long)mismatched_bytes,
		       us(hist_percentile(&all, 50)), us(hist_percentile(&all, 90)),
		       us(hist_percentile(&all, 99)), us(hist_percentile(&all, 99.9)),
		       us(all.max), all.count ? us(all.sum / all.count) : 0.0);
	}
	fflush(stdout);
	ret = errors || mismatches ? 1 : 0;
out:
	for (unsigned i = 0; i < nw; i++) {
		free(workers[i].conns);
		free(workers[i].origin_ns);
		free(workers[i].hist.b);
	}
	free(workers);
	free(all.b);
	free(pattern);
	return ret;
}
