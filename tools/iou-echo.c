/* SPDX-License-Identifier: MIT */
/*
 * iou-echo: a TCP echo server on iou, on one or many cores.
 *
 * Every received byte goes back on the same connection, sent straight from
 * the receive buffer (iou_forward).  One event loop per thread, each with
 * its own SO_REUSEPORT listener.  SIGINT/SIGTERM start a graceful
 * shutdown; a second one ends the process at once.  The main thread takes
 * the signals on a loop of its own (iou_signal_start()) and posts the
 * shutdown to the workers.
 *
 * --backend picks the kernel interface of every loop (io_uring, epoll, or
 * the library's choice); the one in use is named on stderr at start.
 *
 * Exit status: 0 after a clean shutdown (or -h/-V), 1 when it cannot run
 * (cannot listen, the backend unavailable), 2 on bad usage, 128 + the
 * signal's number when a second signal ended it (130: SIGINT, 143: SIGTERM).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "iou.h"

struct config {
	const char *host;
	uint16_t port;
	int threads;
	double grace_s;
	unsigned long max_conns;
	double idle_s;
	int quiet;
	int tasks;
	unsigned backend;    /* IOU_BACKEND_* */
	const char *backend_arg; /* as given to --backend, NULL if not */
};

struct worker {
	pthread_t tid;
	int index;
	uint16_t port;       /* in: port to bind; out: port bound */
	iou_loop *loop;
	iou_server *srv;
	const char *backend; /* iou_loop_backend() of its loop */
	int err;             /* start-up error, 0 when listening */
	int loop_failed;     /* err came from creating the loop */
	uint64_t finished, cut;
	/* start-up hand-shake with the main thread */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int started;
};

/* A logged connection: its peer address, for the closing line. */
struct conn {
	char peer[64];
};

static struct config cfg = {
	.host = "127.0.0.1",
	.port = 8080,
	.threads = 1,
	.grace_s = 10.0,
};
static atomic_ulong open_conns;
/* Workers whose loop ended; each also wakes the main thread's loop. */
static atomic_int workers_done;
static iou_loop *main_loop;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iou-echo [-H ADDR] [-p PORT] [-t THREADS] [-g SECONDS] [--max-conns N]\n"
		"                [--idle-timeout SECONDS] [--tasks] [--backend NAME] [-q] [-h] [-V]\n"
		"  -H, --host ADDR          listen address, IPv4 or IPv6 (default 127.0.0.1)\n"
		"  -p, --port PORT          port (default 8080; 0 = any free port)\n"
		"  -t, --threads N          event loops, one ring and one SO_REUSEPORT listener per thread (default 1)\n"
		"  -g, --grace SECONDS      graceful-shutdown limit, fractional allowed (default 10)\n"
		"      --max-conns N        at most N open connections (per process); more are closed at once\n"
		"      --idle-timeout SECONDS  close a connection that sends nothing that long (default 0 = never)\n"
		"      --tasks              a task per connection (blocking-style handler) instead of callbacks\n"
		"      --backend NAME       uring, epoll or auto (default: auto, io_uring where usable,\n"
		"                           else epoll; the IOU_BACKEND variable decides for auto)\n"
		"  -q, --quiet              no per-connection log lines\n"
		"  -h, --help               usage on stdout, exit 0\n"
		"  -V, --version            version on stdout, exit 0\n");
}

static void bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "iou-echo: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (try --help)\n");
	exit(2);
}

static unsigned long parse_ulong(const char *s, unsigned long max,
				 const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!*s || *s == '-' || *s == '+')
		bad_usage(what, s);
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
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

static double parse_seconds(const char *s, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !*s || !isfinite(v) || v < 0 || v > 1e6)
		bad_usage(what, s);
	return v;
}

