/* SPDX-License-Identifier: MIT */
/*
 * Soak test under injected faults (issue 8).  Runs only in a build made with
 * ./configure --enable-fault-injection; otherwise it skips (exit 77).
 *
 * An iou echo server (this process, main thread) serves many concurrent
 * clients (a second thread, plain non-blocking sockets and poll): each
 * client sends a few messages of random sizes (1 B .. 256 KiB, log-uniform)
 * and then either half-closes and reads to EOF, reads everything back and
 * closes, or resets the connection (SO_LINGER 0) at a random point.  Half of
 * the server's connections echo with iou_forward(), half with iou_read() +
 * iou_feed() + iou_drain().  Every other client connects to a second
 * server, a task server (iou_task_server_start) whose handlers echo with
 * iou_task_forward() or iou_task_read() + iou_task_write_all(), so that
 * faults reach the tasks' code paths too.
 *
 * While the library injects faults (lib/fault.c), the test checks:
 *  - every byte any client receives is the echo of what it sent, in order
 *    (a prefix, on every connection, faulted or not);
 *  - a connection that saw no fault (no error, no early EOF) got back exactly
 *    what it sent;
 *  - no connection stalls; the server shuts down; no fd is left open (the
 *    /proc/self/fd count before and after); LeakSanitizer (sanitizer build)
 *    finds no leak at exit.
 * It prints the faults injected, per kind, at the end.
 *
 * Before the soak, on a loop of its own at a rate of 200 per 1000: 200
 * iou_tcp_connect()s to a listener; every injected connect failure must
 * reach its callback as that error, once (the callbacks' errors counted
 * against the library's totals), some of them on sockets the kernel had
 * connected, and no fd may be left open.
 *
 * Environment: IOU_FAULT_SEED (default: from the clock, printed),
 * IOU_FAULT_RATE (default 2 here), IOU_SOAK_SECS (default 20),
 * IOU_SOAK_CONNS (default 200), IOU_SOAK_LOOP_FLAGS (iou_loop_opts.flags,
 * e.g. IOU_LOOP_NO_RECV_BUNDLE; default 0).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "iou.h"
#include "t_helpers.h"

#ifndef IOU_FAULT_INJECTION

int main(void)
{
	printf("SKIP: built without ./configure --enable-fault-injection\n");
	return T_EXIT_SKIP;
}

#else

#define IOU__FAULT_NO_WRAP /* the test's own allocations never fail */
#include "loop_int.h" /* the fault kinds and totals */

#define MAX_MSG (256u * 1024u)
#define STALL_MS 20000

static unsigned soak_secs = 20, nconns = 200;
static uint16_t ports[2]; /* the callback server's, the task server's */
static int clients_done; /* atomic */

/* ---- the pattern: byte i of connection `seed` ---------------------------- */

