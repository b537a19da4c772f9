/* SPDX-License-Identifier: MIT */
/*
 * Check suite "server": iou_server_start/shutdown, the connection registry,
 * max_conns, idle timeouts, accept back-off on fd exhaustion, graceful
 * drain with ops in flight, and argument errors.
 *
 * Clients live in the test process: non-blocking sockets pumped between
 * iou_loop_run_once() turns (pump_clients), so one thread drives both sides
 * and every wait is bounded in turns and in wall time (RUN_UNTIL).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#include "iou.h"
#include "t_helpers.h"

#define IN_CAP 256

/* One client socket of the test process. */
struct cli {
	int fd;
	const unsigned char *out; /* bytes to send, may be NULL */
	size_t out_len, sent;
	unsigned char in[IN_CAP]; /* the first IN_CAP bytes received */
	size_t in_len;            /* every byte received */
	bool read;                /* read what arrives (else leave it queued) */
	bool shut_after;          /* SHUT_WR once `out` is sent */
	bool shut_done;
	bool close_when_echoed;   /* close once in_len == out_len */
	bool eof;                 /* EOF or reset seen */
	int err;                  /* errno of a failed send/recv */
	uint64_t eof_at;
};

enum mode {
	MODE_ECHO,      /* iou_forward back to the sender until EOF */
	MODE_READ_HOLD, /* one iou_read pending, never satisfied */
	MODE_WRITE_BIG, /* one large iou_write_all the peer never reads */
};

struct env {
	iou_loop *loop;
	iou_server *srv;
	enum mode mode;
	struct cli *cli;
	int ncli;
	int conns;           /* on_connection calls */
	int app_closed;      /* close callbacks of streams the app closed */
	int notified;        /* on_shutdown calls */
	void *notified_ud;
	int done;            /* done callbacks */
	int notified_at_done;
	uint64_t finished, cut;
	iou_stream *last;    /* the last accepted stream */
	struct sockaddr_storage last_peer;
	int op_calls;        /* read/write callbacks of MODE_READ_HOLD/WRITE_BIG */
	ssize_t op_res;
	unsigned char *big;
	size_t big_len;
};

/* ---- clients ------------------------------------------------------------ */

static int cli_socket(int family, int rcvbuf)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	if (rcvbuf)
		ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
					    sizeof(rcvbuf)), 0);
	return fd;
}

static socklen_t addr_of(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons(port);
		return sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons(port);
		return sizeof(*a);
	}
}

/* Start a non-blocking connect of an existing socket. */
static void cli_connect_fd(struct cli *c, int fd, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_of(family, port, &ss);
	int r = connect(fd, (struct sockaddr *)&ss, len);

	ck_assert_msg(r == 0 || errno == EINPROGRESS, "connect: %s",
		      strerror(errno));
	c->fd = fd;
	c->read = true;
}

static void cli_connect(struct cli *c, int family, uint16_t port)
{
	cli_connect_fd(c, cli_socket(family, 0), family, port);
}

static void cli_close(struct cli *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static void cli_pump(struct cli *c)
{
	unsigned char scratch[4096];
	ssize_t n;

	if (c->fd < 0)
		return;
	while (c->out && c->sent < c->out_len && !c->err) {
		n = send(c->fd, c->out + c->sent, c->out_len - c->sent,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			c->sent += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != ENOTCONN)
			c->err = errno;
		break;
	}
	if (c->shut_after && !c->shut_done && c->out && c->sent == c->out_len) {
		if (shutdown(c->fd, SHUT_WR) == 0)
			c->shut_done = true;
	}
	while (c->read && !c->eof) {
		n = recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
		if (n > 0) {
			if (c->in_len < IN_CAP) {
				size_t k = IN_CAP - c->in_len;

				memcpy(c->in + c->in_len, scratch,
				       (size_t)n < k ? (size_t)n : k);
			}
			c->in_len += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != ENOTCONN)) {
			if (n < 0)
				c->err = errno;
			c->eof = true;
			c->eof_at = t_now_ms();
		}
		break;
	}
	if (c->close_when_echoed && c->out && c->in_len >= c->out_len)
		cli_close(c);
}

static void pump_clients(struct env *e)
{
	for (int i = 0; i < e->ncli; i++)
		cli_pump(&e->cli[i]);
}

static bool echoed(const struct cli *c)
{
	return c->in_len == c->out_len &&
	       memcmp(c->in, c->out, c->out_len < IN_CAP ? c->out_len : IN_CAP) == 0;
}

