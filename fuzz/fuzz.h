/* SPDX-License-Identifier: MIT */
/* What every fuzz/fuzz_*.c target shares: failing loudly, ASan poisoning
 * (a no-op without ASan) and reading the fuzzer's input as a stream of
 * choices.  Define FUZZ_NAME before including it. */
#ifndef IOU_FUZZ_H
#define IOU_FUZZ_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define HAVE_ASAN 1
#endif
#endif
#ifndef HAVE_ASAN
#define ASAN_POISON_MEMORY_REGION(a, n) ((void)(a), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(a, n) ((void)(a), (void)(n))
#endif

/* A difference from the model: say what, and abort() for libFuzzer. */
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, FUZZ_NAME ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fail(__VA_ARGS__);                                   \
	} while (0)

/* The input, consumed a byte at a time; zeros once it runs out. */
static const uint8_t *in_p;
static size_t in_n;

static unsigned u8(void)
{
	if (!in_n)
		return 0;
	in_n--;
	return *in_p++;
}

static inline unsigned u16(void)
{
	unsigned v = u8();

	return v | u8() << 8;
}

#endif /* IOU_FUZZ_H */
