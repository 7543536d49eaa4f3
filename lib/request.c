/* SPDX-License-Identifier: MIT */
/*
 * request.c - per-caller request state: completion counting, waiting
 * (spin briefly, then futex), escalation of late pollers, and the life of
 * asynchronous requests.
 *
 * A request is owned by its caller, never by a global lock or by a per-thread
 * slot that concurrent callers fight over (seed 004's per-task state).
 * req->pending counts targets that have not finished, plus a sender's hold
 * while it still sends.  The runner of the last target wakes the waiters.
 *
 * Ordering scenario E: completion against the waiter.
 *
 *   runner (target T)                   waiter
 *   func(slot, info)
 *   w->done = 1          [release]
 *   old = pending--      [acq_rel]      v = pending           [acquire]
 *   if old was 1 and WAITERS:           if (v & COUNT) == 0: done (func's
 *     futex_wake(&pending)                effects are visible)
 *                                       else pending |= WAITERS (CAS),
 *                                            futex_wait(&pending, v|WAITERS)
 *
 *   The decrement (release) pairs with the waiter's acquire load.  A
 *   synchronous request may live on the waiter's stack: once the runner's
 *   decrement made the count 0, the runner touches nothing but the futex
 *   word's address (FUTEX_WAKE does not read it; at worst a spurious wake
 *   for whatever lives there later, which every futex user tolerates); it
 *   reads req->owner before the decrement.  valgrind flags that syscall
 *   parameter: tests/valgrind.supp names this one frame.  (A variant in
 *   which the waiter waited for the runner to finish its wake made waits
 *   under valgrind's serialised scheduler take seconds.)
 *
 * Asynchronous and fire-and-forget requests are reference counted (the
 * handle, and the targets in flight as one reference).  The last reference
 * may be dropped inside the signal handler, where free() is not allowed: the
 * request then goes on a lock-free "zombie" list that the next call from
 * ordinary context frees.
 */
#include <limits.h>
#include <string.h>

#include "internal.h"
#include "probes.h"

/*
 * How long a waiter spins before it sleeps: twice the completion time this
 * thread usually sees (a moving average), between 5 and 20 us.  A poll
 * completes in ~0.1-1 us, a signal round trip in ~10-15 us on a VM:
 * spinning a little past the usual completion saves the futex wake in the
 * target's handler and the wake-up interrupt on ours.  Never longer than
 * 20 us: a spinning waiter takes the CPU from a target that shares it (on
 * an oversubscribed machine, or under valgrind, longer spins made waits
 * orders of magnitude slower).
 */
#define WAIT_SPIN_MIN_NS	5000u
#define WAIT_SPIN_MAX_NS	20000u
#define WAIT_SPIN_START_NS	20000u
static __ipm_tls uint32_t tls_wait_avg_ns;	/* 0: no sample yet */

static uint64_t spin_budget(void)
{
	uint64_t b = tls_wait_avg_ns ? 2ull * tls_wait_avg_ns : WAIT_SPIN_START_NS;

	return b < WAIT_SPIN_MIN_NS ? WAIT_SPIN_MIN_NS : b > WAIT_SPIN_MAX_NS ? WAIT_SPIN_MAX_NS : b;
}

static void note_wait(uint64_t ns)
{
	uint64_t avg = tls_wait_avg_ns;

	if (ns > 10ull * WAIT_SPIN_MAX_NS)
		ns = 10ull * WAIT_SPIN_MAX_NS;	/* a stuck target must not stick */
	tls_wait_avg_ns = (uint32_t)(avg ? (7 * avg + ns) / 8 : ns);
}

static struct __cds_lfs_stack zombies = { NULL };

struct ipm_req *_ipm_req_alloc(unsigned nwork, enum ipm_req_owner owner)
{
	struct ipm_req *r = malloc(sizeof(*r) + (size_t)nwork * sizeof(struct ipm_work));

