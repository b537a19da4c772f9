/* SPDX-License-Identifier: MIT */
/* The epoll backend's own behaviour (lib/epoll.c), on loops that ask for it
 * (IOU_BACKEND_EPOLL): completions never run inside the call that started
 * the op, a send that finds the socket full waits for room, a receive ends
 * with -ENOBUFS when the pool is dry and at its byte limit, accept ends at
 * EMFILE, connect reports refusals, every op kind can be cancelled, and a
 * stream's socket stays in the epoll set between its receives.
 * The other suites run on epoll too, with IOU_BACKEND=epoll. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "t_helpers.h"

#define T_MS 5000

struct rec_op {
	struct iou__op op;
	iou_loop *loop;
	int n;              /* completions */
	int final;          /* final completions */
	int res;            /* the last one's */
	uint32_t flags;
	size_t bytes;       /* received, for receives */
	unsigned char *data; /* if set: the bytes are copied here */
};

static void rec_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct rec_op *r = IOU__CONTAINER_OF(op, struct rec_op, op);

	r->n++;
	r->res = cqe->res;
	r->flags = cqe->flags;
	if (cqe->flags & IOU__CQE_F_BUFFER) {
		/* give the buffers back, as the streams do */
		iou_loop *loop = r->loop;
		uint32_t size = loop->pool.buf_size;
		unsigned pos = loop->bufs.pos[iou__cqe_buf(cqe)];
		unsigned nb = cqe->res > 0 ? ((uint32_t)cqe->res + size - 1) / size : 1;

		for (unsigned i = 0; i < nb; i++) {
			uint32_t bid = i ? iou__buf_at(loop, pos + i)
					 : iou__cqe_buf(cqe);
			size_t at = (size_t)i * size;

			if (r->data && cqe->res > 0)
				memcpy(r->data + r->bytes + at,
				       iou__buf_addr(loop, bid),
				       (uint32_t)cqe->res - at < size
					       ? (uint32_t)cqe->res - at : size);
			loop->bufs.out++;
			iou__buf_recycle(loop, i ? iou__buf_at(loop, pos + i)
						 : iou__cqe_buf(cqe));
		}
		if (cqe->res > 0)
			r->bytes += (size_t)cqe->res;
	}
	if (!(cqe->flags & IOU__CQE_F_MORE)) {
		r->final++;
		iou__op_done(r->loop);
	}
}

static iou_loop *epoll_loop(unsigned size, unsigned count)
{
	struct iou_loop_opts o;
	iou_loop *loop = NULL;

	iou_loop_opts_init(&o);
	o.backend = IOU_BACKEND_EPOLL;
	if (size)
		o.buf_size = size;
	if (count)
		o.buf_count = count;
	ck_assert_int_eq(iou_loop_create(&loop, &o), 0);
	ck_assert_str_eq(iou_loop_backend(loop), "epoll");
	return loop;
}

static void rec_init(struct rec_op *r, iou_loop *loop)
{
	memset(r, 0, sizeof(*r));
	r->op.complete = rec_complete;
	r->loop = loop;
}

static void run_until_final(iou_loop *loop, struct rec_op *r, int want)
{
	ck_assert_int_eq(t_run_until_count(loop, &r->final, want, T_MS), 0);
}

/* A loop asked for epoll runs on it; AUTO with IOU_BACKEND=epoll does too,
 * and an unknown value is refused. */
START_TEST(backend_selected)
{
	struct iou_loop_opts o;
	iou_loop *loop = epoll_loop(0, 0);

	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	iou_loop_opts_init(&o);
	setenv("IOU_BACKEND", "epoll", 1);
	ck_assert_int_eq(iou_loop_create(&loop, &o), 0);
	ck_assert_str_eq(iou_loop_backend(loop), "epoll");
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
	setenv("IOU_BACKEND", "kqueue", 1);
	ck_assert_int_eq(iou_loop_create(&loop, &o), -EINVAL);
	unsetenv("IOU_BACKEND");
}
END_TEST