/* Run turns (and pump the clients) until `cond`; fail after `ms`. */
#define RUN_UNTIL(e, cond, ms)                                                \
	do {                                                                  \
		uint64_t end_ = t_now_ms() + (uint64_t)(ms);                  \
		long turns_ = 0;                                              \
		for (;;) {                                                    \
			pump_clients(e);                                      \
			if (cond)                                             \
				break;                                        \
			ck_assert_msg(t_now_ms() < end_ &&                    \
					      turns_++ < (long)(ms) * 100 + 1000, \
				      "timed out after %d ms waiting for %s", \
				      (int)(ms), #cond);                      \
			ck_assert_int_ge(iou_loop_run_once((e)->loop, 1), 0); \
		}                                                             \
	} while (0)

/* Run turns of at most `turn_ms` and pump the clients for `ms`. */
static void run_for(struct env *e, int ms, int turn_ms)
{
	uint64_t end = t_now_ms() + (uint64_t)ms;
	long turns = 0;

	while (t_now_ms() < end && turns++ < (long)ms * 100 + 1000) {
		pump_clients(e);
		ck_assert_int_ge(iou_loop_run_once(e->loop, turn_ms), 0);
	}
	pump_clients(e);
}

/* A blocking connect to 127.0.0.1:port: 0 or the errno it failed with. */
static int connect_errno(uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_of(AF_INET, port, &ss);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;

	ck_assert_int_ge(fd, 0);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		err = errno;
	close(fd);
	return err;
}

/* ---- the server side ---------------------------------------------------- */

static void on_app_closed(iou_stream *s, void *ud)
{
	struct env *e = ud;

	(void)s;
	e->app_closed++;
	if (e->last == s)
		e->last = NULL;
}

static void echo_next(iou_stream *s, ssize_t res, void *ud)
{
	struct env *e = ud;

	if (res > 0 && iou_forward(s, s, SIZE_MAX, echo_next, e) == 0)
		return;
	/* EOF, an error, or -ECANCELED after the server closed it (then
	 * iou_close() says IOU_ECLOSED and changes nothing). */
	iou_close(s, on_app_closed, e);
}

static void hold_read_done(iou_stream *s, ssize_t res, const void *data,
			   void *ud)
{
	struct env *e = ud;

	(void)data;
	e->op_calls++;
	e->op_res = res;
	if (res <= 0)
		iou_close(s, on_app_closed, e);
}

static void big_write_done(iou_stream *s, ssize_t res, void *ud)
{
	struct env *e = ud;

	e->op_calls++;
	e->op_res = res;
	if (res < 0)
		iou_close(s, on_app_closed, e);
}

static void on_conn(iou_server *srv, iou_stream *s, const struct sockaddr *peer,
		    void *ud)
{
	struct env *e = ud;
	int ret = 0;

	ck_assert_ptr_eq(srv, e->srv);
	e->conns++;
	e->last = s;
	memcpy(&e->last_peer, peer, peer->sa_family == AF_INET6 ?
	       sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	switch (e->mode) {
	case MODE_ECHO:
		ret = iou_forward(s, s, SIZE_MAX, echo_next, e);
		break;
	case MODE_READ_HOLD:
		ret = iou_read(s, 4096, hold_read_done, e);
		break;
	case MODE_WRITE_BIG:
		ret = iou_write_all(s, e->big, e->big_len, big_write_done, e);
		break;
	}
	ck_assert_int_eq(ret, 0);
}

static void on_shutdown(iou_server *srv, void *ud)
{
	struct env *e = ud;

	(void)srv;
	e->notified++;
	e->notified_ud = ud;
}

static void on_done(iou_server *srv, uint64_t finished, uint64_t cut, void *ud)
{
	struct env *e = ud;

	ck_assert_ptr_eq(srv, e->srv);
	e->done++;
	e->finished = finished;
	e->cut = cut;
	e->notified_at_done = e->notified;
	e->srv = NULL;
}

static void env_init(struct env *e, int ncli)
{
	memset(e, 0, sizeof(*e));
	e->loop = t_loop_create_or_skip(NULL);
	e->ncli = ncli;
	if (ncli) {
		e->cli = calloc((size_t)ncli, sizeof(*e->cli));
		ck_assert_ptr_nonnull(e->cli);
		for (int i = 0; i < ncli; i++)
			e->cli[i].fd = -1;
	}
}

static void env_opts(struct iou_server_opts *o)
{
	iou_server_opts_init(o);
	o->on_shutdown = on_shutdown;
}

static void env_start(struct env *e, const struct iou_server_opts *o)
{
	int ret = iou_server_start(e->loop, o, on_conn, e, &e->srv);

	ck_assert_msg(ret == 0, "iou_server_start: %s", iou_strerror(ret));
	ck_assert_ptr_nonnull(e->srv);
	ck_assert_uint_ne(iou_server_port(e->srv), 0);
}

static struct iou_server_stats env_stats(const struct env *e)
{
	struct iou_server_stats st;

	memset(&st, 0xff, sizeof(st));
	iou_server_get_stats(e->srv, &st);
	return st;
}

/* Shut down (if still running), wait for the done callback, close the
 * clients, drain and destroy the loop. */
static void env_finish(struct env *e, unsigned grace_ms)
{
	if (e->srv && !e->done) {
		ck_assert_int_eq(iou_server_shutdown(e->srv, grace_ms, on_done, e), 0);
		RUN_UNTIL(e, e->done, grace_ms + 5000);
	}
	for (int i = 0; i < e->ncli; i++)
		cli_close(&e->cli[i]);
	t_loop_destroy(e->loop);
	free(e->cli);
	free(e->big);
}

static void set_message(struct cli *c, char *buf, size_t cap, const char *fmt,
			int i)
{
	int n = snprintf(buf, cap, fmt, i);

	ck_assert(n > 0 && (size_t)n < cap);
	c->out = (const unsigned char *)buf;
	c->out_len = (size_t)n;
	c->sent = 0;
}

static bool ipv6_loopback_usable(void)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_of(AF_INET6, 0, &ss);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

static long cpu_ms(void)
{
	struct rusage ru;

	ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000L;
}

static int max_open_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int max = -1;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		int fd = atoi(de->d_name);

		/* Skip the directory's own fd: it is closed on return. */
		if (de->d_name[0] != '.' && fd != dirfd(d) && fd > max)
			max = fd;
	}
	closedir(d);
	return max;
}

/* ---- start ------------------------------------------------------------- */

