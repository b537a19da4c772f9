/* SPDX-License-Identifier: MIT */
/* What every fuzz/fuzz_*.c target shares: failing loudly, ASan poisoning
 * (a no-op without ASan), reading the fuzzer's input as a stream of
 * choices, a trace (FUZZ_VERBOSE=1) and a growing byte array for models.
 * Define FUZZ_NAME before including it. */
#ifndef IOU_FUZZ_H
#define IOU_FUZZ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* What the target does, on stderr, when FUZZ_VERBOSE is set. */
static inline bool fuzz_verbose(void)
{
	static int verbose = -1;

	if (verbose < 0)
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	return verbose;
}

#define TRACE(...)                                                           \
	do {                                                                 \
		if (fuzz_verbose())                                          \
			fprintf(stderr, __VA_ARGS__);                        \
	} while (0)

/* Bytes appended to, for a model. */
struct bytes {
	unsigned char *p;
	size_t len, cap;
};

static inline void bytes_add(struct bytes *b, const void *p, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		CHECK(b->p, "out of memory");
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

#endif /* IOU_FUZZ_H */
