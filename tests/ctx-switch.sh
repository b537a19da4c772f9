#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The tasks' context switch alone (tests/progs/ctx-switch.c: 2 000 000
# switches; callee-saved values and the FP rounding modes of both sides
# intact): the native build that make built, then an aarch64 build run
# under qemu-user when aarch64-linux-gnu-gcc and qemu-aarch64 are there
# (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user).  Without
# them the aarch64 half skips with a reason, unless IOU_REQUIRE_AARCH64=1
# (CI), which makes it a failure.
#
# Exit status: 0 pass, 1 fail.
TOP=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
SRC=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1

if ! ./tests/progs/ctx-switch; then
	echo "FAIL: native context switch"
	exit 1
fi

CC_A64=${CC_A64:-aarch64-linux-gnu-gcc}
if ! command -v "$CC_A64" >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
	if [ "${IOU_REQUIRE_AARCH64:-0}" = 1 ]; then
		echo "FAIL: aarch64: $CC_A64 or qemu-aarch64 missing"
		exit 1
	fi
	echo "ok: aarch64 not tested here: $CC_A64 or qemu-aarch64 missing"
	exit 0
fi
mkdir -p tests/logs
bin=tests/logs/ctx-switch-aarch64
if ! "$CC_A64" -O2 -Wall -Wextra -Werror -static -o "$bin" \
	"$SRC/tests/progs/ctx-switch.c" "$SRC/lib/task_switch.S" \
	"$SRC/lib/task_ctx.c" -lm; then
	echo "FAIL: aarch64 build"
	exit 1
fi
if ! qemu-aarch64 "$bin"; then
	echo "FAIL: aarch64 context switch under qemu-user"
	rm -f "$bin"
	exit 1
fi
rm -f "$bin"
echo "ctx-switch.sh: native and aarch64 passed"