/* Port 0 gets a real port; a client of that port reaches on_connection with
 * its own address as the peer; shutdown with nothing open ends at once. */
static void start_stop_family(int family, const char *host)
{
	struct env e;
	struct iou_server_opts o;
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	char buf[32];
	int fds;

	env_init(&e, 1);
	fds = t_fd_count();
	env_opts(&o);
	o.host = host;
	env_start(&e, &o);
	cli_connect(&e.cli[0], family, iou_server_port(e.srv));
	set_message(&e.cli[0], buf, sizeof(buf), "hello %d", 1);
	RUN_UNTIL(&e, e.conns == 1 && echoed(&e.cli[0]), 5000);

	ck_assert_int_eq(e.last_peer.ss_family, family);
	ck_assert_int_eq(getsockname(e.cli[0].fd, (struct sockaddr *)&local, &len), 0);
	ck_assert_int_eq(family == AF_INET6 ?
			 ((struct sockaddr_in6 *)&e.last_peer)->sin6_port :
			 ((struct sockaddr_in *)&e.last_peer)->sin_port,
			 family == AF_INET6 ?
			 ((struct sockaddr_in6 *)&local)->sin6_port :
			 ((struct sockaddr_in *)&local)->sin_port);
	cli_close(&e.cli[0]);
	RUN_UNTIL(&e, e.app_closed == 1, 5000);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 1000, on_done, &e), 0);
	RUN_UNTIL(&e, e.done, 5000);
	ck_assert_uint_eq(e.finished, 0);
	ck_assert_uint_eq(e.cut, 0);
	ck_assert_int_eq(t_fd_count(), fds);
	env_finish(&e, 0);
}

START_TEST(test_start_stop_ipv4)
{
	start_stop_family(AF_INET, "127.0.0.1");
}
END_TEST

START_TEST(test_start_stop_ipv6)
{
	if (!ipv6_loopback_usable()) {
		fprintf(stderr, "test_start_stop_ipv6: ::1 unavailable, skipped\n");
		return;
	}
	start_stop_family(AF_INET6, "::1");
}
END_TEST

START_TEST(test_bad_arguments)
{
	iou_loop *loop = t_loop_create_or_skip(NULL);
	iou_server *srv = (iou_server *)&srv, *const sentinel = srv;
	struct iou_server_opts o;
	int fds = t_fd_count();

	iou_server_opts_init(&o);
	ck_assert_int_eq(iou_server_start(NULL, &o, on_conn, NULL, &srv), -EINVAL);
	ck_assert_int_eq(iou_server_start(loop, &o, NULL, NULL, &srv), -EINVAL);
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, NULL), -EINVAL);
	o.host = "localhost"; /* not numeric */
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	o.host = "256.1.1.1";
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	o.host = NULL;
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	iou_server_opts_init(&o);
	o.backlog = 0;
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	iou_server_opts_init(&o);
	o.stream.max_buffered = 0;
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	/* over the 1 GiB limit: refused at start, not per accepted client */
	iou_server_opts_init(&o);
	o.stream.max_buffered = (1ul << 30) + 1;
	ck_assert_int_eq(iou_server_start(loop, &o, on_conn, NULL, &srv), -EINVAL);
	ck_assert_int_eq(iou_server_shutdown(NULL, 0, NULL, NULL), -EINVAL);
	ck_assert_uint_eq(iou_server_port(NULL), 0);
	/* nothing changed: no server, no fd, no work */
	ck_assert_ptr_eq(srv, sentinel);
	ck_assert_int_eq(t_fd_count(), fds);
	ck_assert_int_eq(iou_loop_alive(loop), 0);
	t_loop_destroy(loop);
}
END_TEST

START_TEST(test_address_in_use)
{
	struct env e;
	struct iou_server_opts o;
	iou_server *second = NULL;
	int fds;

	env_init(&e, 0);
	env_opts(&o);
	env_start(&e, &o);
	fds = t_fd_count();
	o.port = iou_server_port(e.srv);
	ck_assert_int_eq(iou_server_start(e.loop, &o, on_conn, &e, &second),
			 -EADDRINUSE);
	ck_assert_ptr_null(second);
	ck_assert_int_eq(t_fd_count(), fds);
	/* asking for reuseport does not help against a listener without it */
	o.reuseport = 1;
	ck_assert_int_eq(iou_server_start(e.loop, &o, on_conn, &e, &second),
			 -EADDRINUSE);
	env_finish(&e, 0);
}
END_TEST

struct rp_count {
	iou_server *srv[2];
	int n[2];
};

static void rp_conn(iou_server *srv, iou_stream *s, const struct sockaddr *peer,
		    void *ud)
{
	struct rp_count *rc = ud;

	(void)peer;
	rc->n[srv == rc->srv[1]]++;
	iou_close(s, NULL, NULL);
}

