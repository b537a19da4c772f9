/*
 * tpc-client: thread-per-connection blocking echo client, the design of
 * rust_echo_bench (https://github.com/haraldh/rust_echo_bench): one thread
 * per connection, each in a closed loop writes an -l byte message, reads it
 * back in full with blocking reads, checks the bytes and repeats.  It is the
 * baseline bench/client-speed.sh compares tools/iou-bench against, so it is
 * made as fast as that design allows: TCP_NODELAY, one write() per message,
 * recv(MSG_WAITALL) so a whole echo is normally one system call, small
 * thread stacks, per-thread counters on separate cache lines.
 *
 * Usage: tpc-client [-H ADDR] [-p PORT] [-c CONNS] [-d SECONDS] [-l BYTES]
 *                   [-w SECONDS]
 *        (defaults 127.0.0.1, 8080, 50, 10, 512, warm-up 0.5 like iou-bench)
 * All connections are made first; then the threads start together, run an
 * uncounted warm-up, and the requests completed during the next -d seconds
 * are counted.  Prints one line
 *   tpc-client: N requests in S s: R req/s, M mismatches
 * and exits 0; 1 on a connection error, a time-out (10 s without a reply)
 * or a mismatch; 2 on bad usage.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REPLY_TIMEOUT_S 10

struct conn {
	_Alignas(64) atomic_ulong done; /* completed requests */
	atomic_ulong mismatches;        /* requests whose echo differed */
	int fd;
	int id;
	const char *err; /* first error, set by the thread */
	int err_no;
	pthread_t tid;
	char pad[64];
};

static struct addrinfo *g_ai;
static size_t g_len = 512;
static atomic_int g_stop;
static pthread_barrier_t g_start;
static struct conn *g_conns;

static const char usage_text[] =
	"usage: tpc-client [-H ADDR] [-p PORT] [-c CONNS] [-d SECONDS] [-l BYTES] [-w SECONDS]\n";

static int usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "tpc-client: %s%s%s (try -h)\n", msg, arg ? ": " : "", arg ? arg : "");
	return 2;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_secs(const char *s, double lo, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo) || v > 1e6)
		return -1;
	*out = v;
	return 0;
}

static int connect_one(struct conn *c)
{
	int fd = socket(g_ai->ai_family, g_ai->ai_socktype | SOCK_CLOEXEC, g_ai->ai_protocol);
	if (fd < 0) {
		c->err = "socket";
		c->err_no = errno;
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, g_ai->ai_addr, g_ai->ai_addrlen) != 0) {
		c->err = "connect";
		c->err_no = errno;
		close(fd);
		return -1;
	}
	c->fd = fd;
	return 0;
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	size_t len = g_len;
	unsigned char *msg = malloc(len ? len : 1), *buf = malloc(len ? len : 1);
	if (!msg || !buf) {
		c->err = "malloc";
		c->err_no = ENOMEM;
	} else {
		for (size_t i = 0; i < len; i++)
			msg[i] = (unsigned char)('a' + (i * 7 + (size_t)c->id) % 26);
		if (connect_one(c) != 0)
			c->fd = -1;
	}
	pthread_barrier_wait(&g_start);

	unsigned long done = 0, bad = 0;
	uint64_t seq = 0;
	while (c->fd >= 0 && !c->err && !atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		/* a per-request sequence number, so a stale or misrouted echo
		 * is caught as well as a corrupted one */
		if (len >= sizeof seq)
			memcpy(msg, &seq, sizeof seq);
		seq++;
		size_t off = 0;
		while (off < len) {
			ssize_t n = send(c->fd, msg + off, len - off, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				c->err = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "write timed out" : "write";
				c->err_no = n < 0 ? errno : 0;
				goto out;
			}
			off += (size_t)n;
		}
		off = 0;
		while (off < len) {
			ssize_t n = recv(c->fd, buf + off, len - off, MSG_WAITALL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				c->err = errno == EAGAIN || errno == EWOULDBLOCK ? "reply timed out" : "read";
				c->err_no = errno;
				goto out;
			}
			if (n == 0) {
				c->err = "connection closed by server";
				c->err_no = 0;
				goto out;
			}
			off += (size_t)n;
		}
		if (memcmp(msg, buf, len) != 0) {
			atomic_store_explicit(&c->mismatches, ++bad, memory_order_relaxed);
			break; /* the stream can no longer be trusted */
		}
		atomic_store_explicit(&c->done, ++done, memory_order_relaxed);
	}
out:
	if (c->fd >= 0)
		close(c->fd);
	free(msg);
	free(buf);
	return NULL;
}

