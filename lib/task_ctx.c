/* SPDX-License-Identifier: MIT */
/* A task's first frame, for the context switch in task_switch.S.  No
 * dependency beyond libc: tests/ctx-switch.sh builds it with the switch
 * alone, also for aarch64 (run under qemu-user). */
#include <stdint.h>
#include <string.h>

#include "task_ctx.h"

/* A first frame for iou__ctx_switch() to pop: its return goes to
 * iou__ctx_entry with the entry function and argument in registers. */
void *iou__ctx_init(unsigned char *top, void (*fn)(void *), void *arg)
{
	uintptr_t t = (uintptr_t)top & ~(uintptr_t)15;
#if defined(__x86_64__)
	uint64_t *sp = (uint64_t *)(t - 64);
	uint32_t mxcsr;
	uint16_t fpucw;

	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(fpucw));
	memset(sp, 0, 64);
	sp[0] = (mxcsr & ~0x3fu) | (uint64_t)fpucw << 32; /* control words */
	sp[3] = (uint64_t)(uintptr_t)arg;        /* r13 */
	sp[4] = (uint64_t)(uintptr_t)fn;         /* r12 */
	sp[7] = (uint64_t)(uintptr_t)iou__ctx_entry; /* return address */
	return sp;
#elif defined(__aarch64__)
	uint64_t *sp = (uint64_t *)(t - 176);
	uint64_t fpcr;

	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	memset(sp, 0, 176);
	sp[0] = (uint64_t)(uintptr_t)fn;         /* x19 */
	sp[1] = (uint64_t)(uintptr_t)arg;        /* x20 */
	sp[11] = (uint64_t)(uintptr_t)iou__ctx_entry; /* x30 */
	sp[20] = fpcr;
	return sp;
#endif
}