/* Two servers with reuseport share one port; the kernel spreads clients. */
START_TEST(test_reuseport_shares_port)
{
	enum { N = 32 };
	iou_loop *loop = t_loop_create_or_skip(NULL);
	struct rp_count rc = { 0 };
	struct iou_server_opts o;
	int fds[N];
	int total = 0;
	uint64_t end;

	iou_server_opts_init(&o);
	o.reuseport = 1;
	ck_assert_int_eq(iou_server_start(loop, &o, rp_conn, &rc, &rc.srv[0]), 0);
	o.port = iou_server_port(rc.srv[0]);
	ck_assert_int_eq(iou_server_start(loop, &o, rp_conn, &rc, &rc.srv[1]), 0);
	ck_assert_uint_eq(iou_server_port(rc.srv[1]), o.port);
	for (int i = 0; i < N; i++) {
		struct sockaddr_storage ss;
		socklen_t len = addr_of(AF_INET, o.port, &ss);

		fds[i] = cli_socket(AF_INET, 0);
		ck_assert(connect(fds[i], (struct sockaddr *)&ss, len) == 0 ||
			  errno == EINPROGRESS);
	}
	end = t_now_ms() + 5000;
	for (long turns = 0; (total = rc.n[0] + rc.n[1]) < N &&
	     t_now_ms() < end && turns < 100000; turns++)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	ck_assert_int_eq(total, N);
	ck_assert_msg(rc.n[0] > 0 && rc.n[1] > 0, "spread %d/%d", rc.n[0], rc.n[1]);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	ck_assert_int_eq(iou_server_shutdown(rc.srv[0], 0, NULL, NULL), 0);
	ck_assert_int_eq(iou_server_shutdown(rc.srv[1], 0, NULL, NULL), 0);
	t_loop_destroy(loop);
}
END_TEST

/* ---- serving ------------------------------------------------------------ */

/* 1000 clients connected at once, each echoed byte-exact.  Each takes two
 * fds (client and server side): where the hard fd limit is too low for
 * that (some CI containers give 1024), as many as it allows, said. */
START_TEST(test_thousand_concurrent_clients)
{
	enum { WANT = 1000, SPARE = 100 };
	struct env e;
	struct iou_server_opts o;
	struct rlimit rl;
	struct iou_server_stats st;
	char (*msg)[48];
	int N = WANT;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * WANT + SPARE) {
		struct rlimit want = { 2 * WANT + SPARE, 2 * WANT + SPARE };

		/* raising the hard limit needs CAP_SYS_RESOURCE (CI is root) */
		if (rl.rlim_max < want.rlim_max && setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
		rl.rlim_cur = rl.rlim_max < want.rlim_cur ? rl.rlim_max : want.rlim_cur;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur < 2 * WANT + SPARE) {
		N = ((int)rl.rlim_cur - SPARE) / 2;
		ck_assert_msg(N >= 200, "RLIMIT_NOFILE hard limit %lu too low",
			      (unsigned long)rl.rlim_max);
		fprintf(stderr, "fd hard limit %lu: %d clients, not %d\n",
			(unsigned long)rl.rlim_max, N, WANT);
	}
	env_init(&e, N);
	msg = calloc((size_t)N, sizeof(*msg));
	ck_assert_ptr_nonnull(msg);
	env_opts(&o);
	o.backlog = 2048;
	env_start(&e, &o);
	for (int i = 0; i < N; i++) {
		cli_connect(&e.cli[i], AF_INET, iou_server_port(e.srv));
		if (i % 64 == 63)
			ck_assert_int_ge(iou_loop_run_once(e.loop, 0), 0);
	}
	RUN_UNTIL(&e, e.conns == N, 20000);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, N);
	ck_assert_uint_eq(st.accepted, N);

	for (int i = 0; i < N; i++)
		set_message(&e.cli[i], msg[i], sizeof(msg[i]),
			    "client %04d: the quick brown fox", i);
	{
		int n_echoed = 0;

		RUN_UNTIL(&e, ({
			n_echoed = 0;
			for (int i = 0; i < N; i++)
				n_echoed += e.cli[i].in_len >= e.cli[i].out_len;
			n_echoed == N; }), 20000);
	}
	for (int i = 0; i < N; i++) {
		ck_assert_msg(echoed(&e.cli[i]), "client %d got %zu bytes", i,
			      e.cli[i].in_len);
		ck_assert_int_eq(e.cli[i].err, 0);
		cli_close(&e.cli[i]);
	}
	RUN_UNTIL(&e, e.app_closed == N, 20000);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, 0);
	ck_assert_uint_eq(st.accepted, N);
	free(msg);
	env_finish(&e, 0);
}
END_TEST

/* open and accepted follow connections as they come and go. */
START_TEST(test_stats_open_accepted)
{
	struct env e;
	struct iou_server_opts o;
	struct iou_server_stats st;

	env_init(&e, 3);
	env_opts(&o);
	env_start(&e, &o);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, 0);
	ck_assert_uint_eq(st.accepted, 0);
	for (int i = 0; i < 3; i++)
		cli_connect(&e.cli[i], AF_INET, iou_server_port(e.srv));
	RUN_UNTIL(&e, e.conns == 3, 5000);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, 3);
	ck_assert_uint_eq(st.accepted, 3);

	cli_close(&e.cli[0]);
	RUN_UNTIL(&e, e.app_closed == 1, 5000);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, 2);
	ck_assert_uint_eq(st.accepted, 3);

	cli_close(&e.cli[1]);
	cli_close(&e.cli[2]);
	RUN_UNTIL(&e, e.app_closed == 3, 5000);
	st = env_stats(&e);
	ck_assert_uint_eq(st.open, 0);
	ck_assert_uint_eq(st.accepted, 3);
	ck_assert_uint_eq(st.refused, 0);
	ck_assert_uint_eq(st.idle_closed, 0);
	ck_assert_uint_eq(st.finished, 0);
	ck_assert_uint_eq(st.cut, 0);
	env_finish(&e, 0);
}
END_TEST

/* Past max_conns a connection is closed at once, counted as refused, and
 * never reaches on_connection; the open ones keep being served. */
