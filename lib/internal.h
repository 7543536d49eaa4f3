/* SPDX-License-Identifier: MIT */
/*
 * internal.h - state shared by the library's files.  Nothing here is public.
 *
 * Names: exported functions carry the ipm_ prefix; internal functions shared
 * between files carry _ipm_ (hidden by the visibility default and absent from
 * the version script); file-local helpers are static.
 */
#ifndef IPM_INTERNAL_H
#define IPM_INTERNAL_H

#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <urcu/lfstack.h>

#include "ipimask.h"

#define IPM_CACHELINE		64
#define __ipm_aligned		__attribute__((aligned(IPM_CACHELINE)))
#define __ipm_tls		__thread __attribute__((tls_model("initial-exec")))
#define IPM_MAX_THREADS_LIMIT	65536u
#define IPM_DEFAULT_THREADS	1024u
#define IPM_DEFAULT_DEADLINE_US	1000u

#define IPM_LOAD(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define IPM_STORE(p, v)		__atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define IPM_LOAD_ACQ(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define IPM_STORE_REL(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)
#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void _ipm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/*
 * _ipm_die: a broken invariant (never bad input).  Prints where and why,
 * then aborts, like urcu_die().
 */
#define _ipm_die(cause) _ipm_die_at(__FILE__, __func__, __LINE__, (cause))
__attribute__((noreturn, cold))
void _ipm_die_at(const char *file, const char *func, int line, const char *cause);

/* ------------------------------------------------------------------------ */
/* Thread records (registry.c)                                               */
/* ------------------------------------------------------------------------ */

/* ipm_thread.state bits.  See delivery.c for the protocol. */
#define IPM_ST_POLL	0x01u	/* IPM_MODE_POLL */
#define IPM_ST_OFFLINE	0x02u	/* blocked: never signalled */
#define IPM_ST_CLAIMED	0x04u	/* someone runs requests for the offline thread */
#define IPM_ST_KICKME	0x08u	/* polling thread sleeps in a wait: signal it */
#define IPM_ST_DEAD	0x10u	/* unregistering: it drains on its way out */
#define IPM_ST_SLEEPERS	0x20u	/* someone sleeps on the state word (futex) */

/*
 * One registered thread.  Allocated by the thread itself (first touch puts it
 * on the thread's NUMA node), published in lib.slots under RCU, freed after a
 * grace period.  Three cache lines: what senders write, what the owner
 * writes and senders read, and the owner's counters.
 */
struct ipm_thread {
	/* Line 0: written by senders (push), emptied by the owner (pop_all). */
	struct __cds_lfs_stack pending __ipm_aligned;
	/* POLL mode: when the list last went from empty to non-empty (ns),
	 * and the last such batch that was escalated (one signal a batch). */
	uint64_t pending_since;
	uint64_t escalated_since;

	/* Line 1: written by the owner (and claimers), read by senders. */
	uint32_t state __ipm_aligned;	/* IPM_ST_*; futex word */
	pid_t tid;
	int slot;
	int cpu;			/* last seen; -1 unknown */
	int node;			/* last seen; -1 unknown */
	int pinned_cpu;			/* the only CPU of its affinity, or -1 */
	bool isolated;			/* every CPU of its affinity is isolated */
	/* Requests kept back by a claimer for ipm_thread_online(), FIFO.
	 * Touched only by the holder of IPM_ST_CLAIMED, or by the owner
	 * while it is online. */
	struct cds_lfs_node *kept_head, *kept_tail;

	/* Line 2: this thread's counters (remote_run: by claimers). */
	struct ipm_thread_stats stats __ipm_aligned;
};

/* ------------------------------------------------------------------------ */
/* Requests (request.c)                                                      */
/* ------------------------------------------------------------------------ */

