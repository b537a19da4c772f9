/* SPDX-License-Identifier: MIT */
/* The server layer's internal declarations: what server.c offers the rest
 * of the library, the hooks stream.c calls on the connections a server
 * accepted and the clean-up a layer above (task_server.c) hangs on a
 * server.  struct iou_server itself is server.c's alone.  Never
 * installed. */
#ifndef IOU_SERVER_H
#define IOU_SERVER_H

#include <stdint.h>

#include "iou.h"

/* A stream of the server's was freed. */
void iou__server_conn_closed(iou_server *srv, iou_stream *s);
/* The stream's idle deadline (0: none); past it, the server cuts it. */
uint64_t iou__server_idle_check(iou_stream *s);
/* fn(arg) when the server is freed (after its done callback). */
void iou__server_set_cleanup(iou_server *srv, void (*fn)(void *), void *arg);

#endif /* IOU_SERVER_H */