START_TEST(test_max_conns_refuses_extra)
{
	struct env e;
	struct iou_server_opts o;
	struct iou_server_stats st;
	char buf[2][16];

	env_init(&e, 3);
	env_opts(&o);
	o.max_conns = 2;
	env_start(&e, &o);
	cli_connect(&e.cli[0], AF_INET, iou_server_port(e.srv));
	cli_connect(&e.cli[1], AF_INET, iou_server_port(e.srv));
	RUN_UNTIL(&e, e.conns == 2, 5000);
	cli_connect(&e.cli[2], AF_INET, iou_server_port(e.srv));
	RUN_UNTIL(&e, e.cli[2].eof, 5000);
	ck_assert_int_eq(e.cli[2].in_len, 0);
	st = env_stats(&e);
	ck_assert_uint_eq(st.refused, 1);
	ck_assert_uint_eq(st.accepted, 2);
	ck_assert_uint_eq(st.open, 2);
	ck_assert_int_eq(e.conns, 2);

	set_message(&e.cli[0], buf[0], sizeof(buf[0]), "still %d", 0);
	set_message(&e.cli[1], buf[1], sizeof(buf[1]), "still %d", 1);
	RUN_UNTIL(&e, echoed(&e.cli[0]) && echoed(&e.cli[1]), 5000);
	ck_assert(!e.cli[0].eof && !e.cli[1].eof);
	env_finish(&e, 0);
}
END_TEST

/* A client that sends nothing for idle_timeout_ms is closed (idle_closed);
 * one that keeps sending is not. */
START_TEST(test_idle_timeout_closes_silent_only)
{
	enum { IDLE_MS = 300 };
	struct env e;
	struct iou_server_opts o;
	struct iou_server_stats st;
	uint64_t t0, last_send = 0, end;
	long turns = 0;

	env_init(&e, 2);
	env_opts(&o);
	o.idle_timeout_ms = IDLE_MS;
	env_start(&e, &o);
	cli_connect(&e.cli[0], AF_INET, iou_server_port(e.srv)); /* silent */
	cli_connect(&e.cli[1], AF_INET, iou_server_port(e.srv)); /* active */
	RUN_UNTIL(&e, e.conns == 2, 5000);
	t0 = t_now_ms();
	end = t0 + 5 * IDLE_MS;
	while (t_now_ms() < end && turns++ < 100000) {
		if (t_now_ms() - last_send >= 50) {
			ck_assert_int_eq(send(e.cli[1].fd, "x", 1, MSG_NOSIGNAL), 1);
			last_send = t_now_ms();
		}
		ck_assert_int_ge(iou_loop_run_once(e.loop, 10), 0);
		pump_clients(&e);
	}
	ck_assert_msg(e.cli[0].eof, "silent client not closed after %d ms",
		      5 * IDLE_MS);
	/* Late by up to one timeout (the deadline is checked lazily), plus
	 * slack for a loaded machine. */
	ck_assert_msg(e.cli[0].eof_at - t0 >= IDLE_MS - 50 &&
		      e.cli[0].eof_at - t0 <= 3 * IDLE_MS,
		      "silent client closed after %llu ms, timeout %d ms",
		      (unsigned long long)(e.cli[0].eof_at - t0), IDLE_MS);
	ck_assert(!e.cli[1].eof);
	ck_assert_uint_ge(e.cli[1].in_len, 10); /* echoed all along */
	st = env_stats(&e);
	ck_assert_uint_eq(st.idle_closed, 1);
	ck_assert_uint_eq(st.open, 1);
	env_finish(&e, 0);
}
END_TEST

/* With the fd limit reached, accept fails with EMFILE: the server backs off
 * instead of spinning (little CPU while it lasts), and serves the waiting
 * clients once fds are free again. */
START_TEST(test_emfile_backoff_no_spin)
{
	enum { N = 12, K = 3 };
	struct env e;
	struct iou_server_opts o;
	struct rlimit rl, saved;
	int socks[N], *dummies, ndummies = 0, served, maxfd, fd;
	char msg[N][16];
	long cpu0, cpu;
	uint64_t t0;

	env_init(&e, N);
	env_opts(&o);
	env_start(&e, &o);
	for (int i = 0; i < N; i++)
		socks[i] = cli_socket(AF_INET, 0);
	/* Fill the holes below the highest fd, then allow K more fds. */
	maxfd = max_open_fd();
	dummies = calloc((size_t)maxfd + 1, sizeof(*dummies));
	ck_assert_ptr_nonnull(dummies);
	while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && fd < maxfd) {
		ck_assert_int_le(ndummies, maxfd);
		dummies[ndummies++] = fd;
	}
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
	rl = saved;
	rl.rlim_cur = (rlim_t)maxfd + 1 + K;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);

	for (int i = 0; i < N; i++) {
		cli_connect_fd(&e.cli[i], socks[i], AF_INET, iou_server_port(e.srv));
		set_message(&e.cli[i], msg[i], sizeof(msg[i]), "ping %02d", i);
	}
	RUN_UNTIL(&e, e.conns >= K, 5000);
	ck_assert_msg(e.conns == K, "%d connections accepted with %d fds free",
		      e.conns, K);
	RUN_UNTIL(&e, ({ served = 0;
			 for (int i = 0; i < N; i++)
				 served += echoed(&e.cli[i]);
			 served == K; }), 5000);

	/* The condition lasts: about one second of turns, little CPU. */
	cpu0 = cpu_ms();
	t0 = t_now_ms();
	run_for(&e, 1000, 20);
	cpu = cpu_ms() - cpu0;
	ck_assert_msg(cpu < 300, "%ld ms CPU in %llu ms at EMFILE", cpu,
		      (unsigned long long)(t_now_ms() - t0));
	ck_assert_int_eq(e.conns, K);
	for (int i = 0; i < N; i++)
		ck_assert_msg(!e.cli[i].eof && !e.cli[i].err, "client %d: %s", i,
			      strerror(e.cli[i].err));

	/* Free fds: served clients hang up, their server streams close. */
	for (int i = 0; i < N; i++) {
		e.cli[i].close_when_echoed = true;
		if (echoed(&e.cli[i]))
			cli_close(&e.cli[i]);
	}
	RUN_UNTIL(&e, ({ served = 0;
			 for (int i = 0; i < N; i++)
				 served += e.cli[i].fd < 0;
			 served == N; }), 20000);
	ck_assert_int_eq(e.conns, N);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(e.cli[i].err, 0);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
	for (int i = 0; i < ndummies; i++)
		close(dummies[i]);
	free(dummies);
	env_finish(&e, 0);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

