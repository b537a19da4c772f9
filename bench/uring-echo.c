/*
 * uring-echo: baseline TCP echo server on raw liburing, with today's best
 * practices:
 *   - IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (falls back to
 *     SINGLE_ISSUER|COOP_TASKRUN, then to no flags, when the kernel refuses);
 *   - registered ring fd;
 *   - one multishot accept;
 *   - one multishot recv per connection, fed by a provided buffer ring (an
 *     idle connection holds no buffer);
 *   - send straight from the received buffer, which goes back to the ring
 *     when its bytes have been sent; per connection a FIFO of received
 *     buffers, at most one send in flight, short sends continued;
 *   - backpressure: a connection holding too many buffers has its recv
 *     cancelled until its queue drains; -ENOBUFS parks the connection until
 *     buffers come back;
 *   - one io_uring_submit_and_wait() per loop turn, CQEs handled in a batch
 *     (io_uring_for_each_cqe, then one buffer-ring and one CQ advance).
 *
 * Usage: uring-echo [-H ADDR] [-p PORT] [-b BUFSIZE] [-n NBUFS]
 *        (defaults 127.0.0.1, 8080 (0 = any), 16384, 4096)
 * Prints "listening on HOST:PORT" once listening; exits 0 on SIGINT/SIGTERM.
 *
 * Written for liburing 2.3, which has io_uring_register_buf_ring() but not
 * io_uring_setup_buf_ring(): the buffer ring memory is mmap()ed here.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_RECV_MULTISHOT
#define IORING_RECV_MULTISHOT (1U << 1)
#endif
#ifndef IORING_CQE_F_MORE
#define IORING_CQE_F_MORE (1U << 1)
#endif
#ifndef IOSQE_CQE_SKIP_SUCCESS_BIT
#define IOSQE_CQE_SKIP_SUCCESS_BIT 6
#endif
#ifndef IOSQE_CQE_SKIP_SUCCESS
#define IOSQE_CQE_SKIP_SUCCESS (1U << IOSQE_CQE_SKIP_SUCCESS_BIT)
#endif

#define BGID 0
#define SQ_ENTRIES 4096
#define MAX_QUEUED 32 /* buffers a connection may hold before its recv pauses */

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SIGNAL, OP_TIMER, OP_CANCEL, OP_CLOSE };
#define UD(op, fd) (((uint64_t)(op) << 32) | (uint32_t)(fd))

enum {
	F_OPEN = 1 << 0,
	F_RECV = 1 << 1,   /* multishot recv armed (until its CQE without F_MORE) */
	F_SEND = 1 << 2,   /* a send is in flight */
	F_EOF = 1 << 3,    /* no more input (peer EOF or error) */
	F_ERR = 1 << 4,    /* broken: drop queued output */
	F_PAUSED = 1 << 5, /* recv stopped: too many buffers queued */
	F_PARKED = 1 << 6, /* recv stopped: buffer ring was empty */
};

struct conn {
	int32_t qhead, qtail; /* FIFO of received buffer ids, linked by buf_next */
	uint16_t nq;
	uint16_t flags;
};

static struct io_uring ring;
static struct conn *conns;
static size_t nconns;
static int lfd;

static struct io_uring_buf_ring *br;
static char *bufbase;
static unsigned bufsize = 16384, nbufs = 4096;
static int32_t *buf_next;
static uint32_t *buf_off, *buf_len;
static unsigned buf_avail;   /* buffers the ring holds (as far as we know) */
static unsigned buf_returns; /* buffers added this turn, not yet published */

static int *parked;       /* fds waiting for buffers, each listed at most once */
static uint8_t *listed;   /* listed[fd]: fd is in parked[] (survives close) */
static size_t nparked;

static void die(const char *what, int err)
{
	fprintf(stderr, "uring-echo: %s: %s\n", what, strerror(err));
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
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket", errno);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0)
		die("bind", errno);
	if (listen(fd, 65535) != 0)
		die("listen", errno);
	sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		die("getsockname", errno);
	*bound_port = ntohs(ss.ss_family == AF_INET6
				    ? ((struct sockaddr_in6 *)&ss)->sin6_port
				    : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* An SQE, flushing the SQ when it is full (never an error). */
static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	while (!sqe) {
		io_uring_submit(&ring);
		sqe = io_uring_get_sqe(&ring);
	}
	return sqe;
}

/* ---- provided buffers ---------------------------------------------------- */

static void setup_buffers(void)
{
	size_t ring_bytes = (size_t)nbufs * sizeof(struct io_uring_buf);
	br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED)
		die("mmap buffer ring", errno);
	bufbase = mmap(NULL, (size_t)nbufs * bufsize, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bufbase == MAP_FAILED)
		die("mmap buffers", errno);
	buf_next = calloc(nbufs, sizeof *buf_next);
	buf_off = calloc(nbufs, sizeof *buf_off);
	buf_len = calloc(nbufs, sizeof *buf_len);
	if (!buf_next || !buf_off || !buf_len)
		die("calloc", ENOMEM);

	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof reg);
	reg.ring_addr = (unsigned long)(uintptr_t)br;
	reg.ring_entries = nbufs;
	reg.bgid = BGID;
	int ret = io_uring_register_buf_ring(&ring, &reg, 0);
	if (ret < 0)
		die("io_uring_register_buf_ring", -ret);
	io_uring_buf_ring_init(br);
	int mask = io_uring_buf_ring_mask(nbufs);
	for (unsigned i = 0; i < nbufs; i++)
		io_uring_buf_ring_add(br, bufbase + (size_t)i * bufsize, bufsize,
				      (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(br, (int)nbufs);
	buf_avail = nbufs;
}

/* Give a buffer back to the ring; published at the end of the turn. */
static void buf_return(unsigned bid)
{
	io_uring_buf_ring_add(br, bufbase + (size_t)bid * bufsize, bufsize,
			      (unsigned short)bid, io_uring_buf_ring_mask(nbufs),
			      (int)buf_returns);
	buf_returns++;
	buf_avail++;
}

/* ---- operations ---------------------------------------------------------- */

static void arm_accept(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0));
}