static inline uint8_t pat(uint32_t seed, uint64_t i)
{
	return (uint8_t)(i * 131u + (i >> 8) * 7u + (i >> 16) * 13u + seed);
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* 1 .. MAX_MSG, log-uniform: as many tiny messages as big ones. */
static uint64_t msg_size(uint64_t *r)
{
	unsigned bits = (unsigned)(rng_next(r) % 19); /* 2^0 .. 2^18 */
	uint64_t lo = 1ull << bits, n = lo + rng_next(r) % lo;

	return n > MAX_MSG ? MAX_MSG : n;
}

/* ---- clients ------------------------------------------------------------ */

enum { PLAN_HALF, PLAN_READCLOSE, PLAN_RESET };

struct cl {
	int fd;               /* -1: slot free */
	bool connecting;
	bool wr_shut;
	int plan;
	uint32_t seed;
	uint64_t total, sent, rcvd, reset_at;
	uint64_t last_progress;
};

struct results {
	uint64_t ok, faulted, reset, failed, started;
	uint64_t bytes_verified;
};

static struct results res;

static void cl_fail(struct cl *c, const char *why)
{
	if (res.failed++ >= 20)
		return; /* enough said */
	fprintf(stderr,
		"FAIL: connection seed %u plan %d: %s (sent %llu/%llu, "
		"received %llu)\n",
		c->seed, c->plan, why, (unsigned long long)c->sent,
		(unsigned long long)c->total, (unsigned long long)c->rcvd);
}

static void cl_end(struct cl *c, bool reset)
{
	if (reset) {
		struct linger l = { 1, 0 };

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	close(c->fd);
	c->fd = -1;
}

static void cl_start(struct cl *c, uint64_t *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(ports[res.started % 2]),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned msgs = 1 + (unsigned)(rng_next(r) % 4), p;
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->seed = (uint32_t)rng_next(r);
	for (unsigned i = 0; i < msgs; i++)
		c->total += msg_size(r);
	p = (unsigned)(rng_next(r) % 100);
	c->plan = p < 70 ? PLAN_HALF : p < 85 ? PLAN_READCLOSE : PLAN_RESET;
	c->reset_at = rng_next(r) % (c->total + 1);
	c->last_progress = t_now_ms();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		perror("socket");
		res.failed++;
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	res.started++;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EINPROGRESS) {
			cl_fail(c, strerror(errno));
			cl_end(c, false);
			return;
		}
		c->connecting = true;
	}
}

/* The connection saw a fault: an error or an early end. */
static void cl_faulted(struct cl *c)
{
	res.faulted++;
	cl_end(c, false);
}

static void cl_send(struct cl *c, uint64_t *r)
{
	static unsigned char buf[65536];

	while (c->sent < c->total) {
		uint64_t n = c->total - c->sent;
		uint64_t chunk = 1 + rng_next(r) % sizeof(buf);
		ssize_t k;

		if (n > chunk)
			n = chunk;
		if (c->plan == PLAN_RESET && c->sent + n > c->reset_at)
			n = c->reset_at - c->sent;
		if (c->plan == PLAN_RESET && n == 0) {
			res.reset++;
			cl_end(c, true);
			return;
		}
		for (uint64_t i = 0; i < n; i++)
			buf[i] = pat(c->seed, c->sent + i);
		k = send(c->fd, buf, n, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EAGAIN)
				return;
			cl_faulted(c);
			return;
		}
		c->sent += (uint64_t)k;
		c->last_progress = t_now_ms();
	}
	if (c->plan == PLAN_RESET) { /* reset_at == total */
		res.reset++;
		cl_end(c, true);
		return;
	}
	if (c->plan == PLAN_HALF && !c->wr_shut) {
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
	}
}

static void cl_recv(struct cl *c)
{
	static unsigned char buf[65536];

	for (;;) {
		ssize_t k = recv(c->fd, buf, sizeof(buf), 0);

		if (k < 0) {
			if (errno != EAGAIN)
				cl_faulted(c);
			return;
		}
		if (k == 0) {
			if (c->rcvd == c->total && c->plan == PLAN_HALF) {
				res.ok++;
				res.bytes_verified += c->total;
				cl_end(c, false);
			} else {
				cl_faulted(c); /* the server ended early */
			}
			return;
		}
		if (c->rcvd + (uint64_t)k > c->sent) {
			cl_fail(c, "received more than was sent");
			cl_end(c, false);
			return;
		}
		for (ssize_t i = 0; i < k; i++) {
			if (buf[i] != pat(c->seed, c->rcvd + (uint64_t)i)) {
				fprintf(stderr, "byte %llu: got %u want %u\n",
					(unsigned long long)(c->rcvd + (uint64_t)i),
					buf[i], pat(c->seed, c->rcvd + (uint64_t)i));
				cl_fail(c, "echo differs from what was sent");
				cl_end(c, false);
				return;
			}
		}
		c->rcvd += (uint64_t)k;
		c->last_progress = t_now_ms();
		if (c->plan == PLAN_READCLOSE && c->rcvd == c->total) {
			res.ok++;
			res.bytes_verified += c->total;
			cl_end(c, false);
			return;
		}
	}
}

