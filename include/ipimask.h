/* SPDX-License-Identifier: MIT */
/*
 * ipimask.h - IPI-avoidance primitives for user-space runtimes.
 *
 * libipimask makes other threads of the process do something (run a function,
 * execute a memory barrier, drop cached entries, give back cached objects)
 * while disturbing as few threads as possible: a busy-polling thread picks
 * its work up in its loop, a blocked ("offline") thread is never woken, and
 * only a running thread that does not poll is interrupted, by one coalesced
 * per-thread signal.
 *
 * Conventions
 *   - Functions that can fail return 0 (or a count >= 0) on success and a
 *     negative errno on failure.  They never report through errno, and they
 *     preserve errno on success.
 *   - Before ipm_init() (and after ipm_fini()) every function that returns
 *     int returns -EPERM, functions returning a pointer return NULL, and void
 *     functions do nothing.
 *   - A "slot" is the small integer a registered thread is known by
 *     (0 .. max_threads-1), reused after the thread unregisters.
 *   - Unless said otherwise, functions are MT-safe and NOT async-signal-safe:
 *     do not call them from a signal handler, nor from an ipm_func_t running
 *     on a thread in IPM_MODE_SIGNAL (which runs inside a signal handler).
 *
 * Copyright (c) 2026 The libipimask authors.
 */
#ifndef IPIMASK_H
#define IPIMASK_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define IPM_EXPORT __attribute__((visibility("default")))
#else
#define IPM_EXPORT
#endif

/* ------------------------------------------------------------------------ */
/* Callback types                                                            */
/* ------------------------------------------------------------------------ */

/**
 * ipm_func_t: the function a call runs for each target thread.
 * @slot: the target thread this invocation is for.
 * @info: the caller's pointer, passed unchanged.
 *
 * Where it runs: on a thread in IPM_MODE_SIGNAL, inside the library's signal
 * handler, so it must be async-signal-safe, short and non-blocking (no
 * malloc, no locks the interrupted code may hold, no ipm_* call other than
 * those documented async-signal-safe).  On a thread in IPM_MODE_POLL, inside
 * ipm_poll() (ordinary context), unless the thread missed its poll deadline
 * and was signalled.  For an offline target, on the caller's thread when the
 * call has IPM_REMOTE, else on the target at ipm_thread_online().  Write it
 * for the strictest of these contexts that your threads can be in.
 */
typedef void (*ipm_func_t)(int slot, void *info);

/**
 * ipm_cond_t: decides whether a thread is a target at all.
 * @slot: the candidate thread.
 * @info: the caller's pointer.
 *
 * Evaluated by the caller, on the caller's thread, before anyone is
 * interrupted: a thread for which it returns false is never disturbed.  It
 * runs inside an RCU read-side critical section: it must not block, must not
 * call ipm_thread_unregister() or ipm_fini(), and should be fast (it is called
 * once per candidate).
 */
typedef bool (*ipm_cond_t)(int slot, void *info);

/* ------------------------------------------------------------------------ */
/* Library                                                                   */
/* ------------------------------------------------------------------------ */

/** Configuration flag: never use membarrier(2) (testing, seccomp sandboxes). */
#define IPM_CFG_NO_MEMBARRIER	(1u << 0)
/**
 * Configuration flag: never signal a thread whose affinity (sampled at
 * registration and at ipm_thread_set_mode()) lies entirely within the CPUs
 * listed in /sys/devices/system/cpu/isolated or nohz_full.  Its work waits
 * for its next ipm_poll() or ipm_thread_online(); a missed poll deadline is
 * counted in `escalations` but not signalled.
 */
#define IPM_CFG_NO_SIGNAL_ISOLATED (1u << 1)

/** Feature bits returned by ipm_features(). */
#define IPM_FEAT_MEMBARRIER		(1u << 0) /* PRIVATE_EXPEDITED usable */
#define IPM_FEAT_MEMBARRIER_CPU		(1u << 1) /* ..._RSEQ + FLAG_CPU usable */
#define IPM_FEAT_MEMBARRIER_CPUMASK	(1u << 2) /* kernel/ FLAG_CPUMASK usable */
#define IPM_FEAT_NUMA			(1u << 3) /* libnuma reports NUMA */

struct ipm_config {
	int      signo;            /* signal for interruptions; 0 = a free real-time signal chosen by the library */
	unsigned max_threads;      /* 0 = 1024 */
	unsigned poll_deadline_us; /* a polling thread that has not polled for this long is signalled; 0 = 1000 */
	unsigned flags;            /* IPM_CFG_* */
};