static void arm_recv(int fd)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, UD(OP_RECV, fd));
	conns[fd].flags |= F_RECV;
}

static void start_send(int fd)
{
	struct conn *c = &conns[fd];
	int32_t bid = c->qhead;
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_send(sqe, fd, bufbase + (size_t)bid * bufsize + buf_off[bid],
			   buf_len[bid] - buf_off[bid], MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, UD(OP_SEND, fd));
	c->flags |= F_SEND;
}

static void drop_queue(struct conn *c)
{
	while (c->qhead >= 0) {
		int32_t bid = c->qhead;
		c->qhead = buf_next[bid];
		buf_return((unsigned)bid);
	}
	c->qtail = -1;
	c->nq = 0;
}

/* Close once no op of this connection is in flight and nothing is left to send. */
static void maybe_close(int fd)
{
	struct conn *c = &conns[fd];
	if (!(c->flags & F_EOF) || (c->flags & (F_RECV | F_SEND)))
		return;
	if (c->qhead >= 0) {
		if (!(c->flags & F_ERR))
			return;
		drop_queue(c);
	}
	c->flags = 0;
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_close(sqe, fd);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, UD(OP_CLOSE, fd));
}

/* The connection is broken: stop everything, drop its output. */
static void conn_fail(int fd)
{
	struct conn *c = &conns[fd];
	c->flags |= F_EOF | F_ERR;
	c->flags &= (uint16_t)~(F_PAUSED | F_PARKED);
	if (c->flags & F_RECV)
		shutdown(fd, SHUT_RDWR); /* ends the multishot recv */
	if (!(c->flags & F_SEND))
		drop_queue(c);
}

/* The recv is not armed: arm it again unless something says not to. */
static void recv_ended(int fd)
{
	struct conn *c = &conns[fd];
	if (c->flags & (F_EOF | F_PAUSED | F_RECV))
		return;
	if (c->flags & F_PARKED) {
		if (!listed[fd]) {
			listed[fd] = 1;
			parked[nparked++] = fd;
		}
		return;
	}
	arm_recv(fd);
}

static void on_accept(struct io_uring_cqe *cqe)
{
	int fd = cqe->res;
	if (fd >= 0) {
		if ((size_t)fd >= nconns) {
			close(fd);
		} else {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			struct conn *c = &conns[fd];
			c->qhead = c->qtail = -1;
			c->nq = 0;
			c->flags = F_OPEN;
			arm_recv(fd);
		}
	} else if (fd != -ECONNABORTED && fd != -EINTR) {
		fprintf(stderr, "uring-echo: accept: %s\n", strerror(-fd));
	}
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		if (fd >= 0) {
			arm_accept();
		} else { /* e.g. EMFILE: retry in 10 ms rather than spin */
			static struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
			struct io_uring_sqe *sqe = get_sqe();
			io_uring_prep_timeout(sqe, &ts, 0, 0);
			io_uring_sqe_set_data64(sqe, UD(OP_TIMER, 0));
		}
	}
}

static void on_recv(int fd, struct io_uring_cqe *cqe)
{
	struct conn *c = &conns[fd];
	int res = cqe->res;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->flags &= (uint16_t)~F_RECV;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		buf_avail--;
		if (res <= 0 || (c->flags & F_ERR)) {
			buf_return(bid);
		} else {
			buf_off[bid] = 0;
			buf_len[bid] = (uint32_t)res;
			buf_next[bid] = -1;
			if (c->qtail >= 0)
				buf_next[c->qtail] = (int32_t)bid;
			else
				c->qhead = (int32_t)bid;
			c->qtail = (int32_t)bid;
			c->nq++;
			if (!(c->flags & F_SEND))
				start_send(fd);
			if (c->nq >= MAX_QUEUED && (c->flags & F_RECV) && !(c->flags & F_PAUSED)) {
				/* peer is not reading its echo: stop receiving */
				c->flags |= F_PAUSED;
				struct io_uring_sqe *sqe = get_sqe();
				io_uring_prep_cancel64(sqe, UD(OP_RECV, fd), 0);
				io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, fd));
			}
		}
	}
	if (res == 0) {
		c->flags |= F_EOF;
	} else if (res == -ENOBUFS) {
		c->flags |= F_PARKED;
	} else if (res < 0 && res != -ECANCELED && !(c->flags & F_ERR)) {
		conn_fail(fd);
	}
	if (!(c->flags & F_RECV))
		recv_ended(fd);
	maybe_close(fd);
}