static void *client_main(void *arg)
{
	uint64_t r = (uint64_t)(uintptr_t)arg;
	uint64_t stop_at = t_now_ms() + soak_secs * 1000ull;
	struct cl *cs = calloc(nconns, sizeof(*cs));
	struct pollfd *pf = calloc(nconns, sizeof(*pf));

	for (unsigned i = 0; i < nconns; i++)
		cs[i].fd = -1;
	for (;;) {
		uint64_t now = t_now_ms();
		unsigned active = 0;

		for (unsigned i = 0; i < nconns; i++) {
			struct cl *c = &cs[i];

			if (c->fd < 0 && now < stop_at)
				cl_start(c, &r);
			pf[i].fd = c->fd;
			pf[i].events = 0;
			pf[i].revents = 0;
			if (c->fd < 0)
				continue;
			active++;
			if (now > c->last_progress + STALL_MS) {
				cl_fail(c, "stalled");
				cl_end(c, true);
				pf[i].fd = -1;
				continue;
			}
			if (c->connecting || (c->sent < c->total))
				pf[i].events |= POLLOUT;
			if (!c->connecting)
				pf[i].events |= POLLIN;
		}
		if (!active && now >= stop_at)
			break;
		if (poll(pf, nconns, 100) < 0 && errno != EINTR) {
			perror("poll");
			break;
		}
		for (unsigned i = 0; i < nconns; i++) {
			struct cl *c = &cs[i];

			if (c->fd < 0 || pf[i].fd < 0 || !pf[i].revents)
				continue;
			if (c->connecting) {
				int err = 0;
				socklen_t len = sizeof(err);

				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err) {
					cl_fail(c, strerror(err));
					cl_end(c, false);
					continue;
				}
				c->connecting = false;
			}
			if (pf[i].revents & (POLLIN | POLLHUP | POLLERR))
				cl_recv(c);
			if (c->fd >= 0 && c->sent < c->total)
				cl_send(c, &r);
		}
	}
	free(cs);
	free(pf);
	__atomic_store_n(&clients_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* ---- the server ----------------------------------------------------------- */

struct sconn {
	iou_stream *s;
	bool closing;
};

static unsigned long long srv_closed;

static void on_closed(iou_stream *s, void *ud)
{
	(void)s;
	free(ud);
	srv_closed++;
}

static void sclose(struct sconn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (iou_close(c->s, on_closed, c) < 0)
		fprintf(stderr, "iou_close failed\n");
}

static void on_forwarded(iou_stream *s, ssize_t r, void *ud)
{
	struct sconn *c = ud;

	if (r > 0 && !c->closing &&
	    iou_forward(s, s, SIZE_MAX, on_forwarded, c) == 0)
		return;
	sclose(c); /* EOF (everything was echoed), error, or cancelled */
}

static void on_drained(iou_stream *s, ssize_t r, void *ud)
{
	(void)s;
	if (r < 0)
		sclose(ud);
}

static void on_final_drain(iou_stream *s, ssize_t r, void *ud)
{
	(void)s;
	(void)r;
	sclose(ud);
}

static void on_read(iou_stream *s, ssize_t r, const void *data, void *ud)
{
	struct sconn *c = ud;

	if (c->closing)
		return;
	if (r == 0) {
		/* EOF: close once the echo before it went out (an empty drain
		 * completes in order after the queued writes). */
		if (iou_drain(s, on_final_drain, c) < 0)
			sclose(c);
		return;
	}
	if (r < 0 || iou_feed(s, data, (size_t)r) < 0 ||
	    iou_drain(s, on_drained, c) < 0 ||
	    iou_read(s, 65536, on_read, c) < 0)
		sclose(c);
}

static void on_conn(iou_server *srv, iou_stream *s, const struct sockaddr *peer,
		    void *ud)
{
	struct sconn *c = calloc(1, sizeof(*c));
	static unsigned n;
	int ret;

	(void)srv;
	(void)peer;
	(void)ud;
	if (!c) {
		iou_close(s, NULL, NULL);
		return;
	}
	c->s = s;
	if (n++ % 2)
		ret = iou_forward(s, s, SIZE_MAX, on_forwarded, c);
	else
		ret = iou_read(s, 65536, on_read, c);
	if (ret < 0)
		sclose(c);
}

/* The task server's handler: echo until the end of file or an error
 * (the stream closes gracefully when it returns). */
static unsigned long long task_handled;

static void task_echo(iou_stream *s, void *ud)
{
	static unsigned n;
	unsigned char buf[16384];
	ssize_t r;

	(void)ud;
	task_handled++;
	if (n++ % 2) {
		while ((r = iou_task_forward(s, s, SIZE_MAX, -1)) > 0)
			;
		return;
	}
	while ((r = iou_task_read(s, buf, sizeof(buf), -1)) > 0)
		if (iou_task_write_all(s, buf, (size_t)r, -1) != r)
			return;
}

static int shut_done;

static void on_shut(iou_server *srv, uint64_t finished, uint64_t cut, void *ud)
{
	(void)srv;
	(void)ud;
	printf("server shut down: %llu finished, %llu cut\n",
	       (unsigned long long)finished, (unsigned long long)cut);
	shut_done++;
}

/* t_fd_count() asserts with Check, which works only inside a Check test. */
static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *v = getenv(name);

	return v && *v ? (unsigned)strtoul(v, NULL, 0) : dflt;
}