/* Ops done at once (nop, a send with room, a shutdown) complete in a later
 * turn's dispatch, never inside the call. */
START_TEST(completions_never_inline)
{
	iou_loop *loop = epoll_loop(0, 0);
	struct rec_op nop, snd, shut;
	int sv[2];
	char buf[4];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rec_init(&nop, loop);
	rec_init(&snd, loop);
	rec_init(&shut, loop);
	ck_assert_int_eq(iou__be_nop(loop, &nop.op), 0);
	ck_assert_int_eq(iou__be_send(loop, &snd.op, sv[0], "abc", 3), 0);
	ck_assert_int_eq(iou__be_shutdown(loop, &shut.op, sv[0], SHUT_WR), 0);
	iou__op_submitted(loop);
	iou__op_submitted(loop);
	iou__op_submitted(loop);
	ck_assert_int_eq(nop.n + snd.n + shut.n, 0);
	run_until_final(loop, &shut, 1);
	ck_assert_int_eq(nop.res, 0);
	ck_assert_int_eq(snd.res, 3);
	ck_assert_int_eq(shut.res, 0);
	ck_assert_int_eq(read(sv[1], buf, sizeof(buf)), 3);
	ck_assert_int_eq(read(sv[1], buf, sizeof(buf)), 0); /* the FIN */
	close(sv[0]);
	close(sv[1]);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A send into a full socket waits for room (EAGAIN, EPOLLOUT) and then
 * completes with what it sent; the buffer stays the caller's until then. */
START_TEST(send_waits_for_room)
{
	enum { BIG = 4 << 20 };
	iou_loop *loop = epoll_loop(0, 0);
	unsigned char *big = calloc(1, BIG), *in = malloc(BIG);
	struct rec_op snd;
	int sv[2];

	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(in);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* fill the socket: the peer reads nothing for now */
	while (send(sv[0], big, 65536, MSG_DONTWAIT) > 0)
		;
	rec_init(&snd, loop);
	ck_assert_int_eq(iou__be_send(loop, &snd.op, sv[0], big, BIG), 0);
	iou__op_submitted(loop);
	for (int i = 0; i < 5; i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 10), 0);
	ck_assert_int_eq(snd.n, 0); /* no room: it waits */
	/* the peer reads: the send goes on */
	for (uint64_t end = t_now_ms() + T_MS; !snd.final && t_now_ms() < end;) {
		ssize_t r = recv(sv[1], in, BIG, MSG_DONTWAIT);

		ck_assert_msg(r > 0 || errno == EAGAIN, "recv: %s", strerror(errno));
		ck_assert_int_ge(iou_loop_run_once(loop, 1), 0);
	}
	ck_assert_int_eq(snd.final, 1);
	ck_assert_int_gt(snd.res, 0);
	ck_assert_int_le(snd.res, BIG);
	close(sv[0]);
	close(sv[1]);
	free(big);
	free(in);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* The multishot receive: data completions with MORE, then a final -ENOBUFS
 * when the pool has nothing left (buffers held, not given back). */
static void hold_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct rec_op *r = IOU__CONTAINER_OF(op, struct rec_op, op);

	r->n++;
	r->res = cqe->res;
	r->flags = cqe->flags;
	if (cqe->res > 0)
		r->bytes += (size_t)cqe->res;
	if (!(cqe->flags & IOU__CQE_F_MORE)) {
		r->final++;
		iou__op_done(r->loop);
	}
}

START_TEST(recv_enobufs_when_pool_dry)
{
	iou_loop *loop = epoll_loop(64, 4);
	struct rec_op rcv;
	char data[1000];
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rec_init(&rcv, loop);
	rcv.op.complete = hold_complete;
	memset(data, 'x', sizeof(data));
	ck_assert_int_eq(send(sv[1], data, sizeof(data), 0), (ssize_t)sizeof(data));
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 0), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &rcv, 1);
	ck_assert_int_eq(rcv.res, -ENOBUFS);
	ck_assert_uint_eq(rcv.bytes, 4 * 64); /* the whole pool, no more */
	ck_assert_int_eq(rcv.flags & IOU__CQE_F_MORE, 0);
	close(sv[0]);
	close(sv[1]);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* A byte limit ends the receive by itself, exactly there. */
