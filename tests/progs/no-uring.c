/* SPDX-License-Identifier: MIT */
/*
 * no-uring: run a command where io_uring is blocked, as Docker's and
 * containerd's default seccomp profiles block it: io_uring_setup,
 * io_uring_enter and io_uring_register fail with EPERM; every other
 * syscall is allowed.  The filter is inherited by the command and all it
 * starts, and can never be lifted.
 *
 *   usage: no-uring COMMAND [ARG...]
 *          no-uring --check     (0 if the filter works here: io_uring_setup
 *                                fails with EPERM under it)
 *
 * Exit status: the command's (it is exec'ed); 125 if the filter cannot be
 * installed (no seccomp here) or the command cannot be run, with one line
 * on stderr saying why; 2 on a usage error.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NO_URING_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NO_URING_ARCH AUDIT_ARCH_AARCH64
#else
#error "no-uring: x86-64 and aarch64 only"
#endif

#define DENY(nr) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

static int block_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		/* Another ABI (x32, i386) could reach io_uring by another
		 * number: refuse everything there. */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NO_URING_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		DENY(__NR_io_uring_setup),
		DENY(__NR_io_uring_enter),
		DENY(__NR_io_uring_register),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = (unsigned short)(sizeof(f) / sizeof(f[0])),
		.filter = f,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	int ret;

	if (argc < 2) {
		fprintf(stderr, "usage: no-uring COMMAND [ARG...] | --check\n");
		return 2;
	}
	ret = block_io_uring();
	if (ret < 0) {
		fprintf(stderr, "no-uring: cannot install the seccomp filter: %s\n",
			strerror(-ret));
		return 125;
	}
	if (strcmp(argv[1], "--check") == 0) {
		long fd = syscall(__NR_io_uring_setup, 4, NULL);

		if (fd >= 0 || errno != EPERM) {
			fprintf(stderr, "no-uring: io_uring_setup was not refused with EPERM (%s)\n",
				fd >= 0 ? "it succeeded" : strerror(errno));
			return 1;
		}
		return 0;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "no-uring: cannot run %s: %s\n", argv[1], strerror(errno));
	return 125;
}