	if (r) {
		memset(r, 0, sizeof(*r));
		r->owner = owner;
		r->nwork = nwork;
	}
	return r;
}

void _ipm_req_free(struct ipm_req *r)
{
	free(r);
}

void _ipm_reap_zombies(void)
{
	struct cds_lfs_head *h;
	struct cds_lfs_node *n, *next;

	if (likely(IPM_LOAD(&zombies.head) == NULL))
		return;
	h = __cds_lfs_pop_all(&zombies);
	if (!h)
		return;
	for (n = &h->node; n; n = next) {
		next = n->next;
		free(container_of(n, struct ipm_req, zombie));
	}
}

static void req_put(struct ipm_req *r)
{
	if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (_ipm_tls_in_handler) {
		cds_lfs_node_init(&r->zombie);
		cds_lfs_push(&zombies, &r->zombie);
	} else {
		free(r);
	}
}

/* The count reached zero; @old is the value before the final decrement. */
static void req_finished(struct ipm_req *r, enum ipm_req_owner owner, uint32_t old)
{
	IPM_PROBE1(complete, r);
	if (old & IPM_REQ_WAITERS)
		_ipm_futex_wake(&r->pending, INT_MAX);
	if (owner == IPM_REQ_REFCOUNTED)
		req_put(r);	/* the in-flight reference */
}

/* Async-signal-safe (see zombies). */
void _ipm_work_complete(struct ipm_work *w)
{
	struct ipm_req *r = w->req;
	enum ipm_req_owner owner = r->owner;
	uint32_t old;

	IPM_STORE_REL(&w->done, 1);
	old = __atomic_fetch_sub(&r->pending, 1, __ATOMIC_ACQ_REL);
	if ((old & IPM_REQ_COUNT) == 1)
		req_finished(r, owner, old);
}

/*
 * Before sending: the count holds every work that may be sent plus one for
 * the sender; afterwards the unused part is given back in one RMW.
 */
void _ipm_req_start(struct ipm_req *r, ipm_func_t func, void *info, unsigned flags)
{
	r->func = func;
	r->info = info;
	r->flags = flags;
	r->pending = r->nwork + 1;
	r->refs = (r->owner == IPM_REQ_REFCOUNTED) ? 1 : 0;
	r->sent_ns = _ipm_now_ns();
}

void _ipm_req_sent(struct ipm_req *r, unsigned sent)
{
	enum ipm_req_owner owner = r->owner;
	uint32_t give_back = r->nwork - sent + 1, old;

	r->nsent = sent;
	old = __atomic_fetch_sub(&r->pending, give_back, __ATOMIC_ACQ_REL);
	if ((old & IPM_REQ_COUNT) == give_back)
		req_finished(r, owner, old);
}

static inline bool req_complete(const struct ipm_req *r)
{
	return (IPM_LOAD_ACQ(&r->pending) & IPM_REQ_COUNT) == 0;
}

/*
 * Signal the targets of @r that a waiter must not wait for any longer:
 * polling threads that missed the poll deadline, and targets whose signal
 * could not be sent.  Returns whether some target may still need it later.
 */