static int old_recv_reads;

static void old_recv_cb(iou_stream *s, ssize_t res, const void *d, void *ud)
{
	(void)s;
	(void)d;
	if (res == 100)
		old_recv_reads++;
	else
		fprintf(stderr, "stream %d: read gave %zd\n", (int)(intptr_t)ud,
			res);
}

static void count_close_cb(iou_stream *s, void *ud)
{
	(void)s;
	++*(int *)ud;
}

/* A connected loopback TCP pair without Check's assertions (this program
 * is no Check suite): 0, or -1. */
static int tcp_pair(int lfd, const struct sockaddr_in *sa, int fds[2])
{
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0)
		return -1;
	if (connect(fds[0], (const struct sockaddr *)sa, sizeof(*sa)) < 0 ||
	    (fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		close(fds[0]);
		return -1;
	}
	return 0;
}

/* On a kernel without the recv byte limit (simulated), streams that start
 * receiving in the same turn all get -EINVAL once; each must re-arm without
 * the limit and read normally (a regression: only the first one did). */
static int old_kernel_recv_check(void)
{
	enum { N = 4 };
	iou_loop *loop;
	iou_stream *s[N];
	int pair[N][2], closed = 0, ret;
	uint64_t end;

	char rate[32];

	/* no random faults here: only the refused limit */
	snprintf(rate, sizeof(rate), "%s", getenv("IOU_FAULT_RATE"));
	setenv("IOU_FAULT_OLD_RECV", "1", 1);
	setenv("IOU_FAULT_RATE", "0", 1);
	ret = iou_loop_create(&loop, NULL);
	unsetenv("IOU_FAULT_OLD_RECV");
	setenv("IOU_FAULT_RATE", rate, 1);
	if (ret < 0) {
		fprintf(stderr, "iou_loop_create: %s\n", iou_strerror(ret));
		return 1;
	}
	if (strcmp(iou_loop_backend(loop), "epoll") == 0) {
		/* the fault is made in an SQE; epoll honours the limit */
		printf("old kernel (recv byte limit refused): skipped on epoll: "
		       "io_uring only\n");
		iou_loop_destroy(loop);
		return 0;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, N) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		fprintf(stderr, "old-kernel check: no listener\n");
		return 1;
	}
	for (int i = 0; i < N; i++) {
		char msg[100];

		memset(msg, 'a' + i, sizeof(msg));
		if (tcp_pair(lfd, &sa, pair[i]) < 0 ||
		    write(pair[i][0], msg, sizeof(msg)) != (ssize_t)sizeof(msg) ||
		    iou_stream_open(loop, pair[i][1], NULL, &s[i]) < 0 ||
		    iou_read_exactly(s[i], 100, old_recv_cb,
				     (void *)(intptr_t)i) < 0) {
			fprintf(stderr, "old-kernel check: set-up failed\n");
			return 1;
		}
	}
	end = t_now_ms() + 5000;
	while (old_recv_reads < N && t_now_ms() < end)
		iou_loop_run_once(loop, 10);
	ret = old_recv_reads == N && !loop->bufs.recv_limit ? 0 : 1;
	printf("old kernel (recv byte limit refused): %d of %d streams read, "
	       "limit %s: %s\n", old_recv_reads, N,
	       loop->bufs.recv_limit ? "still on" : "dropped",
	       ret ? "FAIL" : "ok");
	for (int i = 0; i < N; i++) {
		iou_close(s[i], count_close_cb, &closed);
		close(pair[i][0]);
	}
	close(lfd);
	while (closed < N && t_now_ms() < end + 5000)
		iou_loop_run_once(loop, 10);
	if (iou_loop_destroy(loop) < 0)
		ret = 1;
	return ret;
}

