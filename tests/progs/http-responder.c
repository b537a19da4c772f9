/* SPDX-License-Identifier: MIT */
/* A tiny HTTP/1.1 responder for http-get's tests.
 *   responder serve DIR   listen on 127.0.0.1:0, print the port, then serve
 *                         connections one at a time, forever; each request
 *                         is saved as DIR/req<path with / as _>.
 *   responder body NAME   print the body that /NAME gets.
 *   responder freeport    print a port that nothing listens on.
 * Paths: / and /ok (200, binary body), /lower (HTTP/1.0 201, lower-case
 * header), /big (200, 1 MiB + 7), /empty (204, Content-Length: 0), /nolen
 * (no Content-Length), /nohead (HTTP/1.0, no header lines at all), /short (Content-Length 100, 40 bytes sent), /404,
 * /bighead (80 KiB of headers, no end), /badlen, /split (trickled out in
 * small pieces). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static unsigned char body[(1 << 20) + 7];

static size_t make_body(const char *name)
{
	size_t n = 0;

	if (!strcmp(name, "ok")) {
		n = 1000; /* every byte value, and CRLFs that are no separators */
		for (size_t i = 0; i < n; i++)
			body[i] = (unsigned char)(i * 7);
		memcpy(body + 500, "\r\n\r\n", 4);
	} else if (!strcmp(name, "big")) {
		n = sizeof(body);
		for (size_t i = 0; i < n; i++)
			body[i] = (unsigned char)(i ^ (i >> 8) ^ (i >> 16));
	} else if (!strcmp(name, "short")) {
		n = 40;
		memset(body, 'x', n);
	} else if (!strcmp(name, "404")) {
		n = 13;
		memcpy(body, "no such page\n", n);
	} else if (!strcmp(name, "lower") || !strcmp(name, "split")) {
		n = 5;
		memcpy(body, "hello", n);
	} else if (!strcmp(name, "nolen")) {
		n = 4;
		memcpy(body, "body", n);
	}
	return n;
}

static void put(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static void puts_fd(int fd, const char *s) { put(fd, s, strlen(s)); }

static void nap_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };

	nanosleep(&ts, NULL);
}

static void serve(int fd, const char *dir)
{
	char req[8192], path[256], hdr[256], file[512];
	size_t got = 0, n;
	FILE *f;

	while (got < sizeof(req) - 1) {
		ssize_t r = read(fd, req + got, sizeof(req) - 1 - got);

		if (r <= 0)
			return;
		got += (size_t)r;
		req[got] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	if (sscanf(req, "GET %255s ", path) != 1)
		return;
	/* Saved unless the name does not fit (then the test that wanted it
	 * fails on its absence). */
	if ((size_t)snprintf(file, sizeof(file), "%s/req%s", dir, path) <
	    sizeof(file)) {
		for (char *p = file + strlen(dir) + 4; *p; p++)
			if (*p == '/')
				*p = '_';
		if ((f = fopen(file, "w"))) {
			fwrite(req, 1, got, f);
			fclose(f);
		}
	}
	const char *name = strcmp(path, "/") ? path + 1 : "ok";
	n = make_body(name);
	if (!strcmp(name, "ok") || !strcmp(name, "big")) {
		snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: %zu\r\n\r\n", n);
		puts_fd(fd, hdr);
		put(fd, body, n);
	} else if (!strcmp(name, "lower")) {
		puts_fd(fd, "HTTP/1.0 201 Created\r\ncontent-LENGTH:   5  \r\n\r\n");
		put(fd, body, n);
	} else if (!strcmp(name, "empty")) {
		puts_fd(fd, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
	} else if (!strcmp(name, "nolen")) {
		puts_fd(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
		put(fd, body, n);
	} else if (!strcmp(name, "nohead")) {
		puts_fd(fd, "HTTP/1.0 200 OK\r\n\r\n");
		put(fd, body, n);
	} else if (!strcmp(name, "short")) {
		puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
		put(fd, body, n);
	} else if (!strcmp(name, "404")) {
		puts_fd(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n");
		put(fd, body, n);
	} else if (!strcmp(name, "badlen")) {
		puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello");
	} else if (!strcmp(name, "split")) {
		static const char *parts[] = { "HTTP/1.1 20", "0 OK\r", "\nContent-Le",
			"ngth: 5\r\n\r", "\nhel", "lo" };
		for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
			puts_fd(fd, parts[i]);
			nap_ms(20);
		}
	} else if (!strcmp(name, "bighead")) {
		puts_fd(fd, "HTTP/1.1 200 OK\r\n");
		for (int i = 0; i < 1000; i++) {
			snprintf(hdr, sizeof(hdr), "X-Filler-%04d: %070d\r\n", i, 0);
			puts_fd(fd, hdr);
		}
		while (read(fd, req, sizeof(req)) > 0) /* until the client hangs up */
			;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	int ls;

	if (argc == 3 && !strcmp(argv[1], "body")) {
		fwrite(body, 1, make_body(argv[2]), stdout);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) < 0) {
		perror("responder");
		return 1;
	}
	if (argc == 2 && !strcmp(argv[1], "freeport")) {
		printf("%u\n", ntohs(a.sin_port)); /* closed, so nothing listens */
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "serve") || listen(ls, 16) < 0)
		return 1;
	printf("%u\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(ls, NULL, NULL);

		if (fd < 0)
			continue;
		serve(fd, argv[2]);
		close(fd);
	}
}