static void on_send(int fd, struct io_uring_cqe *cqe)
{
	struct conn *c = &conns[fd];
	int res = cqe->res;
	int32_t bid = c->qhead;
	c->flags &= (uint16_t)~F_SEND;
	if (res > 0 && !(c->flags & F_ERR)) {
		buf_off[bid] += (uint32_t)res;
		if (buf_off[bid] < buf_len[bid]) {
			start_send(fd); /* short send: the rest first */
			return;
		}
		c->qhead = buf_next[bid];
		if (c->qhead < 0)
			c->qtail = -1;
		c->nq--;
		buf_return((unsigned)bid);
		if (c->qhead >= 0)
			start_send(fd);
		if ((c->flags & F_PAUSED) && c->nq <= MAX_QUEUED / 2) {
			c->flags &= (uint16_t)~F_PAUSED;
			recv_ended(fd); /* re-arms now, or when the cancelled recv ends */
		}
	} else if (!(c->flags & F_ERR)) {
		conn_fail(fd);
	} else {
		drop_queue(c);
	}
	maybe_close(fd);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 8080, opt;
	while ((opt = getopt(argc, argv, "H:p:b:n:h")) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'b': bufsize = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'n': nbufs = (unsigned)strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [-H ADDR] [-p PORT] [-b BUFSIZE] [-n NBUFS]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (nbufs < 1 || nbufs > 32768 || (nbufs & (nbufs - 1)) || bufsize < 64) {
		fprintf(stderr, "uring-echo: NBUFS must be a power of 2 <= 32768, BUFSIZE >= 64\n");
		return 2;
	}

	nconns = raise_nofile();
	conns = calloc(nconns, sizeof *conns);
	parked = calloc(nconns, sizeof *parked);
	listed = calloc(nconns, sizeof *listed);
	if (!conns || !parked || !listed)
		die("calloc", ENOMEM);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd", errno);

	static const unsigned setups[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int ret = -EINVAL;
	for (size_t i = 0; i < sizeof setups / sizeof setups[0]; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = setups[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = SQ_ENTRIES * 4;
		ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
		if (ret == 0)
			break;
	}
	if (ret < 0)
		die("io_uring_queue_init_params", -ret);
	io_uring_register_ring_fd(&ring); /* optional: ignore failure */
	setup_buffers();

	int bound;
	lfd = listen_on(host, port, &bound);
	if (lfd < 0) {
		fprintf(stderr, "uring-echo: bad address %s\n", host);
		return 2;
	}
	arm_accept();
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_poll_add(sqe, sfd, POLLIN);
	io_uring_sqe_set_data64(sqe, UD(OP_SIGNAL, 0));

	printf("listening on %s:%d\n", host, bound);
	fflush(stdout);

	int stop = 0;
	while (!stop) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			die("io_uring_submit_and_wait", -ret);

		unsigned head, seen = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe(&ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			int fd = (int)(uint32_t)ud;
			switch ((int)(ud >> 32)) {
			case OP_RECV: on_recv(fd, cqe); break;
			case OP_SEND: on_send(fd, cqe); break;
			case OP_ACCEPT: on_accept(cqe); break;
			case OP_TIMER: arm_accept(); break;
			case OP_SIGNAL: {
				struct signalfd_siginfo si;
				if (cqe->res < 0 || read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
					stop = 1;
				} else {
					sqe = get_sqe();
					io_uring_prep_poll_add(sqe, sfd, POLLIN);
					io_uring_sqe_set_data64(sqe, UD(OP_SIGNAL, 0));
				}
				break;
			}
			default: break; /* OP_CANCEL, failed OP_CLOSE */
			}
			seen++;
		}
		/* ENOBUFS-parked connections retry once buffers are back. */
		if (nparked && buf_avail) {
			size_t n = nparked;
			nparked = 0;
			for (size_t i = 0; i < n; i++) {
				int fd = parked[i];
				listed[fd] = 0;
				/* skip it if it failed or closed meanwhile */
				if (conns[fd].flags & F_PARKED) {
					conns[fd].flags &= (uint16_t)~F_PARKED;
					recv_ended(fd);
				}
			}
		}
		/* Publish the returned buffers, then consume the CQEs (liburing
		 * 2.3's io_uring_buf_ring_cq_advance() takes one count for both). */
		if (buf_returns) {
			io_uring_buf_ring_advance(br, (int)buf_returns);
			buf_returns = 0;
		}
		io_uring_cq_advance(&ring, seen);
	}

	io_uring_queue_exit(&ring);
	for (size_t fd = 0; fd < nconns; fd++)
		if (conns[fd].flags & F_OPEN)
			close((int)fd);
	close(lfd);
	close(sfd);
	return 0;
}
