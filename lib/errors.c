/* SPDX-License-Identifier: MIT */
/* Error words, the version, address text. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>

#include "loop_int.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char *iou_version(void)
{
	return STR(IOU_VERSION_MAJOR) "." STR(IOU_VERSION_MINOR) "." STR(
		IOU_VERSION_PATCH);
}

const char *iou_strerror(int err)
{
	if (err >= 0)
		return "success";
	if (err == INT_MIN)
		return "unknown error"; /* -err would overflow */
	switch (-err) {
	case IOU_EINCOMPLETE:
		return "peer closed the stream in the middle of a message";
	case IOU_EOVERFLOW:
		return "separator not found within the read limit";
	case IOU_ECLOSED:
		return "stream closed";
	case IOU_ENOURING:
		return "io_uring is unavailable: the kernel lacks it, the sysctl "
		       "kernel.io_uring_disabled forbids it (set it to 0), or a "
		       "seccomp filter blocks it (containers: allow io_uring_setup, "
		       "io_uring_enter and io_uring_register)";
	case IOU_ERESOLVE:
		return "host name could not be resolved";
	case IOU_ENOFEATURE:
		return "the kernel's io_uring lacks multishot receive or buffer "
		       "rings: Linux 6.0 or newer is needed";
	case ENOMEM:
		return "out of memory (without CAP_IPC_LOCK, io_uring's pinned "
		       "memory counts against RLIMIT_MEMLOCK: raise ulimit -l)";
	default:
		return strerror(-err);
	}
}

int iou_sockaddr_text(const struct sockaddr *sa, char *host, size_t hostlen,
		      uint16_t *port)
{
	const void *addr;
	uint16_t p;

	if (!sa || !host || !hostlen)
		return -EINVAL;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		addr = &in->sin_addr;
		p = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		addr = &in6->sin6_addr;
		p = ntohs(in6->sin6_port);
	} else {
		return -EAFNOSUPPORT;
	}
	if (!inet_ntop(sa->sa_family, addr, host, (socklen_t)hostlen))
		return -ENOSPC;
	if (port)
		*port = p;
	return 0;
}