START_TEST(recv_byte_limit)
{
	iou_loop *loop = epoll_loop(64, 64);
	struct rec_op rcv;
	char data[1000];
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rec_init(&rcv, loop);
	memset(data, 'y', sizeof(data));
	ck_assert_int_eq(send(sv[1], data, sizeof(data), 0), (ssize_t)sizeof(data));
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 300), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &rcv, 1);
	ck_assert_uint_eq(rcv.bytes, 300);
	ck_assert_int_gt(rcv.res, 0); /* the last bytes end it */
	close(sv[0]);
	close(sv[1]);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* The library's recvmsg() calls that found nothing, while counting. */
static bool count_eagain;
static int eagains;

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	static ssize_t (*real)(int, struct msghdr *, int);
	ssize_t ret;

	if (!real)
		real = (ssize_t (*)(int, struct msghdr *, int))
			dlsym(RTLD_NEXT, "recvmsg");
	ret = real(fd, msg, flags);
	if (ret < 0 && errno == EAGAIN && count_eagain)
		eagains++;
	return ret;
}

static void recv_limit_step(iou_loop *loop, struct rec_op *r, int fd,
			    size_t limit, int finals)
{
	ck_assert_int_eq(iou__be_recv(loop, &r->op, fd, limit), 0);
	iou__op_submitted(loop);
	run_until_final(loop, r, finals);
}

/* A receive that ends at its byte limit knows whether it emptied the
 * socket: the next one waits for data instead of trying a read that finds
 * none (a byte read past the limit, if there was one, comes first in the
 * next receive, and before an end of file).  Failed before: 1 futile
 * recvmsg per re-armed receive. */
START_TEST(recv_limit_end_knows_emptied)
{
	iou_loop *loop = epoll_loop(64, 64);
	unsigned char sent[301], got[301] = { 0 };
	struct rec_op rcv;
	int sv[2];

	for (size_t i = 0; i < sizeof(sent); i++)
		sent[i] = (unsigned char)(i * 7 + 1);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rec_init(&rcv, loop);
	rcv.data = got;
	ck_assert_int_eq(send(sv[1], sent, 100, 0), 100);
	recv_limit_step(loop, &rcv, sv[0], 100, 1); /* exactly the limit */
	ck_assert_uint_eq(rcv.bytes, 100);

	eagains = 0;
	count_eagain = true;
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 100), 0);
	iou__op_submitted(loop);
	for (int i = 0; i < 5; i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 0), 0);
	count_eagain = false;
	ck_assert_int_eq(eagains, 0);
	ck_assert_int_eq(rcv.final, 1);

	/* 150 more: 100 end the second receive, one byte past it waits */
	ck_assert_int_eq(send(sv[1], sent + 100, 150, 0), 150);
	run_until_final(loop, &rcv, 2);
	ck_assert_uint_eq(rcv.bytes, 200);
	/* 51 more and the end: the third gets 50 + 50 (its limit), the
	 * fourth the last byte, then the end of file */
	ck_assert_int_eq(send(sv[1], sent + 250, 51, 0), 51);
	close(sv[1]);
	recv_limit_step(loop, &rcv, sv[0], 100, 3);
	ck_assert_uint_eq(rcv.bytes, 300);
	ck_assert_int_gt(rcv.res, 0);
	recv_limit_step(loop, &rcv, sv[0], 100, 4);
	ck_assert_uint_eq(rcv.bytes, 301);
	ck_assert_int_eq(rcv.res, 0);
	ck_assert_int_eq(memcmp(got, sent, sizeof(sent)), 0);
	close(sv[0]);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Whether fd is in an epoll set of this process (the loop's): the
 * kernel lists each set's fds in its fdinfo. */
static bool in_epoll_set(int fd)
{
	bool found = false;

	for (int e = 0; e < 1024 && !found; e++) {
		char path[64], link[64], line[256];
		ssize_t n;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", e);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, "anon_inode:[eventpoll]"))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", e);
		f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		while (fgets(line, sizeof(line), f)) {
			int tfd;

			if (sscanf(line, "tfd: %d", &tfd) == 1 && tfd == fd)
				found = true;
		}
		fclose(f);
	}
	return found;
}

