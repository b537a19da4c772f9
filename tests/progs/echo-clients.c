/* SPDX-License-Identifier: MIT */
/* Test clients for iou-echo.  Modes:
 *   echo PORT SIZE CONNS      CONNS clients at once each send SIZE pattern
 *                             bytes, half-close, and must get exactly those
 *                             bytes back, then EOF.
 *   halfclose PORT SIZE       send SIZE bytes, SHUT_WR, wait 200 ms, then
 *                             read: every byte back, then EOF.
 *   busy PORT CONNS SECS READY  CONNS clients stream without pause and check
 *                             the echo; READY is created once each got echo
 *                             bytes; runs until every connection ended (EOF
 *                             or reset) or SECS passed (exit 3).
 *   wave PORT CONNS HOLDMS SECS  CONNS clients connect at once and send one
 *                             line each; a client that got its echo hangs up
 *                             HOLDMS later; exit 0 when all were served.
 *   limit PORT CONNS WAITMS   CONNS clients connect at once and stay silent
 *                             for WAITMS ms, counting those the server closes
 *                             (EOF or reset); then each one still open sends
 *                             a line and must get it back within 2 s.
 *   idle PORT MS              two clients for MS ms: one silent, one sending
 *                             a line every 100 ms that must come back; prints
 *                             when the silent one was closed (-1: never).
 * The clients dial 127.0.0.1, or $EC_HOST (numeric IPv4 or IPv6) when set.
 * Exit 0 on success, 1 on a failed check, 3 on timeout. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct c {
	int fd;
	unsigned long long sent, recvd, size;
	int shut, done, eof, err, served;
	long long served_at;
	char line[32];
	size_t line_len;
};

static unsigned char pat(int i, unsigned long long j)
{
	return (unsigned char)((j * 31u + (unsigned)i * 7u + (j >> 9)) & 0xff);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dial(int port)
{
	const char *host = getenv("EC_HOST");
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	int v6 = host && strchr(host, ':');
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ok;

	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = a6.sin6_port = htons((unsigned short)port);
	if (host && inet_pton(v6 ? AF_INET6 : AF_INET, host,
			      v6 ? (void *)&a6.sin6_addr : (void *)&a.sin_addr) != 1) {
		fprintf(stderr, "bad EC_HOST '%s'\n", host);
		exit(1);
	}
	ok = v6 ? connect(fd, (struct sockaddr *)&a6, sizeof(a6)) :
		  connect(fd, (struct sockaddr *)&a, sizeof(a));
	if (ok < 0) {
		fprintf(stderr, "connect: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}

static void nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static unsigned char buf[65536];

/* Send what is due, keeping at most `window` bytes unechoed (0: no cap). */
static int do_send(struct c *c, int i, unsigned long long window)
{
	unsigned long long n = c->size - c->sent;
	ssize_t r;

	if (window && c->sent - c->recvd >= window)
		return 0;
	if (n > sizeof(buf))
		n = sizeof(buf);
	for (unsigned long long k = 0; k < n; k++)
		buf[k] = pat(i, c->sent + k);
	r = send(c->fd, buf, n, MSG_NOSIGNAL);
	if (r < 0)
		return errno == EAGAIN ? 0 : -errno;
	c->sent += (unsigned long long)r;
	return 0;
}

/* 1 on EOF, 0 on progress or nothing, -errno on error, -EBADMSG on a wrong
 * byte. */
static int do_recv(struct c *c, int i)
{
	ssize_t r = recv(c->fd, buf, sizeof(buf), 0);

	if (r == 0)
		return 1;
	if (r < 0)
		return errno == EAGAIN ? 0 : -errno;
	for (ssize_t k = 0; k < r; k++) {
		if (buf[k] != pat(i, c->recvd + (unsigned long long)k)) {
			fprintf(stderr, "client %d: wrong byte at %llu\n", i,
				c->recvd + (unsigned long long)k);
			return -EBADMSG;
		}
	}
	c->recvd += (unsigned long long)r;
	return 0;
}