/**
 * ipm_init: initialise the library for this process.
 * @cfg: configuration, or NULL for every default.
 *
 * Installs the signal handler (SA_SIGINFO | SA_RESTART; it saves and
 * restores errno), probes and registers membarrier(2) (registering is cheap
 * while the process has one thread, and costs an interruption of every CPU
 * running it later), reads the CPU -> NUMA node table and the isolated
 * CPUs.  Call it once, before the threads that will register are created,
 * from ordinary context.  The library creates one thread of its own, lazily:
 * the escalation watchdog (see ipm_thread_set_mode()); ipm_fini() joins it.
 *
 * Return: 0; -EALREADY when already initialised; -EBUSY when @cfg->signo
 * already has a disposition that is not the default (someone else's handler,
 * or SIG_IGN), or when signo is 0 and no real-time signal is free; -EINVAL
 * for a signal that cannot be caught (SIGKILL, SIGSTOP, out of range), for
 * unknown @cfg->flags, or for max_threads above 65536; -ENOMEM.
 * MT-safe (a concurrent second call gets -EALREADY); not async-signal-safe.
 */
IPM_EXPORT int ipm_init(const struct ipm_config *cfg);

/**
 * ipm_fini: undo ipm_init().
 *
 * Restores the signal's previous disposition and frees the library's state.
 * Call it after every other thread has unregistered; a request still pending
 * for a thread that is registered at this point is completed with
 * -ECANCELED (its waiter sees that), never left hanging.  The caller's own
 * registration is undone first.  Not async-signal-safe; must not race with
 * other ipm_* calls.
 */
IPM_EXPORT void ipm_fini(void);

/**
 * ipm_features: IPM_FEAT_* bits probed at ipm_init().  0 before ipm_init().
 * MT-safe, async-signal-safe.
 */
IPM_EXPORT unsigned ipm_features(void);

/**
 * ipm_signo: the signal number the library interrupts threads with,
 * or -EPERM before ipm_init().  MT-safe, async-signal-safe.
 */
IPM_EXPORT int ipm_signo(void);

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

/** Delivery modes for ipm_thread_set_mode(). */
#define IPM_MODE_SIGNAL	0 /* interrupted by a signal (default) */
#define IPM_MODE_POLL	1 /* calls ipm_poll() in its loop; signalled only past its deadline */

/**
 * ipm_thread_register: make the calling thread a possible target.
 *
 * Gives the thread the lowest free slot, unblocks the library's signal in
 * the thread's signal mask, and arms automatic unregistration at thread
 * exit.  The thread starts online, in IPM_MODE_SIGNAL.
 *
 * Return: the caller's slot; -EEXIST when already registered; -ENOSPC when
 * max_threads threads are registered; -ENOMEM; -EPERM before ipm_init().
 * MT-safe; not async-signal-safe.
 */
IPM_EXPORT int ipm_thread_register(void);

/**
 * ipm_thread_unregister: the calling thread stops being a target.
 *
 * Every request already addressed to the caller is run first, on the
 * caller, so nothing is lost; requests sent while it unregisters are run
 * too.  The slot becomes free for reuse only when no sender can still see
 * the old registration (after an RCU grace period), so a late sender never
 * reaches the next owner of the slot with the old owner's request.
 * An offline caller is brought online first.  Called automatically when a
 * registered thread exits.
 *
 * Return: 0; -ENOENT when the caller is not registered; -EPERM.
 * Not async-signal-safe; do not call it from an ipm_func_t or ipm_cond_t.
 */
IPM_EXPORT int ipm_thread_unregister(void);

/**
 * ipm_self: the caller's slot, or -ENOENT when it is not registered
 * (-EPERM before ipm_init()).  MT-safe, async-signal-safe.
 */
IPM_EXPORT int ipm_self(void);

/**
 * ipm_thread_set_mode: choose how the calling thread receives requests.
 * @mode: IPM_MODE_SIGNAL or IPM_MODE_POLL.
 *
 * In IPM_MODE_POLL senders never signal the thread while it keeps calling
 * ipm_poll(); work that waits longer than poll_deadline_us is delivered by
 * one signal instead (an "escalation"): by the caller when it waits, else
 * by the library's watchdog thread (started by the first request nobody
 * waits for; it sleeps while no poller has work queued).  Switching to
 * IPM_MODE_SIGNAL runs what is pending first.  Also re-samples the
 * thread's CPU affinity (call it again after changing the affinity).
 *
 * Return: 0; -EINVAL for an unknown mode; -ENOENT when not registered;
 * -EPERM.  Not async-signal-safe.
 */
IPM_EXPORT int ipm_thread_set_mode(int mode);

/**
 * ipm_poll: run the calling thread's pending requests.
 *
 * Costs one load of a cache line the thread already holds when nothing is
 * pending.  The functions run in ordinary context, in the order they were
 * sent by each sender.
 *
 * Return: how many functions ran (0 when not registered or before init).
 * Not async-signal-safe.  May be called in any mode.
 */
IPM_EXPORT unsigned ipm_poll(void);

/**
 * ipm_thread_offline: the calling thread is about to block.
 *
 * Until ipm_thread_online() the thread is never signalled: requests for it
 * wait (and run at ipm_thread_online()), or run on their sender's thread on
 * its behalf when sent with IPM_REMOTE.  The thread must not touch the data
 * its requests operate on while offline.  Nesting is not counted: a second
 * call does nothing.  Not async-signal-safe.
 */
IPM_EXPORT void ipm_thread_offline(void);