static bool escalate_late(struct ipm_req *r, uint64_t now)
{
	bool more = false;
	unsigned i;

	if (now - r->sent_ns < _ipm_lib.poll_deadline_ns) {
		for (i = 0; i < r->nsent; i++)
			if (!IPM_LOAD_ACQ(&r->work[i].done))
				return true;
		return false;
	}
	_ipm_rcu_read_lock();
	for (i = 0; i < r->nsent; i++) {
		struct ipm_work *w = &r->work[i];
		struct ipm_thread *t;
		uint32_t s;

		if (IPM_LOAD_ACQ(&w->done) || w->escalated == IPM_WORK_ESCALATED)
			continue;
		/* Still published as the same record: it is alive until we
		 * leave the read-side critical section (registry.c). */
		t = _ipm_slot_deref((unsigned)w->slot);
		if (t != w->rec || IPM_LOAD_ACQ(&w->done))
			continue;
		s = IPM_LOAD(&t->state);
		if (s & (IPM_ST_OFFLINE | IPM_ST_DEAD))
			continue;
		if (!(s & IPM_ST_POLL) && w->escalated != IPM_WORK_KICK_FAILED)
			continue;
		if (s & IPM_ST_POLL) {
			/* One escalation per batch, shared with the watchdog. */
			_ipm_escalate(t, IPM_LOAD(&t->pending_since));
			w->escalated = IPM_WORK_ESCALATED;
			continue;
		}
		if (_ipm_send_signal(t) == 0) {
			w->escalated = IPM_WORK_ESCALATED;
		} else {
			w->escalated = IPM_WORK_KICK_FAILED;
			more = true;
		}
	}
	_ipm_rcu_read_unlock();
	return more;
}

int _ipm_req_wait(struct ipm_req *r, int64_t timeout_ns)
{
	struct ipm_thread *me = _ipm_self();
	uint64_t start = r->sent_ns, now = _ipm_now_ns(), deadline, budget = spin_budget();
	bool check_late = true;
	unsigned spins = 0;
	int ret = 0;

	deadline = timeout_ns < 0 ? UINT64_MAX : now + (uint64_t)timeout_ns;
	/* Spin briefly (see spin_budget()). */
	while (!req_complete(r)) {
		if (me && (IPM_LOAD(&me->state) & IPM_ST_POLL))
			ipm_poll();
		_ipm_cpu_relax();
		if ((++spins & 31) == 0) {
			now = _ipm_now_ns();
			if (now - start >= budget || now >= deadline)
				break;
		}
	}
	if (req_complete(r)) {
		if (r->owner != IPM_REQ_REFCOUNTED)	/* synchronous calls teach */
			note_wait(_ipm_now_ns() - start);
		return r->error;
	}

	_ipm_wait_serve_begin(me);
	for (;;) {
		uint32_t v = IPM_LOAD_ACQ(&r->pending);
		int64_t sleep_ns;

		if ((v & IPM_REQ_COUNT) == 0)
			break;
		now = _ipm_now_ns();
		if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		if (check_late)
			check_late = escalate_late(r, now);
		sleep_ns = deadline == UINT64_MAX ? -1 : (int64_t)(deadline - now);
		if (check_late && (sleep_ns < 0 || (uint64_t)sleep_ns > _ipm_lib.poll_deadline_ns))
			sleep_ns = (int64_t)_ipm_lib.poll_deadline_ns;
		if (!(v & IPM_REQ_WAITERS)) {
			if (!__atomic_compare_exchange_n(&r->pending, &v, v | IPM_REQ_WAITERS,
							 false, __ATOMIC_SEQ_CST,
							 __ATOMIC_RELAXED))
				continue;
			v |= IPM_REQ_WAITERS;
		}
		_ipm_futex_wait(&r->pending, v, sleep_ns);
	}
	_ipm_wait_serve_end(me);
	if (!ret && r->owner != IPM_REQ_REFCOUNTED)
		note_wait(_ipm_now_ns() - start);
	return ret ? ret : r->error;
}

/* ------------------------------------------------------------------------ */
/* Public request handles                                                    */
/* ------------------------------------------------------------------------ */

int ipm_req_wait(struct ipm_req *req, int64_t timeout_ns)
{
	if (!_ipm_ready())
		return -EPERM;
	if (!req)
		return -EINVAL;
	if (timeout_ns == 0)
		return req_complete(req) ? req->error : -ETIMEDOUT;
	return _ipm_req_wait(req, timeout_ns);
}

bool ipm_req_done(const struct ipm_req *req)
{
	return !req || req_complete(req);
}

void ipm_req_release(struct ipm_req *req)
{
	if (req)
		req_put(req);
}
