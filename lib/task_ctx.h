/* SPDX-License-Identifier: MIT */
/* The context switch of tasks (task_switch.S, task_ctx.c); never
 * installed.  Depends on nothing but the C library. */
#ifndef IOU_TASK_CTX_H
#define IOU_TASK_CTX_H

/* Save the callee-saved registers and the FP control words on the current
 * stack, store its pointer in *save_sp, switch to load_sp and return into
 * whatever saved it (or into a first frame's entry). */
void iou__ctx_switch(void **save_sp, void *load_sp);
void iou__ctx_entry(void);
/* Lay a first frame below `top` (a fresh stack's end): the first switch to
 * the returned stack pointer calls fn(arg), which must never return. */
void *iou__ctx_init(unsigned char *top, void (*fn)(void *), void *arg);

#endif /* IOU_TASK_CTX_H */