/**
 * ipm_thread_online: the calling thread is back from blocking.
 *
 * Waits for a sender that is running a request on its behalf (IPM_REMOTE) to
 * finish, then runs the requests deferred while it was offline, on itself,
 * in ordinary context.  Does nothing when the thread is online or not
 * registered.  Not async-signal-safe.
 */
IPM_EXPORT void ipm_thread_online(void);

/* ------------------------------------------------------------------------ */
/* Masks                                                                     */
/* ------------------------------------------------------------------------ */

/** A set of slots, sized for the max_threads of the ipm_init() it was made under. */
typedef struct ipm_mask ipm_mask_t;

/** ipm_mask_alloc: an empty mask; NULL when out of memory or before init. */
IPM_EXPORT ipm_mask_t *ipm_mask_alloc(void);
/** ipm_mask_free: free @m (NULL is allowed). */
IPM_EXPORT void ipm_mask_free(ipm_mask_t *m);
/** ipm_mask_set: add @slot to @m; a slot out of range is ignored. */
IPM_EXPORT void ipm_mask_set(ipm_mask_t *m, int slot);
/** ipm_mask_clear: remove @slot from @m; a slot out of range is ignored. */
IPM_EXPORT void ipm_mask_clear(ipm_mask_t *m, int slot);
/** ipm_mask_test: whether @slot is in @m (false for NULL or out of range). */
IPM_EXPORT bool ipm_mask_test(const ipm_mask_t *m, int slot);
/** ipm_mask_zero: empty @m. */
IPM_EXPORT void ipm_mask_zero(ipm_mask_t *m);
/** ipm_mask_fill: set @m to every slot registered now (replaces its contents). */
IPM_EXPORT void ipm_mask_fill(ipm_mask_t *m);
/** ipm_mask_weight: how many slots @m holds (0 for NULL). */
IPM_EXPORT unsigned ipm_mask_weight(const ipm_mask_t *m);
/** ipm_mask_next: the first slot > @prev in @m, or -1; @prev = -1 starts. */
IPM_EXPORT int ipm_mask_next(const ipm_mask_t *m, int prev);
/**
 * ipm_mask_set_node: add to @m the registered threads last seen on NUMA @node.
 * A thread's node is sampled when it registers, sets its mode, and every
 * 1024 requests it polls (sched_getcpu() can be a system call; the
 * online/offline and poll fast paths do not pay for it).
 * Return: how many slots were added; -EINVAL for a NULL mask or a node < 0;
 * -EPERM before init.
 */
IPM_EXPORT int ipm_mask_set_node(ipm_mask_t *m, int node);

/** Mask functions are MT-safe on distinct masks; a mask is not locked. */

/* ------------------------------------------------------------------------ */
/* Running functions on other threads                                        */
/* ------------------------------------------------------------------------ */

/** Call flags. */
#define IPM_WAIT	(1u << 0) /* return when func has finished on every target */
#define IPM_SELF	(1u << 1) /* the caller is a target too if the mask holds it (run first, directly) */
#define IPM_REMOTE	(1u << 2) /* func may run on the caller on behalf of an offline target */

/**
 * ipm_on_each_thread_mask: run @func on every registered thread in @mask.
 * @mask:  the targets; slots that are not registered are skipped.
 * @func:  see ipm_func_t for where it runs.
 * @info:  passed to @func.
 * @flags: IPM_WAIT, IPM_SELF, IPM_REMOTE.
 *
 * Each target gets the request on its own lock-free list; a signal is sent
 * only to a target in IPM_MODE_SIGNAL that is online and had nothing
 * pending (a burst of requests to one thread costs one signal).  Polling
 * targets pick the request up in ipm_poll(); offline targets run it at
 * ipm_thread_online(), or the caller runs it for them with IPM_REMOTE.
 * Without IPM_SELF the caller is never a target.
 *
 * Waiting (IPM_WAIT) spins briefly, then sleeps on a futex: it never burns a
 * CPU for long.  A registered caller keeps serving requests addressed to
 * itself while it waits, so two threads calling each other cannot deadlock.
 * A waiter escalates to a signal any polling target that has not picked the
 * request up within poll_deadline_us.  With IPM_WAIT and an offline target
 * without IPM_REMOTE, the call returns when that target comes online.
 * Targets that register during the call are not targets; a target that
 * unregisters during the call runs the request on its way out.
 *
 * Return: the number of threads the call was delivered to (>= 0); -EINVAL
 * for a NULL @mask or @func or unknown @flags; -ENOMEM when the request
 * cannot be allocated (then no target got it); -EPERM before init.
 * MT-safe; not async-signal-safe (a polling thread may call it from a
 * function run by ipm_poll()).
 */
IPM_EXPORT int ipm_on_each_thread_mask(const ipm_mask_t *mask, ipm_func_t func,
				       void *info, unsigned flags);

/**
 * ipm_on_each_thread_cond: ipm_on_each_thread_cond_mask() over every
 * registered thread.
 */
IPM_EXPORT int ipm_on_each_thread_cond(ipm_cond_t cond, ipm_func_t func,
				       void *info, unsigned flags);

