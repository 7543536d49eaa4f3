/* SPDX-License-Identifier: MIT */
/*
 * delivery.c - how a request reaches a thread: the per-thread lock-free
 * list, the coalesced signal, polling, offline threads and remote runs.
 *
 * Every target has a lock-free stack of pending work (cds_lfs, push by any
 * sender, pop_all by whoever runs them).  A sender pushes, then reads the
 * target's state word and decides how to make it run the work:
 *
 *   state                          the sender
 *   DEAD (unregistering)           nothing: the owner drains on its way out
 *   OFFLINE, call has IPM_REMOTE   claims the thread, runs the work itself
 *   OFFLINE                        nothing: runs at ipm_thread_online()
 *   POLL, not KICKME               nothing: runs at the next ipm_poll()
 *   otherwise (SIGNAL, or KICKME)  tgkill, but only if the list was empty
 *                                  before its push (the kernel's llist_add
 *                                  rule: one signal per burst)
 *
 * Ordering scenarios.  Every state change that a sender must not miss is a
 * full-barrier RMW on the state word followed by a drain of the list; every
 * sender does a full-barrier push (cmpxchg) followed by a load of the state
 * word.  With S the sender and T the target:
 *
 * Scenario A: T goes offline (or switches to SIGNAL mode, or starts waiting
 * with KICKME, or unregisters) while S sends.
 *
 *   S                                   T
 *   push(w)        [full barrier B]     state |= OFFLINE   [full barrier A]
 *   s = state                           pop_all()  -> runs what it finds
 *
 *   If S reads the old state, S's push precedes T's RMW, so T's pop_all
 *   finds w.  If S reads the new state, S acts on it (no signal; or it
 *   claims the thread).  No work is stranded without someone responsible.
 *   Barrier A pairs with barrier B.
 *
 * Scenario B: coalescing.  S2 finds the list non-empty and sends nothing.
 *
 *   S1                                  S2
 *   push(w1): list was empty
 *   s = state: SIGNAL -> tgkill(T)      push(w2): list was not empty
 *
 *   T's handler pops both (its pop_all is after S1's push, and w2 is either
 *   popped with w1 or found by a later pop).  If T popped w1 before S2's
 *   push, S2 found the list empty and signals itself.
 *
 * Scenario C: remote run against ipm_thread_online().
 *
 *   S (IPM_REMOTE)                      T
 *   CAS(state: OFFLINE -> |CLAIMED)     CAS(state: OFFLINE -> online),
 *   func(T's slot, info)                  only when CLAIMED is clear;
 *   state &= ~CLAIMED   [release]         else sleep on the state futex
 *   futex_wake if SLEEPERS              runs kept and pending work
 *
 *   Both CASes are on the same word: T cannot be online while S runs func
 *   on its behalf, and S's writes (release) are visible to T after its CAS
 *   (acquire).  ipm_thread_offline() itself sets OFFLINE | CLAIMED while it
 *   drains the list, so a claimer never runs beside the owner.
 *
 * Scenario D: the signal handler on an offline thread does nothing: the
 * work stays for ipm_thread_online() or for a claimer (a signal sent just
 * before the thread went offline must not run beside a claimer).
 *
 * Why the library never blocks its signal around its own code: the handler
 * touches only the thread's lock-free list (each pop_all takes a disjoint
 * set of work, so a handler that interrupts ipm_poll() or
 * ipm_thread_online() halfway runs only what those have not taken), the
 * owner-only counters, and the completion words.  The one list that is not
 * lock-free, the kept list of a claimed thread, is left alone by the handler
 * while it is non-empty (online() runs it first), and unregistration clears
 * the thread's record pointer before it frees the record.  The handler
 * never allocates, never locks, and restores errno.
 */
#include <limits.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "probes.h"

__ipm_tls unsigned _ipm_tls_in_handler;

#define STATE_SPINS	200	/* cpu_relax rounds before sleeping on a state word */

static struct cds_lfs_node *reverse(struct cds_lfs_node *n)
{
	struct cds_lfs_node *prev = NULL, *next;

	while (n) {
		next = n->next;
		n->next = prev;
		prev = n;
		n = next;
	}
	return prev;
}

static inline struct ipm_work *to_work(struct cds_lfs_node *n)
{
	return container_of(n, struct ipm_work, node);
}