/* One target of one call: the node that sits on the target's list. */
struct ipm_work {
	struct cds_lfs_node node;
	struct ipm_req *req;
	struct ipm_thread *rec;		/* target incarnation (for escalation) */
	int slot;
	uint32_t done;			/* set just before completion */
	uint32_t escalated;		/* IPM_WORK_* */
};
#define IPM_WORK_ESCALATED	1u	/* the waiter signalled a late poller */
#define IPM_WORK_KICK_FAILED	2u	/* tgkill failed: the waiter retries */

#define IPM_REQ_WAITERS	0x80000000u	/* someone sleeps on req->pending */
#define IPM_REQ_COUNT	0x3fffffffu

enum ipm_req_owner {
	IPM_REQ_STACK,		/* synchronous: owned by the waiting caller */
	IPM_REQ_HEAP_WAIT,	/* synchronous, heap: freed by the waiting caller */
	IPM_REQ_REFCOUNTED,	/* async handle and/or fire-and-forget */
};

struct ipm_req {
	ipm_func_t func;
	void *info;
	unsigned flags;
	uint32_t pending;	/* futex word: targets left | IPM_REQ_WAITERS */
	int error;		/* 0, or -ECANCELED */
	uint32_t refs;		/* IPM_REQ_REFCOUNTED: handle + in-flight */
	enum ipm_req_owner owner;
	unsigned nwork;		/* works allocated */
	unsigned nsent;		/* works used */
	uint64_t sent_ns;	/* CLOCK_MONOTONIC when sent (escalation) */
	struct cds_lfs_node zombie;
	struct ipm_work work[];
};

struct ipm_req *_ipm_req_alloc(unsigned nwork, enum ipm_req_owner owner);
void _ipm_req_free(struct ipm_req *r);
void _ipm_work_complete(struct ipm_work *w);
int  _ipm_req_wait(struct ipm_req *r, int64_t timeout_ns);
void _ipm_req_start(struct ipm_req *r, ipm_func_t func, void *info, unsigned flags);
void _ipm_req_sent(struct ipm_req *r, unsigned sent);
void _ipm_reap_zombies(void);

/* ------------------------------------------------------------------------ */
/* Per-caller state (stats.c): thread-local, summed on read                  */
/* ------------------------------------------------------------------------ */

enum ipm_counter {
	IPM_C_CALLS, IPM_C_DELIVERIES, IPM_C_COND_SKIPPED,
	IPM_C_SIGNALS_SENT, IPM_C_SIGNALS_COALESCED, IPM_C_POLLED,
	IPM_C_REMOTE_RUN, IPM_C_DEFERRED, IPM_C_ESCALATIONS,
	IPM_C_MEMBARRIERS, IPM_C_MASK_FALLBACKS,
	IPM_C_BATCHES, IPM_C_BATCH_KEYS, IPM_C_FULL_FLUSHES,
	IPM_C_DRAINS, IPM_C_DRAINED_OBJECTS,
	IPM_NCOUNTERS
};

struct ipm_caller {
	uint64_t c[IPM_NCOUNTERS];
	struct ipm_caller *next, *prev;
	bool linked;
};

struct ipm_caller *_ipm_caller(void);
static inline void _ipm_count(enum ipm_counter i, uint64_t n)
{
	struct ipm_caller *me = _ipm_caller();

	/* Single writer: a plain add; readers load it relaxed. */
	IPM_STORE(&me->c[i], IPM_LOAD(&me->c[i]) + n);
}
void _ipm_stats_reset(void);
void _ipm_caller_exit(void);
void _ipm_stats_fork_prepare(void);
void _ipm_stats_fork_parent(void);
void _ipm_stats_fork_child(void);

/* ------------------------------------------------------------------------ */
/* Library state (init.c)                                                    */
/* ------------------------------------------------------------------------ */

