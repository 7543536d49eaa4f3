/* SPDX-License-Identifier: MIT */
/*
 * shim_membarrier.c - test-only LD_PRELOAD shim: a seccomp filter makes
 * membarrier(2) fail with IPM_SHIM_ERRNO (ENOSYS by default, or EPERM), as
 * in a kernel without it or a sandbox that denies it, so that the fallback
 * paths run on every machine.
 *
 * Libraries loaded with the program (liburcu-bp among them) probe
 * membarrier in their own constructors, which may run before this one; a
 * sandbox denies it from the start.  So the constructor installs the filter
 * and re-executes the program once (seccomp filters survive execve), and
 * the new image runs with membarrier denied from its first instruction.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define SHIM_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SHIM_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH"
#endif

static void reexec(void)
{
	static char buf[65536];
	char *argv[512];
	ssize_t len;
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC), argc = 0;
	char *p;

	if (fd < 0) {
		perror("shim_membarrier: /proc/self/cmdline");
		_exit(99);
	}
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0) {
		fprintf(stderr, "shim_membarrier: empty command line\n");
		_exit(99);
	}
	buf[len] = '\0';
	for (p = buf; p < buf + len && argc < 511; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;
	execv("/proc/self/exe", argv);
	perror("shim_membarrier: execv");
	_exit(99);
}

__attribute__((constructor)) static void deny_membarrier(void)
{
	const char *e = getenv("IPM_SHIM_ERRNO");
	unsigned err = (e && strcmp(e, "EPERM") == 0) ? EPERM : ENOSYS;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SHIM_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (getenv("IPM_SHIM_ACTIVE")) {
		if (syscall(__NR_membarrier, 0, 0, 0) != -1 || errno != (int)err) {
			fprintf(stderr, "shim_membarrier: filter not effective\n");
			_exit(99);
		}
		return;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
		perror("shim_membarrier: seccomp");
		_exit(99);
	}
	setenv("IPM_SHIM_ACTIVE", "1", 1);
	reexec();
}