static unsigned long total_done(int n)
{
	unsigned long s = 0;
	for (int i = 0; i < n; i++)
		s += atomic_load_explicit(&g_conns[i].done, memory_order_relaxed);
	return s;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = "8080";
	long conns = 50, len = 512, v;
	double dur = 10, warm = 0.5;
	int opt;

	opterr = 0;
	while ((opt = getopt(argc, argv, ":H:p:c:d:l:w:h")) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p':
			if (parse_long(optarg, 1, 65535, &v))
				return usage_error("bad port (1-65535)", optarg);
			port = optarg;
			break;
		case 'c':
			if (parse_long(optarg, 1, 100000, &conns))
				return usage_error("bad connection count (1-100000)", optarg);
			break;
		case 'd':
			if (parse_secs(optarg, 0.001, &dur))
				return usage_error("bad duration (seconds, > 0)", optarg);
			break;
		case 'l':
			if (parse_long(optarg, 1, 64L << 20, &len))
				return usage_error("bad message length (1 B - 64 MiB)", optarg);
			break;
		case 'w':
			if (parse_secs(optarg, 0, &warm))
				return usage_error("bad warm-up (seconds, >= 0)", optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case ':':
			return usage_error("option needs an argument", argv[optind - 1]);
		default: {
			char o[3] = {'-', (char)optopt, 0};
			return usage_error("unknown option", optopt ? o : argv[optind - 1]);
		}
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument", argv[optind]);
	g_len = (size_t)len;

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	int gai = getaddrinfo(host, port, &hints, &g_ai);
	if (gai != 0) {
		fprintf(stderr, "tpc-client: %s: %s\n", host, gai_strerror(gai));
		return 1;
	}

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);

	g_conns = aligned_alloc(64, sizeof *g_conns * (size_t)conns);
	if (!g_conns) {
		fprintf(stderr, "tpc-client: out of memory\n");
		return 1;
	}
	memset(g_conns, 0, sizeof *g_conns * (size_t)conns);
	pthread_barrier_init(&g_start, NULL, (unsigned)conns + 1);

	/* small stacks: the threads need a few KiB, and with many of them
	 * the default 8 MiB reservations only cost page-table work */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	size_t stack = 64 * 1024;
	if (stack < (size_t)PTHREAD_STACK_MIN)
		stack = (size_t)PTHREAD_STACK_MIN;
	pthread_attr_setstacksize(&attr, stack);

	for (long i = 0; i < conns; i++) {
		struct conn *c = &g_conns[i];
		c->id = (int)i;
		c->fd = -1;
		int e = pthread_create(&c->tid, &attr, conn_thread, c);
		if (e != 0) {
			fprintf(stderr, "tpc-client: cannot start thread %ld of %ld: %s\n", i + 1, conns, strerror(e));
			_exit(1); /* the started threads wait at the barrier forever */
		}
	}
	pthread_attr_destroy(&attr);
	pthread_barrier_wait(&g_start); /* every connection is made (or failed) */

	int failed = 0;
	for (long i = 0; i < conns; i++)
		failed += g_conns[i].err != NULL;
	double t0 = 0, t1 = 0;
	unsigned long n0 = 0, n1 = 0;
	if (!failed) {
		sleep_s(warm);
		t0 = now_s();
		n0 = total_done((int)conns);
		sleep_s(dur);
		n1 = total_done((int)conns);
		t1 = now_s();
	}
	atomic_store(&g_stop, 1);
	for (long i = 0; i < conns; i++)
		pthread_join(g_conns[i].tid, NULL);

	unsigned long bad = 0;
	int errs = 0;
	for (long i = 0; i < conns; i++) {
		struct conn *c = &g_conns[i];
		bad += atomic_load(&c->mismatches);
		if (c->err) {
			if (errs++ < 3)
				fprintf(stderr, "tpc-client: connection %ld: %s%s%s\n", i, c->err,
					c->err_no ? ": " : "", c->err_no ? strerror(c->err_no) : "");
		}
	}
	if (errs > 3)
		fprintf(stderr, "tpc-client: ... %d connections failed in all\n", errs);

	double s = t1 - t0;
	unsigned long n = n1 - n0;
	printf("tpc-client: %lu requests in %.3f s: %.1f req/s, %lu mismatches\n", n, s,
	       s > 0 ? (double)n / s : 0.0, bad);
	fflush(stdout);
	freeaddrinfo(g_ai);
	free(g_conns);
	return errs || bad ? 1 : 0;
}
