/* SPDX-License-Identifier: MIT */
/*
 * harness.h - worker threads for the tests: they register, then spin, poll
 * or block (offline) until told to stop.  Waits are bounded: a test that
 * would hang fails instead.
 */
#ifndef IPM_TEST_HARNESS_H
#define IPM_TEST_HARNESS_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipimask.h"

#define MAX_WORKERS 128

enum worker_kind {
	W_SPIN,		/* IPM_MODE_SIGNAL, busy (yields) */
	W_POLL,		/* IPM_MODE_POLL, calls ipm_poll() in its loop */
	W_BLOCK,	/* offline, blocked on a futex until told */
	W_SPIN_HARD,	/* IPM_MODE_SIGNAL, spins without yielding */
};

struct worker {
	pthread_t th;
	enum worker_kind kind;
	int cpu;			/* pin to this CPU, or -1 */
	int slot;
	pid_t tid;
	atomic_int ready;
	atomic_int stop;
	atomic_int pause_poll;		/* W_POLL: stop polling while set */
	atomic_int paused;		/* W_POLL: acknowledges pause_poll */
	atomic_uint block_gate;		/* W_BLOCK: futex word, 1 = go online */
	atomic_ulong loops;
};

struct workers {
	int n;
	struct worker w[MAX_WORKERS];
};

/* Start @n workers of @kind (pinned round-robin over CPUs when @pin). */
void workers_start(struct workers *ws, int n, enum worker_kind kind, bool pin);
/* Start @n workers of @kind all pinned to @cpu. */
void workers_start_on(struct workers *ws, int n, enum worker_kind kind, int cpu);
void workers_stop(struct workers *ws);
struct worker *worker_by_slot(struct workers *ws, int slot);
/* W_BLOCK: let the worker go online, run deferred work, and block again. */
void worker_wake(struct worker *w);
/* W_POLL: stop polling (returns once the worker has stopped) or resume. */
void worker_pause(struct worker *w);
void worker_resume(struct worker *w);

/* waitpid(@pid) for at most @seconds; on timeout the child is killed
 * (SIGKILL) and reaped, and the test fails, saying so.  Returns the wait
 * status. */
int wait_child(pid_t pid, double seconds);

/* Wait (bounded, yielding) until *p >= want; false on timeout. */
bool wait_ge(atomic_ulong *p, unsigned long want, double seconds);
bool wait_int(atomic_int *p, int want, double seconds);

double now_s(void);
pid_t test_gettid(void);

/* FUTEX_WAIT_PRIVATE on @p while it holds @v (no timeout; a wake, a signal
 * or a changed value ends it); FUTEX_WAKE_PRIVATE of one waiter. */
void futex_wait_u(atomic_uint *p, unsigned v);
void futex_wake_u(atomic_uint *p);

/* True when the tests run under valgrind (meson test --setup valgrind sets
 * IPM_TEST_VALGRIND).  Valgrind runs one thread at a time and lets a thread
 * that never makes a system call keep the CPU for its whole time slice:
 * busy loops must yield there (spin_relax), and stress tests run fewer
 * rounds (vg_scale), since memcheck looks for memory errors, not races. */
bool under_valgrind(void);
/* In a busy loop: nothing natively, sched_yield() under valgrind. */
void spin_relax(void);
/* @n natively, @n / 10 (at least 1) under valgrind. */
unsigned vg_scale(unsigned n);

/* Runs @s (Check, CK_NORMAL); the process exit status: 0 or 1. */
int run_suite(Suite *s);

/* Default test fixture: ipm_init with defaults; asserted. */
void fixture_init(void);
void fixture_fini(void);

#endif