static int mode_echo(int port, unsigned long long size, int n)
{
	struct c *cs = calloc((size_t)n, sizeof(*cs));
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	int left = n, bad = 0, ret = 3;

	for (int i = 0; i < n; i++) {
		cs[i].fd = dial(port);
		cs[i].size = size;
		nonblock(cs[i].fd);
	}
	while (left) {
		for (int i = 0; i < n; i++) {
			p[i].fd = cs[i].done ? -1 : cs[i].fd;
			p[i].events = POLLIN | (cs[i].sent < size ? POLLOUT : 0);
		}
		if (poll(p, (nfds_t)n, 10000) <= 0) {
			fprintf(stderr, "echo: no progress for 10 s\n");
			goto out;
		}
		for (int i = 0; i < n; i++) {
			struct c *c = &cs[i];
			int r = 0;

			if (c->done || !p[i].revents)
				continue;
			if (p[i].revents & POLLOUT)
				r = do_send(c, i, 0);
			if (!r && c->sent == size && !c->shut) {
				shutdown(c->fd, SHUT_WR);
				c->shut = 1;
			}
			if (!r && (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				r = do_recv(c, i);
			if (r == 0)
				continue;
			c->done = 1;
			left--;
			if (r < 0 || c->recvd != size) {
				fprintf(stderr, "client %d: %s, %llu of %llu bytes back\n",
					i, r < 0 ? strerror(-r) : "EOF", c->recvd, size);
				bad++;
			}
			close(c->fd);
		}
	}
	printf("echo: %d clients x %llu bytes, %d bad\n", n, size, bad);
	ret = bad ? 1 : 0;
out:
	free(cs);
	free(p);
	return ret;
}

static int mode_halfclose(int port, unsigned long long size)
{
	struct c c = { .fd = dial(port), .size = size };
	int r;

	while (c.sent < size) {
		if ((r = do_send(&c, 0, 0)) < 0) {
			fprintf(stderr, "send: %s\n", strerror(-r));
			return 1;
		}
	}
	if (shutdown(c.fd, SHUT_WR) < 0) {
		perror("shutdown");
		return 1;
	}
	usleep(200000);
	while ((r = do_recv(&c, 0)) == 0)
		;
	if (r != 1 || c.recvd != size) {
		fprintf(stderr, "halfclose: %s after %llu of %llu bytes\n",
			r < 0 ? strerror(-r) : "EOF", c.recvd, size);
		return 1;
	}
	printf("halfclose: %llu bytes back, then EOF\n", c.recvd);
	return 0;
}

static int mode_busy(int port, int n, int secs, const char *ready)
{
	struct c *cs = calloc((size_t)n, sizeof(*cs));
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	long long end = now_ms() + secs * 1000LL;
	int left = n, eofs = 0, resets = 0, bad = 0, is_ready = 0;
	unsigned long long total = 0;

	for (int i = 0; i < n; i++) {
		cs[i].fd = dial(port);
		cs[i].size = ~0ULL;
		nonblock(cs[i].fd);
	}
	while (left && now_ms() < end) {
		int got = 0;

		for (int i = 0; i < n; i++) {
			p[i].fd = cs[i].done ? -1 : cs[i].fd;
			p[i].events = POLLIN | POLLOUT;
		}
		if (poll(p, (nfds_t)n, 100) < 0)
			continue;
		for (int i = 0; i < n; i++) {
			struct c *c = &cs[i];
			int r = 0;

			got += c->recvd > 0;
			if (c->done || !p[i].revents)
				continue;
			if (p[i].revents & POLLOUT)
				r = do_send(c, i, 256 * 1024);
			if (!r && (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				r = do_recv(c, i);
			if (r == 0)
				continue;
			c->done = 1;
			left--;
			if (r == 1)
				eofs++;
			else if (r == -ECONNRESET || r == -EPIPE)
				resets++;
			else
				bad++;
			close(c->fd);
		}
		if (!is_ready && got == n) {
			int fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

			if (fd >= 0)
				close(fd);
			is_ready = 1;
		}
	}
	for (int i = 0; i < n; i++)
		total += cs[i].recvd;
	printf("busy: %d of %d ended (%d EOF, %d reset, %d bad), %llu bytes echoed\n",
	       n - left, n, eofs, resets, bad, total);
	free(cs);
	free(p);
	if (bad)
		return 1;
	return left ? 3 : 0;
}

static int mode_wave(int port, int n, int hold_ms, int secs)
{
	struct c *cs = calloc((size_t)n, sizeof(*cs));
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	long long t0 = now_ms(), end = t0 + secs * 1000LL;
	int served = 0, open_n = n, bad = 0;

	for (int i = 0; i < n; i++) {
		struct c *c = &cs[i];

		c->fd = dial(port);
		c->line_len = (size_t)snprintf(c->line, sizeof(c->line),
					       "client %d\n", i);
		if (send(c->fd, c->line, c->line_len, MSG_NOSIGNAL) !=
		    (ssize_t)c->line_len) {
			perror("send");
			bad = 1;
			goto out;
		}
		nonblock(c->fd);
	}
	while (open_n && now_ms() < end) {
		long long now = now_ms();

		for (int i = 0; i < n; i++) {
			struct c *c = &cs[i];

			if (c->fd >= 0 && c->served && now >= c->served_at + hold_ms) {
				close(c->fd);
				c->fd = -1;
				open_n--;
			}
			p[i].fd = c->fd >= 0 && !c->served ? c->fd : -1;
			p[i].events = POLLIN;
		}
		if (poll(p, (nfds_t)n, 20) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			struct c *c = &cs[i];
			ssize_t r;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			r = recv(c->fd, buf, sizeof(buf), 0);
			if (r < 0 && errno == EAGAIN)
				continue;
			if (r <= 0 || c->recvd + (size_t)r > c->line_len ||
			    memcmp(buf, c->line + c->recvd, (size_t)r) != 0) {
				fprintf(stderr, "client %d: %s\n", i,
					r < 0 ? strerror(errno) : r == 0 ?
					"EOF before its echo" : "wrong echo");
				bad++;
				close(c->fd);
				c->fd = -1;
				open_n--;
				continue;
			}
			c->recvd += (size_t)r;
			if (c->recvd == c->line_len) {
				c->served = 1;
				c->served_at = now_ms();
				served++;
			}
		}
	}
	printf("wave: %d of %d served in %lld ms, %d bad\n", served, n,
	       now_ms() - t0, bad);
out:
	free(cs);
	free(p);
	if (bad)
		return 1;
	return served == n ? 0 : 3;
}

/* Reads what is there: 1 when the server ended the connection (EOF or
 * reset), 0 when nothing is pending, -1 when bytes came. */
static int ended(int fd)
{
	ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
		return 1;
	return r < 0 && errno == EAGAIN ? 0 : -1;
}

/* Sends "line N\n" on fd and reads it back within ms; 0 on success. */
static int line_echo(int fd, int i, int ms)
{
	char line[32], got[32];
	size_t len = (size_t)snprintf(line, sizeof(line), "line %d\n", i), n = 0;
	long long end = now_ms() + ms;

	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -1;
	while (n < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			return -1;
		r = recv(fd, got + n, len - n, MSG_DONTWAIT);
		if (r < 0 && errno == EAGAIN)
			continue;
		if (r <= 0)
			return -1;
		n += (size_t)r;
	}
	return memcmp(got, line, len) ? -1 : 0;
}

static int mode_limit(int port, int n, int wait_ms)
{
	int *fds = calloc((size_t)n, sizeof(*fds));
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	long long t0, last = -1;
	int closed = 0, served = 0, bad = 0;

	for (int i = 0; i < n; i++)
		fds[i] = dial(port);
	t0 = now_ms();
	while (now_ms() < t0 + wait_ms) {
		for (int i = 0; i < n; i++) {
			p[i].fd = fds[i];
			p[i].events = POLLIN;
		}
		if (poll(p, (nfds_t)n, 20) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			int r;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			r = ended(fds[i]);
			if (r == 0)
				continue;
			if (r < 0) {
				fprintf(stderr, "client %d: bytes before sending any\n", i);
				bad++;
			} else {
				closed++;
				last = now_ms() - t0;
			}
			close(fds[i]);
			fds[i] = -1;
		}
	}
	for (int i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		if (line_echo(fds[i], i, 2000) == 0) {
			served++;
		} else {
			fprintf(stderr, "client %d: open but not served\n", i);
			bad++;
		}
		close(fds[i]);
	}
	printf("limit: %d of %d closed by the server (last after %lld ms), %d served, %d bad\n",
	       closed, n, last, served, bad);
	free(fds);
	free(p);
	return bad ? 1 : 0;
}

static int mode_idle(int port, int ms)
{
	int silent = dial(port), active = dial(port), echoes = 0, bad = 0;
	long long t0 = now_ms(), closed_at = -1, last_echo = -1, next = t0;

	while (now_ms() < t0 + ms && !bad) {
		struct pollfd p = { .fd = silent, .events = POLLIN };
		long long now = now_ms();

		if (now >= next) {
			if (line_echo(active, echoes, 1000) == 0) {
				echoes++;
				last_echo = now_ms() - t0;
			} else {
				fprintf(stderr, "active client: line %d not echoed after %lld ms\n",
					echoes, now_ms() - t0);
				bad++;
			}
			next += 100;
			continue;
		}
		if (silent < 0) {
			usleep((useconds_t)(next - now) * 1000);
			continue;
		}
		if (poll(&p, 1, (int)(next - now)) <= 0)
			continue;
		if (ended(silent) != 1) {
			fprintf(stderr, "silent client: bytes from the server\n");
			bad++;
			continue;
		}
		closed_at = now_ms() - t0;
		close(silent);
		silent = -1;
	}
	printf("idle: silent client closed after %lld ms; active client: %d lines echoed, the last after %lld ms\n",
	       closed_at, echoes, last_echo);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 5 && !strcmp(argv[1], "echo")) {
		alarm(50);
		return mode_echo(atoi(argv[2]), strtoull(argv[3], NULL, 10),
				 atoi(argv[4]));
	}
	if (argc >= 4 && !strcmp(argv[1], "halfclose")) {
		alarm(20);
		return mode_halfclose(atoi(argv[2]), strtoull(argv[3], NULL, 10));
	}
	if (argc >= 6 && !strcmp(argv[1], "busy")) {
		alarm((unsigned)atoi(argv[4]) + 10);
		return mode_busy(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]),
				 argv[5]);
	}
	if (argc >= 6 && !strcmp(argv[1], "wave")) {
		alarm((unsigned)atoi(argv[5]) + 10);
		return mode_wave(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]),
				 atoi(argv[5]));
	}
	if (argc >= 5 && !strcmp(argv[1], "limit")) {
		alarm((unsigned)atoi(argv[4]) / 1000 + 10);
		return mode_limit(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	}
	if (argc >= 4 && !strcmp(argv[1], "idle")) {
		alarm((unsigned)atoi(argv[3]) / 1000 + 10);
		return mode_idle(atoi(argv[2]), atoi(argv[3]));
	}
	fprintf(stderr, "usage: ec echo|halfclose|busy|wave|limit|idle ...\n");
	return 2;
}