/* Connects under faults, on a loop of their own with a higher rate so that
 * connect faults come for sure: each injected failure must reach the
 * application's callback as that error, once (counted by error against the
 * library's totals), and a failed connect must leave no fd behind, the
 * kernel's connected socket included ("connect had succeeded").  Then as
 * many connects closed at once: each callback gets -ECANCELED, once,
 * whatever was injected, and each close callback runs once. */
enum { CF_CONNS = 200 };

static const struct {
	int kind, err;
} cf_errs[] = {
	{ IOU__F_CONNECT_REFUSED, -ECONNREFUSED },
	{ IOU__F_CONNECT_TIMEDOUT, -ETIMEDOUT },
	{ IOU__F_CONNECT_CANCELED, -ECANCELED },
	{ IOU__F_CONNECT_UNREACH, -ENETUNREACH },
};

struct cf_conn {
	int calls, res, closes;
	iou_stream *s;
};

static int cf_called, cf_closed;

static void cf_on_connect(iou_stream *s, int res, void *ud)
{
	struct cf_conn *c = ud;

	if (!c->calls++)
		cf_called++;
	c->res = res;
	c->s = res == 0 ? s : NULL;
}

static void cf_on_close(iou_stream *s, void *ud)
{
	struct cf_conn *c = ud;

	(void)s;
	if (!c->closes++)
		cf_closed++;
}

/* Start CF_CONNS connects (closed at once if `close_now`) and run the loop
 * until each was called back (and closed); 0, or -1 if one did not start. */
static int cf_round(iou_loop *loop, uint16_t port, struct cf_conn *cs,
		    bool close_now)
{
	uint64_t end = t_now_ms() + 10000;

	memset(cs, 0, CF_CONNS * sizeof(*cs));
	cf_called = cf_closed = 0;
	for (int i = 0; i < CF_CONNS; i++) {
		struct iou_connect_opts o;
		iou_stream *s;
		int ret;

		iou_connect_opts_init(&o);
		o.timeout_ms = i % 2 ? 30000 : 0; /* a deadline to disarm */
		ret = iou_tcp_connect(loop, "127.0.0.1", port, &o,
				      cf_on_connect, &cs[i], &s);
		if (ret == 0 && close_now)
			ret = iou_close(s, cf_on_close, &cs[i]);
		if (ret < 0) {
			fprintf(stderr, "connect check: connect %d: %s\n", i,
				iou_strerror(ret));
			return -1;
		}
	}
	while ((cf_called < CF_CONNS || (close_now && cf_closed < CF_CONNS)) &&
	       t_now_ms() < end)
		iou_loop_run_once(loop, 10);
	/* a callback that runs twice may do so a little later */
	for (int i = 0; i < 10; i++)
		iou_loop_run_once(loop, 0);
	return 0;
}