/**
 * ipm_on_each_thread_cond_mask: run @func on the threads of @mask for which
 * @cond holds.
 * @cond: evaluated by the caller for each registered candidate, before
 *        anyone is interrupted (see ipm_cond_t); cond-false threads are never
 *        disturbed and are counted in cond_skipped.
 * @mask: candidates, or NULL for every registered thread.
 *
 * The target set is built in caller-local storage; when that cannot be
 * allocated, the call falls back to every candidate in @mask without
 * evaluating @cond, and counts a mask_fallback (never an error).
 * Otherwise as ipm_on_each_thread_mask().
 *
 * Return: as ipm_on_each_thread_mask(); -EINVAL for a NULL @cond or @func.
 */
IPM_EXPORT int ipm_on_each_thread_cond_mask(ipm_cond_t cond, ipm_func_t func,
					    void *info, unsigned flags,
					    const ipm_mask_t *mask);

/**
 * ipm_on_thread: run @func on the thread of @slot (the one-target fast path).
 *
 * Return: 1 when delivered; 0 when @slot is the caller and IPM_SELF is not
 * given; -ENOENT when @slot is not registered; -EINVAL for a slot out of
 * range, a NULL @func or unknown flags; -ENOMEM; -EPERM.
 * Otherwise as ipm_on_each_thread_mask().
 */
IPM_EXPORT int ipm_on_thread(int slot, ipm_func_t func, void *info, unsigned flags);

/** An asynchronous request, owned by its caller; see ipm_call_async(). */
struct ipm_req;

/**
 * ipm_call_async: send like ipm_on_each_thread_mask() without waiting.
 * @req: receives the request handle (set to NULL on error).
 *
 * IPM_WAIT is not allowed here (wait with ipm_req_wait()).  The handle must
 * be given back with ipm_req_release(), before or after completion.
 *
 * Return: the number of targets; -EINVAL (also for a NULL @req or IPM_WAIT);
 * -ENOMEM; -EPERM.
 */
IPM_EXPORT int ipm_call_async(struct ipm_req **req, const ipm_mask_t *mask,
			      ipm_func_t func, void *info, unsigned flags);

/**
 * ipm_req_wait: wait until every target of @req has finished.
 * @timeout_ns: < 0 waits forever; 0 only checks.
 *
 * Spins briefly, then sleeps on a futex; serves the caller's own requests
 * meanwhile and escalates late polling targets, like IPM_WAIT.
 *
 * Return: 0 when complete; -ETIMEDOUT; -ECANCELED when a target could not run
 * it because the library was finalised; -EINVAL for a NULL @req.
 * Several threads may wait on the same request.  Not async-signal-safe.
 */
IPM_EXPORT int ipm_req_wait(struct ipm_req *req, int64_t timeout_ns);

/** ipm_req_done: whether every target has finished (true for NULL). Async-signal-safe. */
IPM_EXPORT bool ipm_req_done(const struct ipm_req *req);

/**
 * ipm_req_release: give back the handle; allowed before completion (the
 * request then completes on its own and is freed afterwards).  NULL is
 * allowed.  Not async-signal-safe.
 */
IPM_EXPORT void ipm_req_release(struct ipm_req *req);

/* ------------------------------------------------------------------------ */
/* Barriers                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * ipm_barrier_mask: a memory barrier on other threads.
 * @mask: the threads, or NULL for every registered thread.
 *
 * On return every thread in @mask has executed a full memory barrier after
 * the call began, or was not running in between (a context switch implies
 * one).  Uses membarrier(2) when available, the signal path otherwise.
 * Polling and offline threads are never interrupted for it.
 *
 * Return: 0; -EINVAL for a mask of another size; -ENOMEM; -EPERM.
 * Not async-signal-safe.
 */
IPM_EXPORT int ipm_barrier_mask(const ipm_mask_t *mask);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

struct ipm_stats {        /* process totals since ipm_init */
	uint64_t calls, deliveries, cond_skipped;
	uint64_t signals_sent, signals_coalesced, polled, remote_run, deferred, escalations;
	uint64_t membarriers, mask_fallbacks;
	uint64_t batches, batch_keys, full_flushes;
	uint64_t drains, drained_objects;
};

struct ipm_thread_stats { /* one thread */
	uint64_t interrupts;  /* signals it handled */
	uint64_t polled, deferred, remote_run;
};

/**
 * ipm_stats_get: process totals since ipm_init().
 *
 * Counters are kept per thread and summed here, so the total is a snapshot
 * that may be a few events behind concurrent activity.
 * Return: 0; -EINVAL for NULL; -EPERM.  MT-safe; not async-signal-safe.
 */
IPM_EXPORT int ipm_stats_get(struct ipm_stats *out);

/**
 * ipm_thread_stats_get: the counters of the thread registered in @slot.
 * interrupts: signals it handled; polled: functions ipm_poll() ran;
 * deferred: functions run at ipm_thread_online(); remote_run: functions run
 * for it by other threads while it was offline.
 * Return: 0; -EINVAL for NULL or a slot out of range; -ENOENT when @slot is
 * not registered; -EPERM.  MT-safe.
 */
