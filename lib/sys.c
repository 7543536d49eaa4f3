/* SPDX-License-Identifier: MIT */
/*
 * sys.c - system-call wrappers (futex, clock), the fault-injection
 * allocator and _ipm_die().
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int _ipm_futex_wait(uint32_t *uaddr, uint32_t val, int64_t timeout_ns)
{
	struct timespec ts, *tsp = NULL;
	int saved = errno, ret;

	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tsp = &ts;
	}
	ret = (int)syscall(SYS_futex, uaddr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
	ret = ret < 0 ? -errno : 0;
	errno = saved;
	return ret;
}

/* Async-signal-safe. */
void _ipm_futex_wake(uint32_t *uaddr, int n)
{
	int saved = errno;

	syscall(SYS_futex, uaddr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
	errno = saved;
}

uint64_t _ipm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Internal allocations that may fail without an error being the only
 * honest outcome (the cond path's target set) go through here, so that
 * tests can make the n-th one fail: 0 = never, 1 = the next one, ...
 */
unsigned _ipm_fault_alloc_countdown;

void *_ipm_malloc(size_t sz)
{
	unsigned n = IPM_LOAD(&_ipm_fault_alloc_countdown);

	if (unlikely(n)) {
		if (__atomic_sub_fetch(&_ipm_fault_alloc_countdown, 1, __ATOMIC_RELAXED) == 0)
			return NULL;
	}
	return malloc(sz);
}

void _ipm_die_at(const char *file, const char *func, int line, const char *cause)
{
	fprintf(stderr, "libipimask: %s:%s:%d: fatal: %s\n", file, func, line, cause);
	abort();
}