static int connect_fault_check(void)
{
	static struct cf_conn cs[CF_CONNS];
	uint64_t before[IOU__F_NKINDS], after[IOU__F_NKINDS];
	unsigned long long seen[4] = { 0 }, ok = 0, nomem = 0, injected = 0;
	unsigned long long on_ok, on_closed = 0;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	int fds_before = fd_count(), fds_after, lfd, ret, failed = 0;
	int closed = 0, nopen = 0;
	const char *backend;
	char rate[32];
	iou_loop *loop;
	uint64_t end;

	snprintf(rate, sizeof(rate), "%s", getenv("IOU_FAULT_RATE"));
	setenv("IOU_FAULT_RATE", "200", 1);
	ret = iou_loop_create(&loop, NULL);
	setenv("IOU_FAULT_RATE", rate, 1);
	if (ret < 0) {
		fprintf(stderr, "iou_loop_create: %s\n", iou_strerror(ret));
		return 1;
	}
	backend = iou_loop_backend(loop);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* never accepted: the backlog holds them all, the close drops them */
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 2 * CF_CONNS) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		fprintf(stderr, "connect check: no listener\n");
		return 1;
	}
	iou__fault_totals(before);
	if (cf_round(loop, ntohs(sa.sin_port), cs, false) < 0)
		return 1;
	iou__fault_totals(after);
	for (int i = 0; i < CF_CONNS; i++) {
		struct cf_conn *c = &cs[i];
		int k;

		if (c->calls != 1) {
			fprintf(stderr, "FAIL: connect %d: callback ran %d times\n",
				i, c->calls);
			failed = 1;
			continue;
		}
		if (c->res == 0) {
			ok++;
			/* outside a turn: this close cannot fail by injection */
			ret = iou_close(c->s, count_close_cb, &closed);
			if (ret < 0) {
				fprintf(stderr, "FAIL: connect %d: iou_close: "
					"%s\n", i, iou_strerror(ret));
				failed = 1;
			} else {
				nopen++;
			}
			continue;
		}
		if (c->res == -ENOMEM) { /* an allocation fault */
			nomem++;
			continue;
		}
		for (k = 0; k < 4 && cf_errs[k].err != c->res; k++)
			;
		if (k == 4) {
			fprintf(stderr, "FAIL: connect %d: %s, no fault of ours\n",
				i, iou_strerror(c->res));
			failed = 1;
			continue;
		}
		seen[k]++;
	}
	for (int k = 0; k < 4; k++) {
		unsigned long long n = after[cf_errs[k].kind] -
				       before[cf_errs[k].kind];

		injected += n;
		if (n != seen[k]) {
			fprintf(stderr, "FAIL: %s injected %llu times, the "
				"callbacks saw it %llu times\n",
				iou__fault_name(cf_errs[k].kind), n, seen[k]);
			failed = 1;
		}
	}
	on_ok = after[IOU__F_CONNECT_WAS_OK] - before[IOU__F_CONNECT_WAS_OK];
	end = t_now_ms() + 5000;
	while (closed < nopen && t_now_ms() < end)
		iou_loop_run_once(loop, 10);
	if (closed != nopen) {
		fprintf(stderr, "FAIL: connect check: %d of %d connected "
			"streams closed\n", closed, nopen);
		failed = 1;
	}

	iou__fault_totals(before);
	if (cf_round(loop, ntohs(sa.sin_port), cs, true) < 0)
		return 1;
	iou__fault_totals(after);
	for (int k = 0; k < 4; k++)
		on_closed += after[cf_errs[k].kind] - before[cf_errs[k].kind];
	for (int i = 0; i < CF_CONNS; i++) {
		if (cs[i].calls != 1 || cs[i].res != -ECANCELED ||
		    cs[i].closes != 1) {
			fprintf(stderr, "FAIL: connect %d closed at once: "
				"callback ran %d times (last: %s), close "
				"callback %d times\n", i, cs[i].calls,
				iou_strerror(cs[i].res), cs[i].closes);
			failed = 1;
		}
	}
	close(lfd);
	if ((ret = iou_loop_destroy(loop)) < 0) {
		fprintf(stderr, "FAIL: connect check: iou_loop_destroy: %s\n",
			iou_strerror(ret));
		failed = 1;
	}
	fds_after = fd_count();
	if (fds_after != fds_before) {
		fprintf(stderr, "FAIL: connect check: %d fds leaked\n",
			fds_after - fds_before);
		failed = 1;
	}
	if (!injected || !on_ok) {
		fprintf(stderr, "FAIL: on %s, connect faults injected: %llu, "
			"%llu of them on a connected socket; each must have "
			"some\n", backend, injected, on_ok);
		failed = 1;
	}
	printf("connects under faults (rate 200): of %d, %llu connected, "
	       "%llu injected failures (%llu after a real connect), %llu "
	       "-ENOMEM; %d closed at once (%llu injected failures); fds %d "
	       "before, %d after: %s\n", CF_CONNS, ok, injected, on_ok, nomem,
	       CF_CONNS, on_closed, fds_before, fds_after,
	       failed ? "FAIL" : "ok");
	return failed;
}