IPM_EXPORT int ipm_thread_stats_get(int slot, struct ipm_thread_stats *out);

/* ------------------------------------------------------------------------ */
/* Deferred batched invalidation                                             */
/* ------------------------------------------------------------------------ */

/*
 * Threads cache entries of shared data (routes, flow lookups, object maps,
 * JIT code pointers).  A *domain* is one such piece of shared data: a thread
 * that may hold entries of it calls ipm_domain_enter() (the user-space
 * mm_cpumask), and a writer that changed the shared truth collects the keys
 * of what changed in a *batch* and flushes it: every thread of the domain is
 * then reached at most once per flush, however many keys the flush carries
 * (the batched TLB flush: many pages, one IPI).
 *
 * Keys a flush sends to a thread are merged into that thread's pending set,
 * which is bounded: at most the capacity of the batch that adds to it; past
 * that the set collapses into one full flush (nkeys == 0).  At most one
 * delivery per thread and domain is outstanding for deferred flushes, so a
 * stream of flushes to a thread that has not run the first costs nothing
 * more than merging keys.
 *
 * Statistics (struct ipm_stats): batches counts flushes of non-empty
 * batches; batch_keys the ipm_batch_add() calls they carried (duplicates
 * and keys past the capacity included); full_flushes the flushes that were
 * past their capacity plus the per-thread pending sets that collapsed.  The
 * interrupts a flush caused show in each thread's ipm_thread_stats.
 */

/** Largest capacity of a batch, and the size of a thread's pending set. */
#define IPM_BATCH_MAX_CAPACITY	64

struct ipm_domain;
struct ipm_batch;

/**
 * ipm_inval_t: drop cached entries of a domain.
 * @slot:  the thread whose entries are to be dropped.
 * @keys:  the keys to drop; NULL when @nkeys is 0.
 * @nkeys: how many keys; 0 means: drop everything cached of the domain.
 * @ctx:   the pointer given to ipm_domain_create().
 *
 * Where it runs: like an ipm_func_t (see there) - on the thread of @slot,
 * inside the library's signal handler for a thread in IPM_MODE_SIGNAL,
 * inside ipm_poll() for a polling thread, at ipm_thread_online() for a thread
 * that was offline; or on a flushing thread on behalf of an offline thread
 * (IPM_WAIT flushes), while that thread is guaranteed not to run.  So it must
 * be async-signal-safe, short and non-blocking, and must work on the cache
 * of @slot, not on "the calling thread's" cache.  It must not call any
 * ipm_domain_* or ipm_batch_* function.  It is never run twice at once for
 * the same slot and domain, not even nested on one thread; it may interrupt
 * a call for another slot on the same thread (a flusher that runs it for an
 * offline thread, signalled for its own slot).  Dropping more than asked is
 * always allowed; a thread may see a key it never cached, or a key again
 * after it left and re-entered.
 */
typedef void (*ipm_inval_t)(int slot, const uint64_t *keys, unsigned nkeys, void *ctx);

/**
 * ipm_domain_create: a new domain of cached entries.
 * @inval: drops entries on a thread; see ipm_inval_t.  Required.
 * @ctx:   passed to @inval.
 *
 * A domain belongs to the ipm_init() it was created under; after ipm_fini()
 * only ipm_domain_destroy() may be called on it.
 *
 * Return: the domain; NULL for a NULL @inval, when out of memory, or before
 * ipm_init().  MT-safe; not async-signal-safe.
 */
IPM_EXPORT struct ipm_domain *ipm_domain_create(ipm_inval_t inval, void *ctx);

/**
 * ipm_domain_destroy: free a domain.
 * @d: the domain (NULL is allowed).
 *
 * Call it after every batch of @d was destroyed and when no thread uses
 * entries of @d any longer; it must not race with ipm_domain_enter(),
 * ipm_domain_leave() or a flush of @d.  Pending invalidations are discarded.
 * On return no @inval of @d runs nor will run, so @ctx may be freed.
 * Deliveries still queued for threads (an offline thread that has not come
 * back yet) keep a little memory until they run, and then do nothing.
 * Not async-signal-safe; do not call it from @inval.
 */
IPM_EXPORT void ipm_domain_destroy(struct ipm_domain *d);

/**
 * ipm_domain_enter: the calling thread may cache entries of @d from now on.
 * @d: the domain.
 *
 * Makes the caller a target of every later flush of @d.  Call it before the
 * caller looks anything up in the shared truth to cache it (it ends with a
 * full memory barrier the first time, pairing with the one that begins every
 * flush: a flusher either sees the caller as a member, or the caller's
 * lookup sees the flusher's update).  Cheap enough to call on every lookup:
 * when the caller is already a member it costs a few plain loads, no atomic
 * read-modify-write and no barrier.
 *
 * The caller must be registered (ipm_thread_register()); a call from an
 * unregistered thread, with a NULL @d, with a domain of an earlier
 * ipm_init(), or before ipm_init() is ignored - such a thread must not
 * cache entries of @d, since no flush reaches it.  A thread stops being a
 * member at ipm_domain_leave() and when it unregisters or exits.
 * If its pending set cannot be allocated the thread still becomes a member
 * and receives full flushes (nkeys == 0) instead of keys.  Call it while
 * online (not between ipm_thread_offline() and ipm_thread_online(): an
 * offline thread does not touch its cache).  In a fork() child, only the
 * forking thread stays a member (of the domains it was a member of).
 * MT-safe; not async-signal-safe; do not call it from @inval.
 */