/*
 * Runs a FIFO chain; each node's successor is read before it completes.
 * @tctr (the owner's per-thread counter) and @pctr (a process counter, or
 * IPM_NCOUNTERS for none) count each run before its completion is visible,
 * so a waiter that sees the completion sees the counts too.
 */
static unsigned run_chain(struct cds_lfs_node *n, uint64_t *tctr, enum ipm_counter pctr)
{
	struct cds_lfs_node *next;
	unsigned k = 0;

	for (; n; n = next, k++) {
		struct ipm_work *w = to_work(n);

		next = n->next;
		IPM_PROBE2(deliver, w->slot, w->req->func);
		w->req->func(w->slot, w->req->info);
		if (tctr)
			IPM_STORE(tctr, IPM_LOAD(tctr) + 1);
		if (pctr != IPM_NCOUNTERS)
			_ipm_count(pctr, 1);
		_ipm_work_complete(w);
	}
	return k;
}

static struct cds_lfs_node *pop_fifo(struct ipm_thread *t)
{
	struct cds_lfs_head *h;

	if (IPM_LOAD(&t->pending.head) == NULL)
		return NULL;
	h = __cds_lfs_pop_all(&t->pending);	/* full barrier (xchg) */
	return h ? reverse(&h->node) : NULL;
}

unsigned _ipm_run_pending(struct ipm_thread *t)
{
	return run_chain(pop_fifo(t), NULL, IPM_NCOUNTERS);
}

/* Async-signal-safe.  Saves and restores errno. */
void _ipm_signal_handler(int sig, siginfo_t *si, void *uctx)
{
	int saved = errno;
	struct ipm_thread *t = _ipm_self();

	(void)sig;
	(void)si;
	(void)uctx;
	if (t) {
		IPM_PROBE1(signal, t->slot);
		IPM_STORE(&t->stats.interrupts, IPM_LOAD(&t->stats.interrupts) + 1);
		/* Scenario D; and ipm_thread_online() runs kept work first. */
		if (!(IPM_LOAD(&t->state) & IPM_ST_OFFLINE) && !t->kept_head) {
			_ipm_tls_in_handler++;
			_ipm_run_pending(t);
			_ipm_tls_in_handler--;
		}
	}
	errno = saved;
}

/* Whether a signal to @t is allowed at all (IPM_CFG_NO_SIGNAL_ISOLATED). */
bool _ipm_may_signal(const struct ipm_thread *t)
{
	return !(_ipm_lib.cfg_flags & IPM_CFG_NO_SIGNAL_ISOLATED) || !t->isolated;
}

/*
 * Send the signal.  The real-time queue can be full (EAGAIN): retry a
 * bounded number of times, yielding; the caller's waiter re-kicks late
 * work anyway.  Returns 0 or a negative errno.
 */
int _ipm_send_signal(struct ipm_thread *t)
{
	int saved = errno, ret = 0, tries;

	for (tries = 0; tries < 100; tries++) {
		if (syscall(SYS_tgkill, _ipm_lib.pid, t->tid, _ipm_lib.signo) == 0) {
			_ipm_count(IPM_C_SIGNALS_SENT, 1);
			ret = 0;
			break;
		}
		ret = -errno;
		if (ret != -EAGAIN)
			break;
		sched_yield();
	}
	errno = saved;
	return ret;
}

/* ------------------------------------------------------------------------ */
/* The state word: claims and sleeping on it                                 */
/* ------------------------------------------------------------------------ */

