/* SPDX-License-Identifier: MIT */
/* What connect.c offers the rest of the library (stream.c, and tests):
 * connects to given addresses and the cancel of a connecting stream.
 * struct conn_req itself is connect.c's alone.  Never installed. */
#ifndef IOU_CONNECT_H
#define IOU_CONNECT_H

#include <stddef.h>
#include <sys/socket.h>

#include "iou.h"

/* iou_tcp_connect() to the AF_INET/AF_INET6 `addrs`, tried in turn as if a
 * name had resolved to them (also how tests supply several addresses).
 * Returns and reports as iou_tcp_connect(). */
int iou__connect_addrs(iou_loop *loop, const struct sockaddr_storage *addrs,
		       size_t n, const struct iou_connect_opts *opts,
		       iou_connect_cb cb, void *ud, iou_stream **out);
/* iou_close() of a connecting stream: stop the attempt; the connect
 * callback gets -ECANCELED (now, or from the cancelled op's CQE). */
void iou__connect_cancel(iou_stream *s);
extern unsigned iou__resolve_delay_ms; /* tests: slow look-ups */

#endif /* IOU_CONNECT_H */