/* Clients that finish inside the grace period: all served, all counted as
 * finished, none cut, and the shutdown ends without waiting for the limit. */
START_TEST(test_shutdown_clients_finish_in_time)
{
	enum { N = 5 };
	struct env e;
	struct iou_server_opts o;
	char msg[N][16], bye[N][16];
	uint64_t t0;
	int fds;

	env_init(&e, N);
	fds = t_fd_count();
	env_opts(&o);
	env_start(&e, &o);
	for (int i = 0; i < N; i++) {
		cli_connect(&e.cli[i], AF_INET, iou_server_port(e.srv));
		set_message(&e.cli[i], msg[i], sizeof(msg[i]), "hi %d", i);
	}
	RUN_UNTIL(&e, ({ int k = 0;
			 for (int i = 0; i < N; i++)
				 k += echoed(&e.cli[i]);
			 k == N; }), 5000);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_server_shutdown(e.srv, 5000, on_done, &e), 0);
	/* Each client says goodbye, half-closes and reads to EOF. */
	for (int i = 0; i < N; i++) {
		snprintf(bye[i], sizeof(bye[i]), "hi %dbye %d", i, i);
		e.cli[i].out = (const unsigned char *)bye[i];
		e.cli[i].out_len = strlen(bye[i]);
		e.cli[i].shut_after = true;
	}
	RUN_UNTIL(&e, e.done, 6000);
	ck_assert_uint_lt(t_now_ms() - t0, 3000);
	ck_assert_uint_eq(e.finished, N);
	ck_assert_uint_eq(e.cut, 0);
	ck_assert_int_eq(e.done, 1);
	RUN_UNTIL(&e, ({ int k = 0;
			 for (int i = 0; i < N; i++)
				 k += e.cli[i].eof;
			 k == N; }), 5000);
	for (int i = 0; i < N; i++) {
		ck_assert_msg(echoed(&e.cli[i]), "client %d: %zu bytes", i,
			      e.cli[i].in_len);
		ck_assert_int_eq(e.cli[i].err, 0);
		cli_close(&e.cli[i]);
	}
	ck_assert_int_eq(t_fd_count(), fds);
	env_finish(&e, 0);
}
END_TEST

/* Clients still connected at the grace limit are cut (counted), the others
 * finish; every fd and allocation goes (ASan checks the latter). */
START_TEST(test_shutdown_cuts_at_deadline)
{
	enum { N = 4, GRACE_MS = 1000 };
	struct env e;
	struct iou_server_opts o;
	uint64_t t0, took;
	int fds;

	env_init(&e, N);
	fds = t_fd_count();
	env_opts(&o);
	env_start(&e, &o);
	for (int i = 0; i < N; i++)
		cli_connect(&e.cli[i], AF_INET, iou_server_port(e.srv));
	RUN_UNTIL(&e, e.conns == N, 5000);
	t0 = t_now_ms();
	ck_assert_int_eq(iou_server_shutdown(e.srv, GRACE_MS, on_done, &e), 0);
	run_for(&e, 50, 5);
	cli_close(&e.cli[0]); /* these two finish */
	cli_close(&e.cli[1]);
	RUN_UNTIL(&e, e.done, GRACE_MS + 5000);
	took = t_now_ms() - t0;
	ck_assert_msg(took >= GRACE_MS - 20, "done after %llu ms",
		      (unsigned long long)took);
	ck_assert_uint_eq(e.finished, 2);
	ck_assert_uint_eq(e.cut, 2);
	/* the application's close callback ran for the cut ones too */
	ck_assert_int_eq(e.app_closed, N);
	RUN_UNTIL(&e, e.cli[2].eof && e.cli[3].eof, 5000);
	for (int i = 0; i < N; i++)
		cli_close(&e.cli[i]);
	ck_assert_int_eq(t_fd_count(), fds);
	env_finish(&e, 0);
}
END_TEST

/* A connection the idle timeout closes during the grace period was closed
 * by the server: counted as cut, not finished. */