struct ipm_lib {
	bool initialized;
	uint32_t gen;			/* bumped by every ipm_init */
	int signo;
	pid_t pid;			/* getpid(), refreshed in a fork child */
	unsigned max_threads;
	unsigned mask_words;
	unsigned cfg_flags;
	uint64_t poll_deadline_ns;
	unsigned features;
	struct sigaction old_action;
	cpu_set_t isolated_cpus;	/* /sys/devices/system/cpu/isolated + nohz_full */
	int *cpu_node;			/* CPU -> NUMA node, read once at init */
	int ncpu_node;
	/* registry.c */
	struct ipm_thread **slots;	/* RCU-protected */
	unsigned long *used;		/* slots not free for reuse */
	unsigned nregistered;
	unsigned slots_high;		/* 1 + the highest slot ever taken */
	pthread_mutex_t reg_lock;
};

extern struct ipm_lib _ipm_lib;

/* The calling thread's record, when registered under the current ipm_init. */
extern __ipm_tls struct ipm_thread *_ipm_tls_self;
extern __ipm_tls uint32_t _ipm_tls_gen;
extern __ipm_tls unsigned _ipm_tls_in_handler;

static inline struct ipm_thread *_ipm_self(void)
{
	struct ipm_thread *t = _ipm_tls_self;

	if (t && _ipm_tls_gen == IPM_LOAD(&_ipm_lib.gen))
		return t;
	return NULL;
}

static inline bool _ipm_ready(void)
{
	return IPM_LOAD_ACQ(&_ipm_lib.initialized);
}

/* RCU (urcu-bp: any thread may read without registering; fork-aware). */
void _ipm_rcu_read_lock(void);
void _ipm_rcu_read_unlock(void);
void _ipm_rcu_synchronize(void);

static inline struct ipm_thread *_ipm_slot_deref(unsigned slot)
{
	return __atomic_load_n(&_ipm_lib.slots[slot], __ATOMIC_CONSUME);
}

/* registry.c */
void _ipm_arm_exit_hook(void);
void _ipm_registry_atfork_once(void);
int  _ipm_registry_init(void);
void _ipm_registry_fini(void);
void _ipm_sample_cpu(struct ipm_thread *t);
void _ipm_sample_affinity(struct ipm_thread *t);

/* delivery.c */
void _ipm_signal_handler(int sig, siginfo_t *si, void *uctx);
unsigned _ipm_run_pending(struct ipm_thread *t);
void _ipm_deliver(struct ipm_thread *t, struct ipm_work *w);
int  _ipm_send_signal(struct ipm_thread *t);
bool _ipm_may_signal(const struct ipm_thread *t);
void _ipm_cancel_pending(struct ipm_thread *t);
void _ipm_wait_serve_begin(struct ipm_thread *me);
void _ipm_wait_serve_end(struct ipm_thread *me);

/* watchdog.c */
void _ipm_watchdog_note(void);
void _ipm_watchdog_stop(void);
void _ipm_watchdog_fork_child(void);
bool _ipm_escalate(struct ipm_thread *t, uint64_t since);

/* batch.c: the thread of @slot unregisters (registry.c hook). */
void _ipm_batch_thread_gone(int slot);
/* pcache.c: the unregistering thread gives its cached objects back. */
void _ipm_pcache_thread_exit(int slot);
/* Tests only: the lock word of @slot's cache, or NULL. */
uint32_t *_ipm_pcache_lock_word(struct ipm_pcache *pc, int slot);

/* barrier.c */
void _ipm_membarrier_probe(void);

/* futex.c */
int  _ipm_futex_wait(uint32_t *uaddr, uint32_t val, int64_t timeout_ns);
void _ipm_futex_wake(uint32_t *uaddr, int n);
uint64_t _ipm_now_ns(void);

/* Fault injection for tests: the n-th next internal allocation fails. */
void *_ipm_malloc(size_t sz);
extern unsigned _ipm_fault_alloc_countdown;

/* mask.c */
struct ipm_mask {
	unsigned nbits;
	unsigned long bits[];
};
#define IPM_BITS_PER_LONG	(8 * sizeof(unsigned long))

#endif /* IPM_INTERNAL_H */
