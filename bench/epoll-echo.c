/*
 * epoll-echo: baseline TCP echo server, the classic way.
 *
 * One thread, non-blocking sockets, level-triggered epoll.  Each readable
 * connection is read once per wake-up into a shared scratch buffer (the loop
 * is single-threaded, so one buffer serves every connection and an idle
 * connection costs no buffer memory) and the bytes are written straight back.
 * When the socket cannot take them all, the rest is copied into a
 * per-connection pending buffer, the connection stops reading (EPOLLIN off,
 * EPOLLOUT on: TCP flow control pushes back on the peer) until it has been
 * flushed.  This is as lean as the readiness model gets: one epoll_wait per
 * batch, then one read and one write per request.
 *
 * Usage: epoll-echo [-H ADDR] [-p PORT]      (defaults 127.0.0.1, 8080; 0 = any)
 * Prints "listening on HOST:PORT" once listening; exits 0 on SIGINT/SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCRATCH_SIZE (64 * 1024)
#define MAX_EVENTS 512
#define ACCEPT_BATCH 256

struct conn {
	char *pend;        /* unsent bytes (NULL when none) */
	uint32_t off, len; /* pend[off..len) still to send */
};

static struct conn *conns;
static size_t nconns;
static int epfd;
static char scratch[SCRATCH_SIZE];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static size_t raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 22))
		return 1u << 22;
	return (size_t)rl.rlim_cur;
}

static int listen_on(const char *host, int port, int *bound_port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -1;
		sl = sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -1;
		sl = sizeof *s4;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0)
		die("bind");
	if (listen(fd, 65535) != 0)
		die("listen");
	sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		die("getsockname");
	*bound_port = ntohs(ss.ss_family == AF_INET6
				    ? ((struct sockaddr_in6 *)&ss)->sin6_port
				    : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static void conn_close(int fd)
{
	struct conn *c = &conns[fd];
	free(c->pend);
	c->pend = NULL;
	c->off = c->len = 0;
	close(fd); /* also removes it from the epoll set */
}

static void set_events(int fd, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.fd = fd};
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
		conn_close(fd);
}

/* Keep buf[0..n) as this connection's pending output and wait for EPOLLOUT. */
static void keep_pending(int fd, const char *buf, size_t n)
{
	struct conn *c = &conns[fd];
	char *p = malloc(n);
	if (!p) {
		conn_close(fd);
		return;
	}
	memcpy(p, buf, n);
	c->pend = p;
	c->off = 0;
	c->len = (uint32_t)n;
	set_events(fd, EPOLLOUT);
}

static void on_readable(int fd)
{
	for (int round = 0; round < 4; round++) {
		ssize_t n = read(fd, scratch, sizeof scratch);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			conn_close(fd); /* EOF or error (reset...) */
			return;
		}
		ssize_t w = send(fd, scratch, (size_t)n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				conn_close(fd);
				return;
			}
			w = 0;
		}
		if (w < n) {
			keep_pending(fd, scratch + w, (size_t)(n - w));
			return;
		}
		if ((size_t)n < sizeof scratch)
			return; /* most likely drained: let epoll tell us */
	}
}

static void on_writable(int fd)
{
	struct conn *c = &conns[fd];
	if (!c->pend) {
		set_events(fd, EPOLLIN);
		return;
	}
	while (c->off < c->len) {
		ssize_t w = send(fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			conn_close(fd);
			return;
		}
		c->off += (uint32_t)w;
	}
	free(c->pend);
	c->pend = NULL;
	c->off = c->len = 0;
	set_events(fd, EPOLLIN);
}

static void on_accept(int lfd)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, "epoll-echo: accept: %s\n", strerror(errno));
			return;
		}
		if ((size_t)fd >= nconns) {
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		conns[fd].pend = NULL;
		conns[fd].off = conns[fd].len = 0;
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			close(fd);
	}
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 8080, opt;
	while ((opt = getopt(argc, argv, "H:p:h")) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-H ADDR] [-p PORT]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}

	nconns = raise_nofile();
	conns = calloc(nconns, sizeof *conns);
	if (!conns)
		die("calloc");

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");

	int bound;
	int lfd = listen_on(host, port, &bound);
	if (lfd < 0) {
		fprintf(stderr, "epoll-echo: bad address %s\n", host);
		return 2;
	}

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0)
		die("epoll_ctl");
	ev.data.fd = sfd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev) != 0)
		die("epoll_ctl");

	printf("listening on %s:%d\n", host, bound);
	fflush(stdout);

	static struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			uint32_t e = evs[i].events;
			if (fd == lfd) {
				on_accept(lfd);
			} else if (fd == sfd) {
				goto out;
			} else if (conns[fd].pend) {
				/* waiting for room: only EPOLLOUT is armed */
				if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
					on_writable(fd);
			} else if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
				on_readable(fd);
			} else if (e & EPOLLOUT) {
				on_writable(fd);
			}
		}
	}
out:
	for (size_t fd = 0; fd < nconns; fd++)
		free(conns[fd].pend);
	free(conns);
	close(lfd);
	close(epfd);
	close(sfd);
	return 0;
}