/* A stream's socket stays in the epoll set between its receives (no
 * epoll_ctl to re-arm one) until its close; bytes that come while no
 * receive waits are still seen by the next one, whether the last one
 * ended with bytes left in the socket or with it drained. */
START_TEST(stream_socket_stays_registered)
{
	iou_loop *loop = epoll_loop(64, 64);
	struct rec_op rcv, cls;
	char data[1000];
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(data, 'z', sizeof(data));
	/* waits (in the set), then ends at its limit with 300 bytes left */
	rec_init(&rcv, loop);
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 300), 0);
	iou__op_submitted(loop);
	ck_assert_int_eq(t_run_once(loop, 0), 0);
	ck_assert_int_eq(rcv.n, 0);
	ck_assert_int_eq(send(sv[1], data, 600, 0), 600);
	run_until_final(loop, &rcv, 1);
	ck_assert_uint_eq(rcv.bytes, 300);
	ck_assert(in_epoll_set(sv[0]));
	/* takes those, drains the socket and ends at its limit */
	rec_init(&rcv, loop);
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 300), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &rcv, 1);
	ck_assert_uint_eq(rcv.bytes, 300);
	ck_assert(in_epoll_set(sv[0]));
	/* bytes while no receive waits, seen by the next one */
	ck_assert_int_eq(send(sv[1], data, 400, 0), 400);
	ck_assert_int_eq(t_run_once(loop, 0), 0);
	rec_init(&rcv, loop);
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 400), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &rcv, 1);
	ck_assert_uint_eq(rcv.bytes, 400);
	/* the close takes it out */
	rec_init(&cls, loop);
	ck_assert_int_eq(iou__be_close(loop, &cls.op, sv[0]), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &cls, 1);
	ck_assert_int_eq(cls.res, 0);
	ck_assert(!in_epoll_set(sv[0]));
	close(sv[1]);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Out of fds, the multishot accept ends with -EMFILE (the server backs
 * off and re-arms). */