START_TEST(test_shutdown_idle_close_is_cut)
{
	struct env e;
	struct iou_server_opts o;

	env_init(&e, 1);
	env_opts(&o);
	o.idle_timeout_ms = 200;
	env_start(&e, &o);
	cli_connect(&e.cli[0], AF_INET, iou_server_port(e.srv)); /* silent */
	RUN_UNTIL(&e, e.conns == 1, 5000);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 5000, on_done, &e), 0);
	RUN_UNTIL(&e, e.done, 3000); /* the idle close ends it, not the grace */
	ck_assert_uint_eq(e.finished, 0);
	ck_assert_uint_eq(e.cut, 1);
	RUN_UNTIL(&e, e.cli[0].eof, 5000);
	cli_close(&e.cli[0]);
	env_finish(&e, 0);
}
END_TEST

START_TEST(test_shutdown_twice_is_eclosed)
{
	struct env e;
	struct iou_server_opts o;

	env_init(&e, 1);
	env_opts(&o);
	env_start(&e, &o);
	cli_connect(&e.cli[0], AF_INET, iou_server_port(e.srv));
	RUN_UNTIL(&e, e.conns == 1, 5000);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 5000, on_done, &e), 0);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 0, on_done, &e), -IOU_ECLOSED);
	run_for(&e, 50, 5);
	/* the second call changed nothing: the grace limit still holds */
	ck_assert_int_eq(iou_server_shutdown(e.srv, 0, NULL, NULL), -IOU_ECLOSED);
	ck_assert_int_eq(e.done, 0);
	cli_close(&e.cli[0]);
	RUN_UNTIL(&e, e.done, 5000);
	run_for(&e, 20, 5);
	ck_assert_int_eq(e.done, 1);
	ck_assert_uint_eq(e.finished, 1);
	ck_assert_uint_eq(e.cut, 0);
	env_finish(&e, 0);
}
END_TEST

/* Once shutdown began the listener is closed: connects are refused while
 * the grace period runs and after the server is gone. */
START_TEST(test_connect_refused_during_and_after_shutdown)
{
	struct env e;
	struct iou_server_opts o;
	uint16_t port;

	env_init(&e, 1);
	env_opts(&o);
	env_start(&e, &o);
	port = iou_server_port(e.srv);
	cli_connect(&e.cli[0], AF_INET, port);
	RUN_UNTIL(&e, e.conns == 1, 5000);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 5000, on_done, &e), 0);
	RUN_UNTIL(&e, e.notified == 1, 5000);
	ck_assert_int_eq(connect_errno(port), ECONNREFUSED);
	run_for(&e, 50, 5);
	ck_assert_int_eq(e.done, 0);
	ck_assert_int_eq(connect_errno(port), ECONNREFUSED);
	cli_close(&e.cli[0]);
	RUN_UNTIL(&e, e.done, 5000);
	ck_assert_int_eq(connect_errno(port), ECONNREFUSED);
	ck_assert_int_eq(e.conns, 1);
	ck_assert_uint_eq(e.finished, 1);
	env_finish(&e, 0);
}
END_TEST

/* on_shutdown runs once, from the loop (not inside iou_server_shutdown),
 * with the server's user data, before the done callback. */
START_TEST(test_on_shutdown_runs_once)
{
	struct env e;
	struct iou_server_opts o;

	env_init(&e, 0);
	env_opts(&o);
	env_start(&e, &o);
	ck_assert_int_eq(iou_server_shutdown(e.srv, 1000, on_done, &e), 0);
	ck_assert_int_eq(e.notified, 0);
	RUN_UNTIL(&e, e.done, 5000);
	ck_assert_int_eq(e.notified, 1);
	ck_assert_int_eq(e.notified_at_done, 1);
	ck_assert_ptr_eq(e.notified_ud, &e);
	env_finish(&e, 0);
}
END_TEST

/* Shutdown with an op in flight in each state drains everything: the
 * callbacks of the cancelled ops run, the loop ends up with no work, no fd
 * stays open, and ASan sees no leak. */
enum { IF_ACCEPT, IF_RECV, IF_SEND_PARTIAL, IF_CLOSE_PENDING, IF_STATES };