int main(void)
{
	struct iou_loop_opts lo;
	struct iou_server_opts so;
	struct iou_server_stats st;
	uint64_t totals[IOU__F_NKINDS], nfaults = 0, nrecv, nsend, naccept;
	const char *backend;
	char seedbuf[32];
	iou_loop *loop;
	iou_server *srv, *tsrv;
	pthread_t th;
	int fds_before, fds_after, ret, failed = 0;

	if (!t_uring_available()) {
		printf("SKIP: io_uring unavailable\n");
		return T_EXIT_SKIP;
	}
	soak_secs = env_uint("IOU_SOAK_SECS", 20);
	nconns = env_uint("IOU_SOAK_CONNS", 200);
	if (!getenv("IOU_FAULT_SEED") || !*getenv("IOU_FAULT_SEED")) {
		snprintf(seedbuf, sizeof(seedbuf), "%llu",
			 (unsigned long long)time(NULL));
		setenv("IOU_FAULT_SEED", seedbuf, 1);
	}
	if (!getenv("IOU_FAULT_RATE"))
		setenv("IOU_FAULT_RATE", "2", 1);
	if (old_kernel_recv_check())
		return 1;
	if (connect_fault_check())
		return 1;
	printf("soak: %u s, %u connections, IOU_FAULT_SEED=%s IOU_FAULT_RATE=%s\n",
	       soak_secs, nconns, getenv("IOU_FAULT_SEED"),
	       getenv("IOU_FAULT_RATE"));
	fflush(stdout);

	fds_before = fd_count();
	iou_loop_opts_init(&lo);
	lo.buf_count = 512; /* a small pool: starvation and spills happen */
	lo.buf_size = 4096;
	lo.flags = env_uint("IOU_SOAK_LOOP_FLAGS", 0); /* IOU_LOOP_NO_* */
	ret = iou_loop_create(&loop, &lo);
	if (ret < 0) {
		fprintf(stderr, "iou_loop_create: %s\n", iou_strerror(ret));
		return 1;
	}
	backend = iou_loop_backend(loop);
	iou_server_opts_init(&so);
	so.port = 0;
	ret = iou_server_start(loop, &so, on_conn, NULL, &srv);
	if (ret < 0) {
		fprintf(stderr, "iou_server_start: %s\n", iou_strerror(ret));
		return 1;
	}
	ret = iou_task_server_start(loop, &so, task_echo, NULL, NULL, &tsrv);
	if (ret < 0) {
		fprintf(stderr, "iou_task_server_start: %s\n",
			iou_strerror(ret));
		return 1;
	}
	ports[0] = iou_server_port(srv);
	ports[1] = iou_server_port(tsrv);
	if (pthread_create(&th, NULL, client_main,
			   (void *)(uintptr_t)strtoull(getenv("IOU_FAULT_SEED"),
						       NULL, 0))) {
		fprintf(stderr, "pthread_create failed\n");
		return 1;
	}
	while (!__atomic_load_n(&clients_done, __ATOMIC_ACQUIRE)) {
		ret = iou_loop_run_once(loop, 50);
		if (ret < 0) {
			fprintf(stderr, "iou_loop_run_once: %s\n", iou_strerror(ret));
			failed = 1;
			break;
		}
	}
	pthread_join(th, NULL);
	iou_server_get_stats(srv, &st);
	for (int i = 0; i < 2; i++) {
		ret = iou_server_shutdown(i ? tsrv : srv, 2000, on_shut, NULL);
		if (ret < 0) {
			fprintf(stderr, "iou_server_shutdown: %s\n",
				iou_strerror(ret));
			failed = 1;
		}
	}
	for (uint64_t end = t_now_ms() + 10000;
	     iou_loop_alive(loop) && t_now_ms() < end;)
		iou_loop_run_once(loop, 50);
	if (shut_done != 2 || iou_loop_alive(loop)) {
		fprintf(stderr, "FAIL: the server did not shut down\n");
		failed = 1;
	} else if ((ret = iou_loop_destroy(loop)) < 0) {
		fprintf(stderr, "FAIL: iou_loop_destroy: %s\n", iou_strerror(ret));
		failed = 1;
	}
	fds_after = fd_count();

	iou__fault_totals(totals);
	printf("faults injected (and survived):\n");
	for (int i = 0; i < IOU__F_NKINDS; i++) {
		printf("  %-34s %llu\n", iou__fault_name(i),
		       (unsigned long long)totals[i]);
		nfaults += totals[i];
	}
	printf("  %-34s %llu\n", "total", (unsigned long long)nfaults);
	printf("server: %llu accepted, %llu closed by the application\n",
	       (unsigned long long)st.accepted, srv_closed);
	printf("task server: %llu handlers run\n", task_handled);
	printf("connections: %llu started, %llu ok (byte-exact, %llu bytes), "
	       "%llu faulted, %llu reset by the client, %llu FAILED\n",
	       (unsigned long long)res.started, (unsigned long long)res.ok,
	       (unsigned long long)res.bytes_verified,
	       (unsigned long long)res.faulted, (unsigned long long)res.reset,
	       (unsigned long long)res.failed);
	printf("fds: %d before, %d after\n", fds_before, fds_after);
	if (res.failed)
		failed = 1;
	if (fds_after != fds_before) {
		fprintf(stderr, "FAIL: %d fds leaked\n", fds_after - fds_before);
		failed = 1;
	}
	if (!res.ok) {
		fprintf(stderr, "FAIL: no connection completed without a fault\n");
		failed = 1;
	}
	if (env_uint("IOU_FAULT_RATE", 0) && !nfaults) {
		fprintf(stderr, "FAIL: no fault was injected\n");
		failed = 1;
	}
	/* Each op kind's faults on either backend (epoll once had none). */
	nrecv = totals[IOU__F_RECV_CANCELED] + totals[IOU__F_RECV_ENOBUFS] +
		totals[IOU__F_RECV_RESET];
	nsend = totals[IOU__F_SEND_SHORT] + totals[IOU__F_SEND_EPIPE] +
		totals[IOU__F_SEND_RESET] + totals[IOU__F_SEND_CANCELED];
	naccept = totals[IOU__F_ACCEPT_CANCELED] +
		  totals[IOU__F_ACCEPT_EMFILE] + totals[IOU__F_ACCEPT_ABORTED];
	if (env_uint("IOU_FAULT_RATE", 0) && (!nrecv || !nsend || !naccept)) {
		fprintf(stderr, "FAIL: on %s, faults injected: %llu recv, %llu "
			"send, %llu accept; each kind must have some\n", backend,
			(unsigned long long)nrecv, (unsigned long long)nsend,
			(unsigned long long)naccept);
		failed = 1;
	}
	printf("%s\n", failed ? "FAIL" : "PASS");
	return failed;
}

#endif /* IOU_FAULT_INJECTION */