START_TEST(accept_ends_at_emfile)
{
	iou_loop *loop = epoll_loop(0, 0);
	struct rlimit old, low;
	struct rec_op acc;
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);
	int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int spare = dup(lfd);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	ck_assert_int_ge(cfd, 0);
	ck_assert_int_ge(spare, 0);
	rec_init(&acc, loop);
	ck_assert_int_eq(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* no fd left for the accepted connection */
	close(spare);
	low = old;
	low.rlim_cur = (rlim_t)spare;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	ck_assert_int_eq(iou__be_accept(loop, &acc.op, lfd), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &acc, 1);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_int_eq(acc.res, -EMFILE);
	ck_assert_int_eq(acc.n, 1);
	close(cfd);
	close(lfd);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* connect on a blocking socket (as connect.c makes it): a refusal comes
 * back as -ECONNREFUSED, a success as 0. */
START_TEST(connect_refused_and_ok)
{
	iou_loop *loop = epoll_loop(0, 0);
	struct rec_op c;
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	rec_init(&c, loop);
	ck_assert_int_eq(iou__be_connect(loop, &c.op, fd, (struct sockaddr *)&sa,
					 sizeof(sa)), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &c, 1);
	ck_assert_int_eq(c.res, 0);
	close(fd);
	close(lfd); /* nobody listens there now */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	rec_init(&c, loop);
	ck_assert_int_eq(iou__be_connect(loop, &c.op, fd, (struct sockaddr *)&sa,
					 sizeof(sa)), 0);
	iou__op_submitted(loop);
	run_until_final(loop, &c, 1);
	ck_assert_int_eq(c.res, -ECONNREFUSED);
	close(fd);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

/* Every op kind that waits can be cancelled: one final -ECANCELED, in a
 * later dispatch, never inside the cancel; a second cancel, or one after
 * the end, is harmless. */
START_TEST(cancel_each_kind)
{
	iou_loop *loop = epoll_loop(0, 0);
	struct rec_op rcv, rd, acc, snd;
	unsigned char *big = calloc(1, 1 << 20);
	char buf[8];
	uint16_t port;
	int lfd = t_listen_ephemeral(&port);
	int sv[2], sw[2], p[2];

	ck_assert_ptr_nonnull(big);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sw), 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0); /* blocking, as a signalfd */
	while (send(sw[1], big, 65536, MSG_DONTWAIT) > 0) /* nobody reads */
		;
	rec_init(&rcv, loop);
	rec_init(&rd, loop);
	rec_init(&acc, loop);
	rec_init(&snd, loop);
	ck_assert_int_eq(iou__be_recv(loop, &rcv.op, sv[0], 0), 0);
	ck_assert_int_eq(iou__be_read(loop, &rd.op, p[0], buf, sizeof(buf)), 0);
	ck_assert_int_eq(iou__be_accept(loop, &acc.op, lfd), 0);
	ck_assert_int_eq(iou__be_send(loop, &snd.op, sw[1], big, 1 << 20), 0);
	for (int i = 0; i < 4; i++)
		iou__op_submitted(loop);
	for (int i = 0; i < 3; i++)
		ck_assert_int_ge(iou_loop_run_once(loop, 5), 0);
	ck_assert_int_eq(rcv.final + rd.n + acc.n + snd.n, 0);
	ck_assert_int_eq(iou__cancel_op(loop, &rcv.op, sv[0]), 0);
	ck_assert_int_eq(iou__cancel_op(loop, &rd.op, p[0]), 0);
	ck_assert_int_eq(iou__cancel_op(loop, &acc.op, lfd), 0);
	ck_assert_int_eq(iou__cancel_op(loop, &snd.op, sw[1]), 0);
	ck_assert_int_eq(iou__cancel_op(loop, &snd.op, sw[1]), 0);
	ck_assert_int_eq(rcv.final + rd.n + acc.n + snd.n, 0);
	ck_assert_int_eq(t_loop_drain(loop, T_MS), 0);
	ck_assert_int_eq(rcv.final, 1);
	ck_assert_int_eq(rcv.res, -ECANCELED);
	ck_assert_int_eq(rd.n, 1);
	ck_assert_int_eq(rd.res, -ECANCELED);
	ck_assert_int_eq(acc.n, 1);
	ck_assert_int_eq(acc.res, -ECANCELED);
	ck_assert_int_eq(snd.n, 1);
	ck_assert_int_eq(snd.res, -ECANCELED);
	ck_assert_int_eq(iou__cancel_op(loop, &rd.op, p[0]), 0); /* ended: nothing */
	ck_assert_int_eq(iou__cancel_fd(loop, 100000), 0);
	close(sv[0]);
	close(sv[1]);
	close(sw[0]);
	close(sw[1]);
	close(p[0]);
	close(p[1]);
	close(lfd);
	free(big);
	ck_assert_int_eq(iou_loop_destroy(loop), 0);
}
END_TEST

static Suite *epoll_suite(void)
{
	Suite *s = suite_create("epoll");
	TCase *tc = tcase_create("ops");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, backend_selected);
	tcase_add_test(tc, completions_never_inline);
	tcase_add_test(tc, send_waits_for_room);
	tcase_add_test(tc, recv_enobufs_when_pool_dry);
	tcase_add_test(tc, recv_byte_limit);
	tcase_add_test(tc, recv_limit_end_knows_emptied);
	tcase_add_test(tc, stream_socket_stays_registered);
	tcase_add_test(tc, accept_ends_at_emfile);
	tcase_add_test(tc, connect_refused_and_ok);
	tcase_add_test(tc, cancel_each_kind);
	suite_add_tcase(s, tc);
	return s;
}

/* Not t_run_suite(): this suite needs no io_uring. */
int main(void)
{
	SRunner *sr = srunner_create(epoll_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