static void parse_args(int argc, char **argv)
{
	enum { OPT_MAX_CONNS = 256, OPT_IDLE, OPT_TASKS, OPT_BACKEND };
	static const struct option longs[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "grace", required_argument, NULL, 'g' },
		{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
		{ "idle-timeout", required_argument, NULL, OPT_IDLE },
		{ "quiet", no_argument, NULL, 'q' },
		{ "tasks", no_argument, NULL, OPT_TASKS },
		{ "backend", required_argument, NULL, OPT_BACKEND },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":H:p:t:g:qhV", longs, NULL)) != -1) {
		switch (c) {
		case 'H':
			cfg.host = optarg;
			break;
		case 'p':
			cfg.port = (uint16_t)parse_ulong(optarg, 65535,
							 "bad port '%s': want 0..65535");
			break;
		case 't':
			cfg.threads = (int)parse_ulong(optarg, 1024,
						       "bad thread count '%s': want 1..1024");
			if (cfg.threads < 1)
				bad_usage("bad thread count '%s': want 1..1024", optarg);
			break;
		case 'g':
			cfg.grace_s = parse_seconds(optarg, "bad grace '%s': want seconds >= 0");
			break;
		case OPT_MAX_CONNS:
			cfg.max_conns = parse_ulong(optarg, UINT_MAX,
						    "bad --max-conns '%s': want a count");
			break;
		case OPT_IDLE:
			cfg.idle_s = parse_seconds(optarg, "bad --idle-timeout '%s': want seconds >= 0");
			break;
		case 'q':
			cfg.quiet = 1;
			break;
		case OPT_TASKS:
			cfg.tasks = 1;
			break;
		case OPT_BACKEND:
			cfg.backend = parse_backend(optarg);
			cfg.backend_arg = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("iou-echo %s\n", iou_version());
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
}

/* ---- connections -------------------------------------------------------- */

static void on_closed(iou_stream *s, void *ud)
{
	struct conn *c = ud;

	(void)s;
	atomic_fetch_sub(&open_conns, 1);
	if (c) {
		fprintf(stderr, "client %s disconnected\n", c->peer);
		free(c);
	}
}

static void on_forwarded(iou_stream *s, ssize_t res, void *ud)
{
	int ret;

	/* res > 0: echoed; 0: the peer half-closed and everything owed was
	 * sent; < 0: an error (reset, cancelled by shutdown, ...). */
	if (res > 0) {
		ret = iou_forward(s, s, SIZE_MAX, on_forwarded, ud);
		if (ret == 0)
			return;
	}
	iou_close(s, on_closed, iou_stream_data(s));
}

static void on_connection(iou_server *srv, iou_stream *s,
			  const struct sockaddr *peer, void *ud)
{
	struct conn *c = NULL;

	(void)srv;
	(void)ud;
	if (atomic_fetch_add(&open_conns, 1) >= cfg.max_conns && cfg.max_conns) {
		iou_close(s, on_closed, NULL); /* the process-wide limit */
		return;
	}
	if (!cfg.quiet && (c = malloc(sizeof(*c)))) {
		uint16_t port = 0;
		char host[INET6_ADDRSTRLEN];

		if (iou_sockaddr_text(peer, host, sizeof(host), &port) < 0)
			snprintf(host, sizeof(host), "?");
		snprintf(c->peer, sizeof(c->peer), peer->sa_family == AF_INET6 ?
			 "[%s]:%u" : "%s:%u", host, (unsigned)port);
		fprintf(stderr, "client %s connected\n", c->peer);
	}
	iou_stream_set_data(s, c);
	if (iou_forward(s, s, SIZE_MAX, on_forwarded, NULL) < 0)
		iou_close(s, on_closed, c);
}

/* The same server in task style (--tasks): one task per connection, its
 * stream closed when the handler returns. */
static void echo_task(iou_stream *s, void *ud)
{
	struct conn c;
	uint16_t port = 0;
	char host[INET6_ADDRSTRLEN];

	(void)ud;
	if (atomic_fetch_add(&open_conns, 1) >= cfg.max_conns && cfg.max_conns)
		goto out; /* the process-wide limit */
	if (!cfg.quiet) {
		if (iou_peer_address(s, host, sizeof(host), &port) < 0)
			snprintf(host, sizeof(host), "?");
		snprintf(c.peer, sizeof(c.peer), strchr(host, ':') ? "[%s]:%u" :
			 "%s:%u", host, (unsigned)port);
		fprintf(stderr, "client %s connected\n", c.peer);
	}
	while (iou_task_forward(s, s, SIZE_MAX, -1) > 0)
		;
	if (!cfg.quiet)
		fprintf(stderr, "client %s disconnected\n", c.peer);
out:
	atomic_fetch_sub(&open_conns, 1);
}

/* ---- workers ------------------------------------------------------------ */

static void on_server_done(iou_server *srv, uint64_t finished, uint64_t cut,
			   void *ud)
{
	struct worker *w = ud;

	(void)srv;
	w->finished = finished;
	w->cut = cut;
	w->srv = NULL;
}

/* Posted to each worker's loop when the first signal arrives. */
static void begin_shutdown(void *ud)
{
	struct worker *w = ud;
	unsigned grace_ms = (unsigned)(cfg.grace_s * 1000.0 + 0.5);

	if (w->srv)
		iou_server_shutdown(w->srv, grace_ms, on_server_done, w);
}

static void wake_main(void *ud)
{
	(void)ud;
}

static void worker_started(struct worker *w, int err)
{
	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->started = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct iou_loop_opts lo;
	struct iou_server_opts so;
	int ret;

	iou_loop_opts_init(&lo);
	lo.backend = cfg.backend;
	ret = iou_loop_create(&w->loop, &lo);
	if (ret < 0) {
		w->loop_failed = 1;
		worker_started(w, ret);
		return NULL;
	}
	w->backend = iou_loop_backend(w->loop);
	iou_server_opts_init(&so);
	so.host = cfg.host;
	so.port = w->port;
	so.reuseport = cfg.threads > 1;
	so.backlog = 4096;
	so.idle_timeout_ms = (unsigned)(cfg.idle_s * 1000.0 + 0.5);
	if (cfg.idle_s > 0 && !so.idle_timeout_ms)
		so.idle_timeout_ms = 1; /* a tiny timeout, not "never" */
	if (cfg.tasks)
		ret = iou_task_server_start(w->loop, &so, echo_task, w, NULL,
					    &w->srv);
	else
		ret = iou_server_start(w->loop, &so, on_connection, w, &w->srv);
	if (ret == 0)
		w->port = iou_server_port(w->srv);
	worker_started(w, ret);
	if (ret == 0) {
		ret = iou_loop_run(w->loop);
		if (ret < 0)
			fprintf(stderr, "iou-echo: event loop failed: %s\n",
				iou_strerror(ret));
	}
	if (iou_loop_destroy(w->loop) < 0)
		fprintf(stderr, "iou-echo: loop still busy at exit\n");
	atomic_fetch_add(&workers_done, 1);
	/* Wake main to count again.  Stop wakes it without allocating, but
	 * leaves its run_once() turns without waits: the fallback only. */
	if (iou_loop_post(main_loop, wake_main, NULL) < 0)
		iou_loop_stop(main_loop);
	return NULL;
}

static int start_worker(struct worker *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
		return -EAGAIN;
	pthread_mutex_lock(&w->lock);
	while (!w->started)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return w->err;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* One line: why no loop could be created on the backend asked for. */
static void report_loop_error(int err)
{
	const char *why = iou_strerror(err);

	if (cfg.backend_arg)
		fprintf(stderr, "iou-echo: cannot create the event loop (--backend %s): %s\n",
			cfg.backend_arg, why);
	else
		fprintf(stderr, "iou-echo: cannot create the event loop: %s\n", why);
}

static void report_start_error(const struct worker *w, int err)
{
	if (w->loop_failed)
		report_loop_error(err);
	else if (err == -EINVAL)
		fprintf(stderr, "iou-echo: cannot listen on %s port %u: not a numeric IPv4/IPv6 address\n",
			cfg.host, (unsigned)cfg.port);
	else
		fprintf(stderr, "iou-echo: cannot listen on %s port %u: %s\n",
			cfg.host, (unsigned)cfg.port, iou_strerror(err));
}

/* SIGINT or SIGTERM, on the main thread's loop. */
static void on_signal(iou_signal *sig, int signo, void *ud)
{
	static int shutting_down;
	struct worker *workers = ud;

	(void)sig;
	if (shutting_down) {
		fprintf(stderr, "iou-echo: second signal, exiting now\n");
		_exit(128 + signo);
	}
	shutting_down = 1;
	for (int i = 0; i < cfg.threads; i++)
		iou_loop_post(workers[i].loop, begin_shutdown, &workers[i]);
}

/* The main thread's loop: no server, only the signals (blocked from here on
 * in this thread and in every worker, which inherits the mask). */
static int main_loop_start(struct worker *workers, iou_signal *sigs[2])
{
	struct iou_loop_opts o;
	int ret;

	iou_loop_opts_init(&o);
	o.queue_depth = 8;
	o.buf_size = 64;
	o.buf_count = 1;
	o.backend = cfg.backend;
	ret = iou_loop_create(&main_loop, &o);
	if (ret < 0) {
		report_loop_error(ret);
		return ret;
	}
	ret = iou_signal_start(main_loop, SIGINT, on_signal, workers, &sigs[0]);
	if (ret == 0)
		ret = iou_signal_start(main_loop, SIGTERM, on_signal, workers,
				       &sigs[1]);
	if (ret < 0)
		fprintf(stderr, "iou-echo: cannot watch signals: %s\n",
			iou_strerror(ret));
	return ret;
}

int main(int argc, char **argv)
{
	struct worker *workers;
	iou_signal *sigs[2];
	int ret;
	uint64_t finished = 0, cut = 0;

	parse_args(argc, argv);
	raise_fd_limit();
	workers = calloc((size_t)cfg.threads, sizeof(*workers));
	if (!workers) {
		fprintf(stderr, "iou-echo: out of memory\n");
		return 1;
	}
	if (main_loop_start(workers, sigs) < 0)
		exit(1);
	for (int i = 0; i < cfg.threads; i++) {
		workers[i].index = i;
		/* With port 0 the first listener picks the port, the rest share it. */
		workers[i].port = i ? workers[0].port : cfg.port;
		ret = start_worker(&workers[i]);
		if (ret < 0) {
			report_start_error(&workers[i], ret);
			exit(1);
		}
	}
	/* Before the listening line: whoever waits for it can read this. */
	fprintf(stderr, "backend: %s\n", workers[0].backend);
	if (strchr(cfg.host, ':'))
		printf("listening on [%s]:%u\n", cfg.host, (unsigned)workers[0].port);
	else
		printf("listening on %s:%u\n", cfg.host, (unsigned)workers[0].port);
	fflush(stdout);

	/* The watchers keep no loop running: turn by turn until every worker
	 * ended (each one wakes this loop when it does). */
	while (atomic_load(&workers_done) < cfg.threads) {
		ret = iou_loop_run_once(main_loop, -1);
		if (ret < 0) {
			fprintf(stderr, "iou-echo: event loop failed: %s\n",
				iou_strerror(ret));
			exit(1);
		}
	}
	/* Joined first: a worker counted itself before it woke this loop. */
	for (int i = 0; i < cfg.threads; i++) {
		pthread_join(workers[i].tid, NULL);
		finished += workers[i].finished;
		cut += workers[i].cut;
	}
	iou_signal_stop(sigs[0]);
	iou_signal_stop(sigs[1]);
	iou_loop_run(main_loop); /* the watchers' read ended, posts ran */
	if (iou_loop_destroy(main_loop) < 0)
		fprintf(stderr, "iou-echo: loop still busy at exit\n");
	printf("shutdown: %llu connections finished, %llu cut\n",
	       (unsigned long long)finished, (unsigned long long)cut);
	free(workers);
	return 0;
}
