/*
 * idle-conns: open N idle TCP connections to HOST:PORT and hold them.
 *
 * Usage: idle-conns [-H ADDR] [-p PORT] [-n N] [-s NSRC]
 *        (defaults 127.0.0.1, 8080, 10000; NSRC source addresses 127.0.0.1..
 *        127.0.0.NSRC used round-robin when ADDR is an IPv4 loopback address,
 *        default 4, so the ephemeral port range never runs out)
 * Prints "connected N" (flushed) once every connection is established, then
 * holds them until stdin reaches EOF or SIGINT/SIGTERM arrives; exits 0.
 * Exits 1 if a connection cannot be made.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 8080, n = 10000, nsrc = 4, opt;
	while ((opt = getopt(argc, argv, "H:p:n:s:h")) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'n': n = atoi(optarg); break;
		case 's': nsrc = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-H ADDR] [-p PORT] [-n N] [-s NSRC]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (n < 0 || nsrc < 1 || nsrc > 254) {
		fprintf(stderr, "idle-conns: bad arguments\n");
		return 2;
	}

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct sockaddr_storage dst;
	socklen_t dlen;
	int family, loop4 = 0;
	memset(&dst, 0, sizeof dst);
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&dst;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			goto badaddr;
		dlen = sizeof *s6;
		family = AF_INET6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&dst;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			goto badaddr;
		dlen = sizeof *s4;
		family = AF_INET;
		loop4 = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}

	int *fds = calloc((size_t)n + 1, sizeof *fds);
	if (!fds) {
		perror("calloc");
		return 1;
	}
	for (int i = 0; i < n && !stop; i++) {
		int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			fprintf(stderr, "idle-conns: socket #%d: %s\n", i, strerror(errno));
			return 1;
		}
		if (loop4 && nsrc > 1) {
			/* spread over 127.0.0.x sources; the port is chosen at
			 * connect() time so only the 4-tuple has to be unique */
			int one = 1;
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
			struct sockaddr_in src = {.sin_family = AF_INET};
			src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % nsrc));
			if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
				fprintf(stderr, "idle-conns: bind #%d: %s\n", i, strerror(errno));
				return 1;
			}
		}
		while (connect(fd, (struct sockaddr *)&dst, dlen) != 0) {
			if (errno == EINTR && !stop)
				continue;
			fprintf(stderr, "idle-conns: connect #%d: %s\n", i, strerror(errno));
			return 1;
		}
		fds[i] = fd;
	}
	if (stop)
		return 0;
	printf("connected %d\n", n);
	fflush(stdout);

	struct pollfd pfd = {.fd = 0, .events = POLLIN};
	char buf[256];
	while (!stop) {
		int r = poll(&pfd, 1, -1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		ssize_t got = read(0, buf, sizeof buf);
		if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
			break; /* stdin closed */
	}
	return 0; /* the kernel closes the connections */

badaddr:
	fprintf(stderr, "idle-conns: bad address %s\n", host);
	return 2;
}