/* Wait for @t->state to change from @seen: spin, then sleep on the futex. */
static void wait_state_change(struct ipm_thread *t, uint32_t seen, unsigned *spins)
{
	uint32_t want;

	if ((*spins)++ < STATE_SPINS) {
		_ipm_cpu_relax();
		return;
	}
	want = seen | IPM_ST_SLEEPERS;
	if (!(seen & IPM_ST_SLEEPERS) &&
	    !__atomic_compare_exchange_n(&t->state, &seen, want, false,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return;
	_ipm_futex_wait(&t->state, want, -1);
}

/* Claim an offline @t for remote runs.  False when it is online or dying. */
static bool claim(struct ipm_thread *t)
{
	uint32_t s = IPM_LOAD(&t->state);
	unsigned spins = 0;

	for (;;) {
		if (!(s & IPM_ST_OFFLINE) || (s & IPM_ST_DEAD))
			return false;
		if (!(s & IPM_ST_CLAIMED)) {
			if (__atomic_compare_exchange_n(&t->state, &s, s | IPM_ST_CLAIMED,
							false, __ATOMIC_SEQ_CST,
							__ATOMIC_RELAXED))
				return true;
			continue;
		}
		wait_state_change(t, s, &spins);
		s = IPM_LOAD(&t->state);
	}
}

/* Pairs with the acquire CAS of claim() and of ipm_thread_online(). */
static void unclaim(struct ipm_thread *t)
{
	uint32_t old = __atomic_fetch_and(&t->state, ~(IPM_ST_CLAIMED | IPM_ST_SLEEPERS),
					  __ATOMIC_SEQ_CST);

	if (old & IPM_ST_SLEEPERS)
		_ipm_futex_wake(&t->state, INT_MAX);
}

static void run_remote(struct ipm_thread *t, struct ipm_work *w)
{
	IPM_PROBE2(send, w->slot, IPM_HOW_REMOTE);
	IPM_PROBE2(deliver, w->slot, w->req->func);
	w->req->func(w->slot, w->req->info);
	IPM_STORE(&t->stats.remote_run, IPM_LOAD(&t->stats.remote_run) + 1);
	_ipm_count(IPM_C_REMOTE_RUN, 1);
	_ipm_work_complete(w);
}

/*
 * Holding the claim: run the pending work that allows remote runs; keep the
 * rest, in order, for ipm_thread_online().
 */
static void sweep_claimed(struct ipm_thread *t)
{
	struct cds_lfs_node *n = pop_fifo(t), *next;

	for (; n; n = next) {
		struct ipm_work *w = to_work(n);

		next = n->next;
		if (w->req->flags & IPM_REMOTE) {
			run_remote(t, w);
			continue;
		}
		n->next = NULL;
		if (t->kept_tail)
			t->kept_tail->next = n;
		else
			t->kept_head = n;
		t->kept_tail = n;
	}
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Deliver @w to @t (inside the caller's RCU read-side critical section).
 * @w->req is set; the rest of @w is filled here.
 */
void _ipm_deliver(struct ipm_thread *t, struct ipm_work *w)
{
	unsigned flags = w->req->flags;
	uint32_t s;
	bool had;

	w->rec = t;
	w->slot = t->slot;
	w->done = 0;
	w->escalated = 0;

	if ((flags & IPM_REMOTE) && (IPM_LOAD(&t->state) & IPM_ST_OFFLINE) && claim(t)) {
		sweep_claimed(t);	/* earlier work first */
		run_remote(t, w);
		unclaim(t);
		return;
	}

	cds_lfs_node_init(&w->node);
	had = cds_lfs_push(&t->pending, &w->node);	/* full barrier B */
	s = IPM_LOAD(&t->state);

	if (s & IPM_ST_DEAD) {
		IPM_PROBE2(send, t->slot, IPM_HOW_DYING);
		return;
	}
	if (s & IPM_ST_OFFLINE) {
		if ((flags & IPM_REMOTE) && claim(t)) {
			sweep_claimed(t);
			unclaim(t);
		} else {
			IPM_PROBE2(send, t->slot, IPM_HOW_DEFERRED);
			_ipm_count(IPM_C_DEFERRED, 1);
		}
		return;
	}
	if ((s & IPM_ST_POLL) && !(s & IPM_ST_KICKME)) {
		/* Picked up at the next poll.  A waiting caller escalates a
		 * late one itself; for the others the watchdog does. */
		if (!had) {
			IPM_STORE(&t->pending_since, w->req->sent_ns);
			if (!(flags & IPM_WAIT))
				_ipm_watchdog_note();
		}
		IPM_PROBE2(send, t->slot, IPM_HOW_POLL);
		return;
	}
	if (had) {
		IPM_PROBE2(send, t->slot, IPM_HOW_COALESCED);
		_ipm_count(IPM_C_SIGNALS_COALESCED, 1);
		return;
	}
	IPM_PROBE2(send, t->slot, IPM_HOW_SIGNAL);
	if (!_ipm_may_signal(t))
		return;
	if (_ipm_send_signal(t))
		w->escalated = IPM_WORK_KICK_FAILED;	/* the waiter retries */
}

/* ipm_fini: complete everything @t holds with -ECANCELED, running nothing. */
void _ipm_cancel_pending(struct ipm_thread *t)
{
	struct cds_lfs_node *n, *next;

	for (n = t->kept_head; n; n = next) {
		next = n->next;
		to_work(n)->req->error = -ECANCELED;
		_ipm_work_complete(to_work(n));
	}
	t->kept_head = t->kept_tail = NULL;
	for (n = pop_fifo(t); n; n = next) {
		next = n->next;
		to_work(n)->req->error = -ECANCELED;
		_ipm_work_complete(to_work(n));
	}
}

/* ------------------------------------------------------------------------ */
/* The owner's side                                                          */
/* ------------------------------------------------------------------------ */

static __attribute__((noinline)) unsigned poll_slow(struct ipm_thread *t)
{
	unsigned n;

	if (!_ipm_self() || (IPM_LOAD(&t->state) & IPM_ST_OFFLINE))
		return 0;
	n = run_chain(pop_fifo(t), &t->stats.polled, IPM_C_POLLED);
	if ((IPM_LOAD(&t->stats.polled) & 1023) < n)
		_ipm_sample_cpu(t);
	return n;
}

unsigned ipm_poll(void)
{
	struct ipm_thread *t = _ipm_tls_self;

	/* The fast path: one load of a line this thread holds shared. */
	if (!t || likely(IPM_LOAD(&t->pending.head) == NULL))
		return 0;
	return poll_slow(t);
}

int ipm_thread_set_mode(int mode)
{
	struct ipm_thread *t;

	if (!_ipm_ready())
		return -EPERM;
	if (mode != IPM_MODE_SIGNAL && mode != IPM_MODE_POLL)
		return -EINVAL;
	t = _ipm_self();
	if (!t)
		return -ENOENT;
	_ipm_sample_affinity(t);
	if (mode == IPM_MODE_POLL) {
		__atomic_fetch_or(&t->state, IPM_ST_POLL, __ATOMIC_SEQ_CST);
		return 0;
	}
	/* Scenario A: work pushed while we polled had no signal. */
	__atomic_fetch_and(&t->state, ~IPM_ST_POLL, __ATOMIC_SEQ_CST);
	_ipm_run_pending(t);
	return 0;
}

void ipm_thread_offline(void)
{
	struct ipm_thread *t = _ipm_self();

	if (!t || (IPM_LOAD(&t->state) & IPM_ST_OFFLINE))
		return;
	/* Barrier A.  We hold the claim ourselves while we drain. */
	__atomic_fetch_or(&t->state, IPM_ST_OFFLINE | IPM_ST_CLAIMED, __ATOMIC_SEQ_CST);
	_ipm_run_pending(t);
	unclaim(t);
}

void ipm_thread_online(void)
{
	struct ipm_thread *t = _ipm_self();
	struct cds_lfs_node *kept;
	unsigned spins = 0;
	uint32_t s;

	if (!t)
		return;
	s = IPM_LOAD(&t->state);
	if (!(s & IPM_ST_OFFLINE))
		return;
	for (;;) {
		if (s & IPM_ST_CLAIMED) {
			/* Scenario C: a claimer runs work for us. */
			wait_state_change(t, s, &spins);
			s = IPM_LOAD(&t->state);
			continue;
		}
		if (__atomic_compare_exchange_n(&t->state, &s, s & ~IPM_ST_OFFLINE, false,
						__ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
			break;
	}
	/* Kept work is older than anything still pending: run it first.  The
	 * handler leaves the list alone while kept_head is set. */
	kept = t->kept_head;
	run_chain(kept, &t->stats.deferred, IPM_NCOUNTERS);
	t->kept_head = t->kept_tail = NULL;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	run_chain(pop_fifo(t), &t->stats.deferred, IPM_NCOUNTERS);
}

/*
 * A registered caller that waits keeps serving its own requests: in SIGNAL
 * mode the signal interrupts the futex sleep; in POLL mode it asks to be
 * signalled (KICKME) for as long as it sleeps (Scenario A, then B).
 */
void _ipm_wait_serve_begin(struct ipm_thread *me)
{
	if (!me || !(IPM_LOAD(&me->state) & IPM_ST_POLL))
		return;
	__atomic_fetch_or(&me->state, IPM_ST_KICKME, __ATOMIC_SEQ_CST);
	_ipm_run_pending(me);
}

void _ipm_wait_serve_end(struct ipm_thread *me)
{
	if (!me || !(IPM_LOAD(&me->state) & IPM_ST_KICKME))
		return;
	__atomic_fetch_and(&me->state, ~IPM_ST_KICKME, __ATOMIC_SEQ_CST);
}