IPM_EXPORT void ipm_domain_enter(struct ipm_domain *d);

/**
 * ipm_domain_leave: the calling thread dropped its entries of @d.
 * @d: the domain.
 *
 * The caller must have dropped every entry of @d it caches before the call;
 * it is no longer a target of flushes of @d.  Invalidations pending for it
 * are discarded, not run (it holds nothing they could apply to); a flush
 * racing with the call may still run @inval for it once, harmlessly.  A
 * thread that unregisters or exits leaves every domain the same way: its
 * pending invalidations are discarded, so it must not use its entries after
 * ipm_thread_unregister() (a flush waiting for it returns once it started
 * unregistering).
 * Ignored like ipm_domain_enter() (and when the caller is not a member).
 * Call it while online.
 * MT-safe; not async-signal-safe; do not call it from @inval.
 */
IPM_EXPORT void ipm_domain_leave(struct ipm_domain *d);

/**
 * ipm_batch_create: a batch of keys to invalidate in @d.
 * @d:        the domain.
 * @capacity: keys the batch carries, 1 .. IPM_BATCH_MAX_CAPACITY; past it a
 *            flush becomes a full flush (like the kernel's ceiling on
 *            single-page TLB flushes).
 *
 * A batch is used by one thread at a time (it is not locked); threads that
 * flush the same domain concurrently each use their own batch.
 *
 * Return: the batch; NULL for a NULL or stale @d, a capacity of 0 or above
 * IPM_BATCH_MAX_CAPACITY, when out of memory, or before ipm_init().
 * Not async-signal-safe.
 */
IPM_EXPORT struct ipm_batch *ipm_batch_create(struct ipm_domain *d, unsigned capacity);

/**
 * ipm_batch_add: add @key to the batch; nobody is disturbed.
 * @b:   the batch.
 * @key: any value meaningful to the domain's ipm_inval_t.
 *
 * A key already in the batch is not added twice.  Past the capacity the
 * batch becomes a full flush (it keeps counting keys for the statistics).
 *
 * Return: 0; -EINVAL for a NULL @b; -EPERM before ipm_init().
 * Not async-signal-safe (the batch is not locked).
 */
IPM_EXPORT int ipm_batch_add(struct ipm_batch *b, uint64_t key);

/**
 * ipm_batch_add_sync: add @key and flush now, waiting.
 * @b:   the batch.
 * @key: an entry that must not stay cached even briefly (the dirty-PTE case
 *       of batched TLB flushing: writes through a stale entry would be lost).
 *
 * Adds @key, then ipm_batch_flush(@b, IPM_WAIT): the keys added before go
 * with it in the same delivery.
 *
 * Return: as ipm_batch_flush().
 */
IPM_EXPORT int ipm_batch_add_sync(struct ipm_batch *b, uint64_t key);

/**
 * ipm_batch_flush: send the batch to every thread of its domain; empty it.
 * @b:     the batch.
 * @flags: 0, IPM_WAIT, IPM_REMOTE.
 *
 * Each member thread gets the keys merged into its pending set and at most
 * one delivery for this flush, whatever the number of keys; its @inval then
 * runs once with its whole set.  The caller, when it is a member, runs its
 * own @inval first, directly.
 *
 * With IPM_WAIT: on return no member thread holds any key of the flush (or
 * any entry at all, for a full flush): running signal-mode threads were
 * interrupted (one coalesced signal each), polling threads applied the keys
 * in ipm_poll() (or by signal, past poll_deadline_us), offline threads had
 * @inval run for them by the caller (IPM_REMOTE semantics).  The caller
 * serves requests addressed to itself while it waits.
 *
 * Without IPM_WAIT (deferred): polling threads apply at their next
 * ipm_poll() (one that misses poll_deadline_us is signalled by the
 * library's watchdog), offline threads at ipm_thread_online() (or now, by the caller,
 * with IPM_REMOTE), running signal-mode threads get one coalesced signal; a
 * thread that already has a delivery outstanding for the domain gets no new
 * one (its pending set grows, then collapses to a full flush).
 *
 * Threads that enter @d during the flush may or may not be targets (they
 * have not cached the flushed entries yet, see ipm_domain_enter()); threads
 * that leave or exit during it stop being targets and lose nothing.
 * Several threads may flush the same domain concurrently (with their own
 * batches).  An empty batch returns 0 and disturbs nobody.  A caller that
 * is a member must be online (its own @inval runs on it, directly).
 *
 * Return: the number of threads reached, the caller included when it is a
 * member (>= 0); -EINVAL for a NULL @b, unknown @flags, or a batch whose
 * domain belongs to an earlier ipm_init(); -ENOMEM when a delivery could not
 * be allocated (the batch keeps its keys: flush again); -ECANCELED when
 * ipm_fini() ran meanwhile; -EPERM before ipm_init().
 * MT-safe on distinct batches; not async-signal-safe; do not call it from
 * @inval.
 */