START_TEST(test_shutdown_drains_ops_in_flight)
{
	static const char *const names[] = { "accept armed", "recv armed",
					     "send partial", "close pending" };
	struct env e;
	struct iou_server_opts o;
	uint64_t t0;
	unsigned grace;
	int fds;

	fprintf(stderr, "shutdown with %s\n", names[_i]);
	env_init(&e, 1);
	fds = t_fd_count();
	env_opts(&o);
	if (_i == IF_SEND_PARTIAL) {
		e.mode = MODE_WRITE_BIG;
		e.big_len = 8u << 20;
		e.big = malloc(e.big_len);
		ck_assert_ptr_nonnull(e.big);
		memset(e.big, 'b', e.big_len);
		o.stream.sndbuf = 4096;
	} else if (_i != IF_ACCEPT) {
		e.mode = MODE_READ_HOLD;
	}
	env_start(&e, &o);
	if (_i != IF_ACCEPT) {
		int rcvbuf = _i == IF_SEND_PARTIAL ? 4096 : 0;

		cli_connect_fd(&e.cli[0], cli_socket(AF_INET, rcvbuf), AF_INET,
			       iou_server_port(e.srv));
		e.cli[0].read = false; /* a peer that never reads */
		RUN_UNTIL(&e, e.conns == 1, 5000);
		run_for(&e, 100, 5);
		ck_assert_int_eq(e.op_calls, 0);
	}
	if (_i == IF_SEND_PARTIAL) {
		int queued = 0;

		ck_assert_int_eq(ioctl(e.cli[0].fd, FIONREAD, &queued), 0);
		ck_assert_msg(queued > 0 && (size_t)queued < e.big_len,
			      "%d bytes queued at the peer", queued);
	}
	if (_i == IF_CLOSE_PENDING)
		ck_assert_int_eq(iou_close(e.last, on_app_closed, &e), 0);
	t0 = t_now_ms();
	grace = _i == IF_ACCEPT ? 2000 : _i == IF_CLOSE_PENDING ? 0 : 100;
	ck_assert_int_eq(iou_server_shutdown(e.srv, grace, on_done, &e), 0);
	RUN_UNTIL(&e, e.done, 5000);
	switch (_i) {
	case IF_ACCEPT:
		ck_assert_uint_lt(t_now_ms() - t0, 1000); /* no grace wait */
		ck_assert_uint_eq(e.finished, 0);
		ck_assert_uint_eq(e.cut, 0);
		break;
	case IF_RECV:
	case IF_SEND_PARTIAL:
		ck_assert_uint_eq(e.finished, 0);
		ck_assert_uint_eq(e.cut, 1);
		ck_assert_int_eq(e.op_calls, 1);
		ck_assert_int_eq(e.op_res, -ECONNABORTED); /* cut */
		ck_assert_int_eq(e.app_closed, 1); /* iou_close from the callback */
		break;
	case IF_CLOSE_PENDING:
		ck_assert_uint_eq(e.finished, 1);
		ck_assert_uint_eq(e.cut, 0);
		ck_assert_int_eq(e.op_calls, 1);
		ck_assert_int_eq(e.op_res, -ECANCELED);
		ck_assert_int_eq(e.app_closed, 1);
		break;
	}
	ck_assert_int_eq(t_loop_drain(e.loop, 5000), 0);
	cli_close(&e.cli[0]);
	ck_assert_int_eq(t_fd_count(), fds);
	env_finish(&e, 0);
}
END_TEST

/* ---- accept errors ------------------------------------------------------ */

/* The fd of this process that listens on 127.0.0.1:port. */
static int listening_fd(uint16_t port)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL && found < 0) {
		struct sockaddr_in a;
		socklen_t len = sizeof(a);
		int fd = atoi(de->d_name), acc = 0;
		socklen_t alen = sizeof(acc);

		if (de->d_name[0] == '.' || fd == dirfd(d))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) == 0 &&
		    acc && getsockname(fd, (struct sockaddr *)&a, &len) == 0 &&
		    a.sin_family == AF_INET && a.sin_port == htons(port))
			found = fd;
	}
	closedir(d);
	ck_assert_int_ge(found, 0);
	return found;
}

/* A lasting accept error (the listening socket shut down under the server:
 * every accept gets -EINVAL) pauses accepting with the doubling back-off
 * instead of re-arming at once: over 300 ms the loop handles a few
 * completions and timers, not thousands.  Listening again, the server
 * accepts again. */
START_TEST(test_accept_error_backoff_no_spin)
{
	struct env e;
	struct iou_server_opts o;
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	long handled = 0, turns = 0;
	uint64_t end;
	char msg[16];
	int fd;

	env_init(&e, 1);
	env_opts(&o);
	env_start(&e, &o);
	ck_assert_int_eq(iou_loop_run_once(e.loop, 0), 0); /* accept armed */
	fd = listening_fd(iou_server_port(e.srv));
	ck_assert_int_eq(shutdown(fd, SHUT_RD), 0);
	end = t_now_ms() + 300;
	while (t_now_ms() < end && turns++ < 1000000) {
		int n = iou_loop_run_once(e.loop, 10);

		ck_assert_int_ge(n, 0);
		handled += n;
	}
	ck_assert_msg(handled < 50, "%ld completions and timers in %ld turns "
		      "of 300 ms with accept failing: it spins", handled, turns);

	ck_assert_int_eq(listen(fd, 16), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	cli_connect(&e.cli[0], AF_INET, ntohs(a.sin_port));
	set_message(&e.cli[0], msg, sizeof(msg), "again %d", 1);
	RUN_UNTIL(&e, e.conns == 1 && echoed(&e.cli[0]), 5000);
	env_finish(&e, 0);
}
END_TEST

static Suite *server_suite(void)
{
	Suite *s = suite_create("server");
	TCase *tc;

	tc = tcase_create("start");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_start_stop_ipv4);
	tcase_add_test(tc, test_start_stop_ipv6);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_address_in_use);
	tcase_add_test(tc, test_reuseport_shares_port);
	suite_add_tcase(s, tc);

	tc = tcase_create("serve");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_thousand_concurrent_clients);
	tcase_add_test(tc, test_stats_open_accepted);
	tcase_add_test(tc, test_max_conns_refuses_extra);
	tcase_add_test(tc, test_idle_timeout_closes_silent_only);
	tcase_add_test(tc, test_emfile_backoff_no_spin);
	suite_add_tcase(s, tc);

	tc = tcase_create("shutdown");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_shutdown_clients_finish_in_time);
	tcase_add_test(tc, test_shutdown_cuts_at_deadline);
	tcase_add_test(tc, test_shutdown_twice_is_eclosed);
	tcase_add_test(tc, test_shutdown_idle_close_is_cut);
	tcase_add_test(tc, test_connect_refused_during_and_after_shutdown);
	tcase_add_test(tc, test_on_shutdown_runs_once);
	tcase_add_loop_test(tc, test_shutdown_drains_ops_in_flight, 0, IF_STATES);
	tcase_add_test(tc, test_accept_error_backoff_no_spin);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run_suite(server_suite());
}
