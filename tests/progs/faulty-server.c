/* SPDX-License-Identifier: MIT */
/* Deliberately faulty echo servers for tests/iou-bench.sh (a thread per
 * connection, plain blocking sockets).  Modes:
 *   corrupt N      flips one byte of every N echoed
 *   stall P S      echoes, but sits still for the first S ms of every P ms
 *   stallat D S    echoes, but sits still from D ms after the first accept,
 *                  for S ms
 *   close N        closes a connection once it received N bytes
 *   blackhole      reads and never answers
 * Listens on 127.0.0.1 port 0 and prints "listening on 127.0.0.1:PORT". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *mode;
static long a1, a2;
static uint64_t t0; /* when the first connection was accepted, ms */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *serve(void *p)
{
	int fd = (int)(intptr_t)p;
	char *buf = malloc(65536);
	uint64_t total = 0;
	ssize_t n;

	while (buf && (n = read(fd, buf, 65536)) > 0) {
		if (!strcmp(mode, "blackhole"))
			continue;
		if (!strcmp(mode, "close") && total + (uint64_t)n >= (uint64_t)a1)
			break;
		if (!strcmp(mode, "stall")) {
			uint64_t ph = now_ms() % (uint64_t)a1;
			if (ph < (uint64_t)a2)
				usleep((useconds_t)((uint64_t)a2 - ph) * 1000);
		}
		if (!strcmp(mode, "stallat")) {
			uint64_t t = now_ms();
			if (t >= t0 + (uint64_t)a1 && t < t0 + (uint64_t)(a1 + a2))
				usleep((useconds_t)(t0 + (uint64_t)(a1 + a2) - t) * 1000);
		}
		if (!strcmp(mode, "corrupt"))
			for (ssize_t i = 0; i < n; i++)
				if ((total + (uint64_t)i) % (uint64_t)a1 == (uint64_t)a1 - 1)
					buf[i] ^= 0x5a;
		total += (uint64_t)n;
		for (ssize_t off = 0, w; off < n; off += w)
			if ((w = write(fd, buf + off, (size_t)(n - off))) <= 0)
				goto out;
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int one = 1, lfd;

	if (argc < 2)
		return 2;
	mode = argv[1];
	a1 = argc > 2 ? atol(argv[2]) : 0;
	a2 = argc > 3 ? atol(argv[3]) : 0;
	signal(SIGPIPE, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 128) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
		perror("faulty");
		return 1;
	}
	printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			continue;
		if (!t0)
			t0 = now_ms();
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
}
