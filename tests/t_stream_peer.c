/* SPDX-License-Identifier: MIT */
/* Test peers on plain blocking sockets; see t_stream_peer.h. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "t_helpers.h"
#include "t_stream_peer.h"

#define BURST (64u * 1024u)

unsigned char tsp_byte(uint64_t seed, uint64_t off)
{
	uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ (seed * 0xBF58476D1CE4E5B9ull);

	return (unsigned char)(x >> 56);
}

void tsp_fill(void *buf, size_t len, uint64_t seed, uint64_t off)
{
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = tsp_byte(seed, off + i);
}

size_t tsp_mismatch(const void *buf, size_t len, uint64_t seed, uint64_t off)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != tsp_byte(seed, off + i))
			return i;
	return len;
}

void tsp_set_timeouts(int fd)
{
	struct timeval tv = { TSP_IO_TIMEOUT_S, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void tsp_rst(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void finish(struct tsp_peer *p)
{
	switch (p->after) {
	case TSP_SHUT_WR:
		if (shutdown(p->fd, SHUT_WR) < 0 && !p->err)
			p->err = errno;
		break;
	case TSP_RST:
		tsp_rst(p->fd);
		p->fd = -1;
		break;
	case TSP_KEEP:
		break;
	}
	__atomic_store_n(&p->finished, 1, __ATOMIC_RELEASE);
}

static void *send_main(void *arg)
{
	struct tsp_peer *p = arg;
	size_t chunk = p->chunk ? p->chunk : BURST;
	unsigned char *buf = malloc(chunk < BURST ? BURST : chunk);

	if (!buf) {
		p->err = ENOMEM;
		finish(p);
		return NULL;
	}
	while (p->done < p->len) {
		size_t n = p->len - p->done;
		ssize_t r;

		if (n > chunk)
			n = chunk;
		/* after a short send, the rest goes out (regenerated) next */
		if (p->src)
			memcpy(buf, p->src + p->done, n);
		else
			tsp_fill(buf, n, p->seed, p->done);
		r = send(p->fd, buf, n, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			p->err = errno;
			break;
		}
		p->done += (size_t)r;
		if (p->pause_us) {
			struct timespec ts = { 0, (long)p->pause_us * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	free(buf);
	finish(p);
	return NULL;
}

static void *recv_main(void *arg)
{
	struct tsp_peer *p = arg;
	unsigned char *buf = malloc(BURST);

	if (!buf) {
		p->err = ENOMEM;
		finish(p);
		return NULL;
	}
	while (p->done < p->len) {
		size_t n = p->len - p->done;
		ssize_t r;

		if (n > BURST)
			n = BURST;
		r = recv(p->fd, buf, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			p->err = errno;
			break;
		}
		if (r == 0) {
			p->eof = 1;
			break;
		}
		if (p->verify && p->bad_at == SIZE_MAX) {
			size_t m = tsp_mismatch(buf, (size_t)r, p->seed, p->done);

			if (m < (size_t)r)
				p->bad_at = p->done + m;
		}
		if (p->store) {
			size_t room = p->done < p->store_cap ? p->store_cap - p->done : 0;

			memcpy(p->store + p->done, buf, (size_t)r < room ? (size_t)r : room);
		}
		p->done += (size_t)r;
	}
	free(buf);
	finish(p);
	return NULL;
}

static void start(struct tsp_peer *p, void *(*fn)(void *))
{
	p->bad_at = SIZE_MAX;
	tsp_set_timeouts(p->fd);
	if (pthread_create(&p->thread, NULL, fn, p) == 0) {
		p->started = 1;
	} else {
		p->err = EAGAIN;
		p->finished = 1;
	}
}

void tsp_send_start(struct tsp_peer *p, int fd, uint64_t seed, size_t len,
		    size_t chunk, unsigned pause_us, enum tsp_after after)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->sending = 1;
	p->seed = seed;
	p->len = len;
	p->chunk = chunk;
	p->pause_us = pause_us;
	p->after = after;
	start(p, send_main);
}

void tsp_send_buf_start(struct tsp_peer *p, int fd, const void *src,
			size_t len, size_t chunk, unsigned pause_us,
			enum tsp_after after)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->sending = 1;
	p->src = src;
	p->len = len;
	p->chunk = chunk;
	p->pause_us = pause_us;
	p->after = after;
	start(p, send_main);
}

void tsp_recv_start(struct tsp_peer *p, int fd, size_t len, int verify,
		    uint64_t seed, unsigned char *store, size_t cap,
		    enum tsp_after after)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->len = len;
	p->verify = verify;
	p->seed = seed;
	p->store = store;
	p->store_cap = cap;
	p->after = after;
	start(p, recv_main);
}

int tsp_join(struct tsp_peer *p, int timeout_ms)
{
	struct timespec ts;
	int forced = 0;

	if (!p->started)
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	if (pthread_timedjoin_np(p->thread, NULL, &ts) != 0) {
		forced = -1;
		if (!__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) && p->fd >= 0)
			shutdown(p->fd, SHUT_RDWR);
		pthread_join(p->thread, NULL);
	}
	p->started = 0;
	return forced;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int tsp_turn(iou_loop *loop)
{
	int ret = iou_loop_run_once(loop, 1);

	if (ret == 0) {
		struct timespec ts = { 0, 50000 };
		nanosleep(&ts, NULL);
	}
	return ret;
}

int tsp_run_until_count(iou_loop *loop, const int *count, int target,
			int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	long turns = 0, max_turns = (long)timeout_ms * 1000 + 1000;

	while (*count < target) {
		int ret;

		if (now_ms() >= end || turns++ >= max_turns)
			return -ETIMEDOUT;
		ret = tsp_turn(loop);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int tsp_run_until(iou_loop *loop, const int *flag, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	long turns = 0, max_turns = (long)timeout_ms * 1000 + 1000;

	while (!*flag) {
		int ret;

		if (now_ms() >= end || turns++ >= max_turns)
			return -ETIMEDOUT;
		ret = tsp_turn(loop);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- stream fixtures shared by check_stream and check_bufstream -------- */

int tsp_open_pair(iou_loop *loop, const struct iou_stream_opts *o,
		  iou_stream **s)
{
	int fds[2], ret;

	t_tcp_pair(fds);
	ret = iou_stream_open(loop, fds[0], o, s);
	ck_assert_msg(ret == 0, "iou_stream_open: %s", iou_strerror(ret));
	return fds[1];
}

void tsp_count_close_cb(iou_stream *s, void *ud)
{
	(void)s;
	(*(int *)ud)++;
}

void tsp_close_and_wait(iou_loop *loop, iou_stream *s)
{
	int closed = 0;

	ck_assert_int_eq(iou_close(s, tsp_count_close_cb, &closed), 0);
	ck_assert_int_eq(tsp_run_until(loop, &closed, T_TIMEOUT_MS), 0);
	ck_assert_int_eq(closed, 1);
}

void tsp_run_for(iou_loop *loop, int ms)
{
	uint64_t end = t_now_ms() + (uint64_t)ms;

	for (int i = 0; i < ms * 100 + 100 && t_now_ms() < end; i++)
		ck_assert_int_ge(tsp_turn(loop), 0);
}