IPM_EXPORT int ipm_batch_flush(struct ipm_batch *b, unsigned flags);

/**
 * ipm_batch_destroy: flush what is left (with IPM_WAIT), then free @b.
 * NULL is allowed.  Before ipm_init() (or after ipm_fini()) it only frees.
 * Not async-signal-safe.
 */
IPM_EXPORT void ipm_batch_destroy(struct ipm_batch *b);
/* Remote-drainable per-thread caches                                        */
/* ------------------------------------------------------------------------ */

/*
 * A pcache keeps objects of a user backing store (a pool of packet buffers,
 * say) in small per-thread caches, like the kernel's per-CPU page lists:
 * ipm_pcache_get() and ipm_pcache_put() work on the calling thread's cache
 * and reach the store only in batches.  Any thread can empty the caches of
 * other threads with ipm_pcache_drain() (for instance before resizing or
 * freeing the pool): it takes each cache's lock itself, so the owners are
 * never interrupted, signalled or woken, and caches that are empty are
 * skipped without touching their lock.  Nothing is lost: objects of a thread
 * that unregisters or exits go back to the store, ipm_pcache_destroy()
 * gives back everything, and an object is never handed out twice.
 *
 * Statistics (struct ipm_stats): drains counts the per-thread caches that
 * ipm_pcache_drain() and ipm_pcache_drain_node() emptied (empty caches,
 * skipped, are not counted), drained_objects the objects they gave back.
 * Objects given back by exiting threads and by ipm_pcache_destroy() are not
 * counted.
 *
 * fork(): the child keeps every cache with its objects (drain or destroy
 * them there as usual); objects the parent's other threads were holding are
 * not in the child's pool.  The backing store's own locks are the
 * application's to handle across fork().
 */

/**
 * struct ipm_pcache_ops: the backing store of a pcache.
 * @refill:  store up to @n objects in @objs[0 .. n) and return how many
 *           (0 when the store is empty; never more than @n).
 * @release: take back the @n objects of @objs (they are the caller's no
 *           more).
 *
 * Both are called with @n <= the pcache's @batch (refill for a single
 * object, with @n = 1, on behalf of an unregistered caller), from ordinary
 * context, on the thread that called get/put, drain, destroy or
 * ipm_thread_unregister() (or exited), possibly several at once: they must be
 * MT-safe.  They may block briefly (take a mutex).  They must not call
 * ipm_pcache_*() on the same pcache, create or destroy a pcache, or call
 * ipm_thread_unregister(); a drain or an exiting thread holds internal
 * mutexes while it calls @release.  They are never called with a per-thread
 * cache lock held, so a drainer never waits for them.
 */
struct ipm_pcache_ops {
	unsigned (*refill)(void *ctx, void **objs, unsigned n);
	void     (*release)(void *ctx, void *const *objs, unsigned n);
};

/** A set of remote-drainable per-thread caches; see ipm_pcache_create(). */
struct ipm_pcache;

/**
 * ipm_pcache_create: a pcache over the backing store @ops / @ctx.
 * @ops:   the store's callbacks (copied); both must be set.
 * @ctx:   passed to the callbacks.
 * @high:  the most objects one thread's cache holds: a put that would take
 *         a cache above @high releases @batch objects to the store.
 * @batch: how many objects a refill asks for, and how many a full cache
 *         releases; 1 <= @batch <= @high.
 *
 * A thread's cache is allocated lazily by the thread itself, on its first
 * get or put, on its NUMA node (numa_alloc_local() when IPM_FEAT_NUMA, else
 * first touch); it holds at most @high objects.
 *
 * Return: the pcache; NULL for NULL @ops or callbacks, @batch == 0, @batch >
 * @high, @high > 2^24, out of memory, or before ipm_init().
 * MT-safe; not async-signal-safe.
 */
IPM_EXPORT struct ipm_pcache *ipm_pcache_create(const struct ipm_pcache_ops *ops,
						void *ctx, unsigned high,
						unsigned batch);

/**
 * ipm_pcache_destroy: release every cached object to the store, free @pc.
 *
 * Call it when no thread uses @pc any more (no get or put running or to
 * come); drains and exiting threads still running are waited for.  Works
 * after ipm_fini() too (the caches of threads that were still registered at
 * ipm_fini() are released here; until then they stay in @pc, and a thread
 * given the same slot under a later ipm_init() uses them).  NULL is
 * ignored.  Not async-signal-safe.
 */
IPM_EXPORT void ipm_pcache_destroy(struct ipm_pcache *pc);

