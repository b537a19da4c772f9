/*
 * st-echo: the echo server with State Threads (libst), a peer of epoll-echo
 * for bench/run.sh: a thread (ST's user-space coroutine) per connection,
 * blocking-style st_read()/st_write() on its own stack, one OS thread.
 *
 * Each connection thread reads into a buffer on its stack and writes the
 * bytes back (st_write() sends them all).  Debian's libst is built with the
 * select(2) event system only, so it serves fds below FD_SETSIZE (1024).
 *
 * Usage: st-echo [-H ADDR] [-p PORT]      (defaults 127.0.0.1, 8080; 0 = any)
 * Prints "listening on HOST:PORT" once listening; exits 0 on SIGINT/SIGTERM.
 * Built only when configure finds State Threads (Debian: libst-dev).
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <st.h>

#define BUF_SIZE (16 * 1024)

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* ST has no signal integration; nothing needs flushing, so just leave. */
static void on_signal(int sig)
{
	(void)sig;
	_exit(0);
}

static void *serve(void *arg)
{
	st_netfd_t c = arg;
	char buf[BUF_SIZE];

	for (;;) {
		ssize_t n = st_read(c, buf, sizeof buf, ST_UTIME_NO_TIMEOUT);
		if (n <= 0)
			break;
		if (st_write(c, buf, (size_t)n, ST_UTIME_NO_TIMEOUT) != n)
			break;
	}
	st_netfd_close(c);
	return NULL;
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
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* epoll where this libst has it (Debian's has not) */
	st_set_eventsys(ST_EVENTSYS_ALT);
	if (st_init() < 0)
		die("st_init");

	int bound;
	int lfd = listen_on(host, port, &bound);
	if (lfd < 0) {
		fprintf(stderr, "st-echo: bad address %s\n", host);
		return 2;
	}
	st_netfd_t l = st_netfd_open_socket(lfd);
	if (!l)
		die("st_netfd_open_socket");

	printf("listening on %s:%d\n", host, bound);
	fflush(stdout);

	for (;;) {
		st_netfd_t c = st_accept(l, NULL, NULL, ST_UTIME_NO_TIMEOUT);
		if (!c) {
			if (errno == EMFILE || errno == ENFILE) {
				/* past the event system's fd limit: refused */
				fprintf(stderr, "st-echo: accept: %s\n", strerror(errno));
				st_usleep(10000);
			}
			continue;
		}
		int one = 1;
		setsockopt(st_netfd_fileno(c), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* 0: libst's default stack size (64 KiB here), touched as used */
		if (!st_thread_create(serve, c, 0, 0))
			st_netfd_close(c);
	}
}