/**
 * ipm_pcache_get: an object from the calling thread's cache.
 *
 * The fast path costs one uncontended compare-and-swap on the caller's own
 * cache line and no system call.  An empty cache is refilled with up to
 * @batch objects first (the refill callback runs without the cache lock:
 * drainers never wait for it).  A caller that is not registered (or whose
 * cache cannot be allocated) goes straight to the store, one object at a
 * time.  A drainer holding the cache's lock makes the caller spin for the
 * time of one copy of at most @high pointers.
 *
 * Return: the object; NULL when the store is empty (refill returned 0) or
 * for a NULL @pc.
 * MT-safe (each thread works on its own cache); NOT async-signal-safe: do
 * not call it from a signal handler or from an ipm_func_t run in
 * IPM_MODE_SIGNAL, nor from the pcache's own callbacks.
 */
IPM_EXPORT void *ipm_pcache_get(struct ipm_pcache *pc);

/**
 * ipm_pcache_put: give @obj back to the calling thread's cache.
 *
 * @obj must not be NULL, must have come from @pc's store (through any
 * thread's get, or the store itself) and must not have been put since.  A cache above @high releases its @batch most
 * recently put objects to the store (without the cache lock).  An
 * unregistered caller releases @obj to the store directly.  A NULL @pc is
 * ignored.  Same contexts as ipm_pcache_get(): NOT async-signal-safe.
 */
IPM_EXPORT void ipm_pcache_put(struct ipm_pcache *pc, void *obj);

/**
 * ipm_pcache_get_bulk: up to @n objects at once, for burst-oriented code
 * (a packet burst).
 * @objs: receives them, the most recently cached first.
 *
 * Takes the cache lock once for whatever the cache holds; the rest comes
 * straight from the store, refilled in batches of at most @batch (the cache
 * is not topped up).  Returns how many objects were stored in @objs: fewer
 * than @n only when the store ran empty; 0 for a NULL @pc or @objs.
 * Same contexts as ipm_pcache_get(): NOT async-signal-safe.
 */
IPM_EXPORT unsigned ipm_pcache_get_bulk(struct ipm_pcache *pc, void **objs, unsigned n);

/**
 * ipm_pcache_put_bulk: give @n objects back at once.
 *
 * Takes the cache lock once and caches as many as fit under @high; the rest
 * go back to the store in batches of at most @batch, without the lock.  The
 * objects obey the rules of ipm_pcache_put().  A NULL @pc or @objs, or
 * @n == 0, does nothing.  Same contexts as ipm_pcache_get().
 */
IPM_EXPORT void ipm_pcache_put_bulk(struct ipm_pcache *pc, void *const *objs, unsigned n);

/**
 * ipm_pcache_count: how many objects the cache of @slot holds now.
 *
 * A snapshot: the owner may change it at once.  Waits for a drain of @pc in
 * progress.  Return: the count; 0 for a slot without a cache, out of range,
 * or a NULL @pc.  MT-safe; not async-signal-safe.
 */
IPM_EXPORT unsigned ipm_pcache_count(const struct ipm_pcache *pc, int slot);

/**
 * ipm_pcache_drain: empty the caches of the threads in @mask, from the
 * calling thread.
 * @mask: the slots, or NULL for every thread that has a cache.
 *
 * For each slot, reads the cache's count and skips it when 0 without
 * touching its lock; otherwise takes the cache's lock, moves the objects
 * out, drops the lock and releases them to the store in batches of @batch.
 * The owners are never signalled, interrupted or woken: their
 * ipm_thread_stats and the process's signals_sent do not change.  An owner
 * inside get/put at that moment holds the lock for a few instructions: the
 * drainer spins briefly (and the owner's next get/put defers to it for a
 * bounded time); an owner that was preempted while holding its lock is
 * left for later, the other caches are drained, and the drainer comes back
 * after short sleeps: a drain waits for such an owner to be scheduled
 * again (forever, if it is stopped inside get/put), never for anything
 * else, and never for a callback.  Every object put before the
 * call began (its put happens-before the call) is released, unless its
 * owner took it out again meanwhile; objects put during the call may stay
 * cached.  Drains of the same @pc are serialised.  May be called by any
 * thread, registered or not, including an owner (its own cache is drained
 * like the others).  Counts drains and drained_objects.
 *
 * Return: how many objects were released (0 for a NULL @pc).
 * MT-safe; not async-signal-safe; not from the pcache's callbacks.
 */
IPM_EXPORT unsigned ipm_pcache_drain(struct ipm_pcache *pc, const ipm_mask_t *mask);

/**
 * ipm_pcache_drain_node: ipm_pcache_drain() for the registered threads last
 * seen on NUMA @node (see ipm_mask_set_node() for when a thread's node is
 * sampled).  Allocates nothing.
 *
 * Return: how many objects were released; 0 for a NULL @pc, a @node < 0, or
 * before ipm_init().  Same contexts as ipm_pcache_drain().
 */
IPM_EXPORT unsigned ipm_pcache_drain_node(struct ipm_pcache *pc, int node);

#ifdef __cplusplus
}
#endif

#endif /* IPIMASK_H */
