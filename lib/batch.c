/* SPDX-License-Identifier: MIT */
/*
 * batch.c - deferred batched invalidation: domains, batches, and each
 * thread's bounded pending set.
 *
 * A domain has a bitmap of member slots (the user-space mm_cpumask) and, per
 * slot, a "dslot": the keys pending for that thread, a small spinlock that
 * guards them, and three sequence numbers:
 *
 *   added    bumped by every flush that merges keys into the set (a ticket)
 *   taken    the value of added when a consumer last emptied the set
 *   applied  the value of taken once that consumer's inval returned
 *
 * A flusher merges its batch into every member's set (collapsing to a full
 * flush past the batch capacity), and sends one delivery (an ordinary
 * request of the core, func = deliver(), info = the domain) to each member
 * that has none outstanding ("queued"); with IPM_WAIT it sends one to every
 * member and then waits for applied >= its ticket.  The delivery takes the
 * whole set and calls inval once.  Who runs a delivery for slot T - "the
 * consumer" - is T itself (signal handler, ipm_poll(), ipm_thread_online(),
 * unregistration) or a claimer running it on T's behalf while T is offline;
 * the core's claim protocol (delivery.c, Scenario C) serialises those, so
 * consumers of one slot never run concurrently, but one may be *nested* in
 * another on T: a signal handler interrupting a consumer that runs in
 * ordinary context.
 *
 * Nothing on the consumer side allocates, and the only lock it takes is the
 * dslot lock, which is never held by the thread it interrupts (Scenario C):
 * the delivery is async-signal-safe.
 *
 * Ordering scenarios (F = flusher, T = member thread, D = destroyer).
 *
 * Scenario A: entering against a flush (Dekker; the membarrier pattern).
 *
 *   T (ipm_domain_enter, first time)    F (ipm_batch_flush)
 *   members |= bit(T)                   (the shared truth was updated)
 *   smp_mb()              [barrier A1]  smp_mb()              [barrier A2]
 *   look up the truth, cache it         m = members
 *
 *   Either F's load of members sees T, and T gets the keys; or T's lookup,
 *   after A1, sees the truth F updated before A2, and caches nothing stale.
 *   A1 pairs with A2.  Later enters by a member only load its bit.
 *
 * Scenario B: merging against the outstanding delivery (lock L of T's set).
 *
 *   F                                   consumer of T
 *   lock L; merge keys; added++         lock L
 *   if !queued: queued = 1, send        if added == taken: nothing
 *   unlock L                            else copy set, taken = added,
 *                                         queued = 0
 *                                       unlock L; inval(copy)
 *
 *   L orders them.  Invariant: when the set is not empty, a delivery is
 *   outstanding that will take L after the last merge (queued was set by a
 *   flusher after the last take, and only a take clears it).  The send is a
 *   full-barrier push (delivery.c, barrier B), so the consumer that pops it
 *   sees the merge.  Enter resets a stale queued (a delivery lost with a
 *   thread that exited while a flusher still saw it as a member).
 *
 * Scenario C: a consumer nested in a consumer on the same thread T.
 *
 *   T, ordinary context                 T, signal handler (nested)
 *   applying = 1; again = 0             if applying: again = 1, return
 *   signal fence                          (the delivery completes; its keys
 *   drain: take/inval until empty          stay in the set)
 *   signal fence; applying = 0
 *   signal fence; if again: repeat
 *
 *   Same thread, so compiler (signal) fences suffice.  A nested consumer
 *   never touches L while the interrupted one may hold it, and inval is
 *   never nested in itself.  A nested delivery that arrives after
 *   applying = 0 consumes by itself; one that arrives before sets again,
 *   and its keys (merged before it was sent) are taken by the repeat.  The
 *   flusher's own keys go the same way: it sets applying on its own slot
 *   before locking its own set.
 *
 * Scenario D: IPM_WAIT completion.
 *
 *   F                                   consumer of T
 *   lock L; ticket = ++added; unlock    lock L; seq = taken = added; unlock
 *   send with IPM_WAIT|IPM_REMOTE       inval(keys)
 *   wait for the request (request.c,    applied = seq         [release D1]
 *     Scenario E)                       complete the work
 *   wait applied >= ticket [acquire D2]
 *
 *   The request's completion alone is not enough: the delivery for this
 *   flush may have found its keys taken by an earlier delivery that is still
 *   calling inval (nested, Scenario C).  So F waits for applied, which only
 *   moves after inval returned (D1 pairs with D2).  Leave and exit move
 *   applied up to added (nothing left to drop), so F never waits for a
 *   thread that is gone; a thread that re-used the slot is sent a new
 *   delivery when the wait takes longer than poll_deadline_us.
 *
 * Scenario E: leave and exit discard.  T clears its bit (full barrier), then
 * consumes with the bit clear: a consumer that finds its thread not a member
 * discards the set (taken = added, applied = added) instead of calling
 * inval.  A flusher that read the bit before it was cleared may still merge
 * keys; they are discarded by the next delivery, or, if T entered again,
 * dropped once more (harmless).  At unregistration the registry calls
 * _ipm_batch_thread_gone() once every request for the thread has run and no
 * signal can reach its record; it clears the slot in every domain.
 *
 * Scenario F: destroy against a running inval.
 *
 *   consumer                            D (ipm_domain_destroy)
 *   running++               [seq_cst]   dead = 1              [seq_cst]
 *   if dead: running--, skip            while running: wait   [seq_cst]
 *   inval(...); running--   [release]   (ctx may be freed on return)
 *
 *   Store-buffering with seq_cst on both sides: either the consumer sees
 *   dead, or D sees it running and waits.  The memory of the domain lives
 *   on while deliveries are in flight (refs; the last one, in a signal
 *   handler, hands it to a lock-free zombie list that ordinary calls free).
 */
#include <limits.h>
#include <sched.h>
#include <string.h>

#include "internal.h"
#include "probes.h"

#define SET_KEYS	IPM_BATCH_MAX_CAPACITY
#define LOCK_SPINS	128	/* cpu_relax rounds before yielding on a set lock */
#define WAIT_SPINS	256	/* cpu_relax rounds before yielding in the ticket wait */
#define BATCH_FLAGS	(IPM_WAIT | IPM_REMOTE)

/* One (domain, slot): the pending set of one member thread.  See above. */
struct dslot {
	uint32_t lock;		/* L: flushers and the consumer, short */
	uint32_t queued;	/* a delivery is outstanding (under L) */
	uint32_t n;		/* keys in the set (under L) */
	uint32_t full;		/* the set collapsed: drop everything (under L) */
	uint64_t added;		/* tickets (under L; read relaxed) */
	uint64_t taken;		/* (under L; read relaxed) */
	uint64_t applied;	/* written by the consumer only, release */
	uint32_t applying;	/* consumer-only: a consumer runs (Scenario C) */
	uint32_t again;		/* consumer-only: a nested consumer deferred */
	uint64_t *keys;		/* SET_KEYS, or NULL: full flushes only */
} __ipm_aligned;

struct ipm_domain {
	ipm_inval_t inval;
	void *ctx;
	uint32_t gen;			/* the ipm_init() it belongs to */
	unsigned nslots;		/* max_threads of that ipm_init() */
	unsigned words;
	unsigned long *members;		/* bit per slot; atomic RMW */
	struct dslot *slots;		/* nslots, never moved */
	struct ipm_domain *next, *prev;	/* all_domains, under domains_lock */
	struct cds_lfs_node zombie;
	uint32_t refs __ipm_aligned;	/* creator + deliveries in flight */
	uint32_t running;		/* invals running (Scenario F) */
	uint32_t dead;
};

struct ipm_batch {
	struct ipm_domain *d;
	unsigned cap;
	unsigned n;			/* keys held (<= cap) */
	bool full;			/* past capacity */
	uint64_t nadded;		/* keys added since the last flush (stats) */
	uint64_t *keys;			/* cap */
	ipm_mask_t *send;		/* members that get a delivery */
	ipm_mask_t *targets;		/* members whose set got the keys */
	uint64_t *tickets;		/* per slot, for IPM_WAIT */
};

static pthread_mutex_t domains_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ipm_domain *all_domains;
static struct __cds_lfs_stack zombies = { NULL };

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static inline unsigned long slot_bit(unsigned s)
{
	return 1ul << (s % IPM_BITS_PER_LONG);
}

static inline bool is_member(const struct ipm_domain *d, unsigned s)
{
	return IPM_LOAD(&d->members[s / IPM_BITS_PER_LONG]) & slot_bit(s);
}

static inline bool domain_current(const struct ipm_domain *d)
{
	return d->gen == IPM_LOAD(&_ipm_lib.gen);
}

/* Async-signal-safe: never held by the thread a consumer interrupts. */
static void set_lock(struct dslot *ds)
{
	unsigned spins = 0;

	for (;;) {
		if (!IPM_LOAD(&ds->lock) &&
		    !__atomic_exchange_n(&ds->lock, 1, __ATOMIC_ACQUIRE))
			return;
		if (++spins < LOCK_SPINS)
			_ipm_cpu_relax();
		else
			sched_yield();	/* the holder may be preempted */
	}
}

static void set_unlock(struct dslot *ds)
{
	__atomic_store_n(&ds->lock, 0, __ATOMIC_RELEASE);
}

static void domain_free(struct ipm_domain *d)
{
	unsigned s;

	for (s = 0; s < d->nslots; s++)
		free(d->slots[s].keys);
	free(d->slots);
	free(d->members);
	free(d);
}

static void reap_zombies(void)
{
	struct cds_lfs_head *h;
	struct cds_lfs_node *n, *next;

	if (likely(IPM_LOAD(&zombies.head) == NULL))
		return;
	h = __cds_lfs_pop_all(&zombies);
	for (n = h ? &h->node : NULL; n; n = next) {
		next = n->next;
		domain_free(container_of(n, struct ipm_domain, zombie));
	}
}

/* Async-signal-safe: the last reference in a handler goes to the zombies. */
static void domain_put(struct ipm_domain *d, unsigned n)
{
	if (__atomic_sub_fetch(&d->refs, n, __ATOMIC_ACQ_REL))
		return;
	if (_ipm_tls_in_handler) {
		cds_lfs_node_init(&d->zombie);
		cds_lfs_push(&zombies, &d->zombie);
	} else {
		domain_free(d);
	}
}

/* ------------------------------------------------------------------------ */
/* The consumer side (async-signal-safe)                                     */
/* ------------------------------------------------------------------------ */

/* Scenario F. */
static bool inval_begin(struct ipm_domain *d)
{
	__atomic_fetch_add(&d->running, 1, __ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&d->dead, __ATOMIC_SEQ_CST))
		return true;
	__atomic_fetch_sub(&d->running, 1, __ATOMIC_RELEASE);
	return false;
}

static void inval_end(struct ipm_domain *d)
{
	__atomic_fetch_sub(&d->running, 1, __ATOMIC_RELEASE);
}

/*
 * Empty the set of @slot, calling inval for each take, until it is empty.
 * The caller holds applying (Scenario C).
 */
static void drain(struct ipm_domain *d, unsigned slot, struct dslot *ds)
{
	uint64_t buf[SET_KEYS];

	for (;;) {
		unsigned n = 0;
		bool full;
		uint64_t seq;

		set_lock(ds);
		if (ds->added == ds->taken) {
			IPM_STORE(&ds->queued, 0);
			set_unlock(ds);
			return;
		}
		full = ds->full || !ds->keys;
		if (!full) {
			n = ds->n;
			memcpy(buf, ds->keys, n * sizeof(buf[0]));
		}
		ds->n = 0;
		ds->full = 0;
		seq = ds->added;
		IPM_STORE(&ds->taken, seq);
		IPM_STORE(&ds->queued, 0);
		set_unlock(ds);

		/* Scenario E: a thread that left holds nothing of d. */
		if (is_member(d, slot) && inval_begin(d)) {
			d->inval((int)slot, full ? NULL : buf, full ? 0 : n, d->ctx);
			inval_end(d);
		}
		IPM_STORE_REL(&ds->applied, seq);	/* barrier D1 */
	}
}

/* Scenario C. */
static void consume(struct ipm_domain *d, unsigned slot)
{
	struct dslot *ds = &d->slots[slot];

	if (IPM_LOAD(&ds->applying)) {
		IPM_STORE(&ds->again, 1);
		return;
	}
	do {
		IPM_STORE(&ds->applying, 1);
		IPM_STORE(&ds->again, 0);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		drain(d, slot, ds);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		IPM_STORE(&ds->applying, 0);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	} while (IPM_LOAD(&ds->again));
}

/* The delivery: an ipm_func_t.  Holds one reference of the domain. */
static void deliver(int slot, void *info)
{
	struct ipm_domain *d = info;

	if ((unsigned)slot < d->nslots)
		consume(d, (unsigned)slot);
	domain_put(d, 1);
}

/* ------------------------------------------------------------------------ */
/* Domains                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * fork(): the child has one thread.  Set locks and flags of threads that do
 * not exist there are reset, their slots leave every domain, and the forking
 * thread applies what was pending for it (the core dropped its deliveries,
 * which belonged to the parent's senders).  Runs after the registry's child
 * handler (pthread_atfork runs child handlers in registration order, and
 * ipm_init() registers first).
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&domains_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&domains_lock);
}

static void atfork_child(void)
{
	struct ipm_thread *me = _ipm_self();
	struct ipm_domain *d;
	unsigned s;

	pthread_mutex_init(&domains_lock, NULL);
	if (!_ipm_ready())
		return;
	for (d = all_domains; d; d = d->next) {
		if (!domain_current(d))
			continue;
		for (s = 0; s < d->nslots; s++) {
			struct dslot *ds = &d->slots[s];

			ds->lock = 0;
			ds->queued = 0;
			ds->applying = 0;
			ds->again = 0;
			if (!_ipm_lib.slots[s])
				d->members[s / IPM_BITS_PER_LONG] &= ~slot_bit(s);
		}
		if (me && (unsigned)me->slot < d->nslots)
			consume(d, (unsigned)me->slot);
	}
}

static void install_atfork(void)
{
	if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child))
		_ipm_die("pthread_atfork");
}

struct ipm_domain *ipm_domain_create(ipm_inval_t inval, void *ctx)
{
	static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
	struct ipm_domain *d;

	if (!_ipm_ready() || !inval)
		return NULL;
	pthread_once(&atfork_once, install_atfork);
	reap_zombies();
	d = aligned_alloc(IPM_CACHELINE, sizeof(*d));
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->inval = inval;
	d->ctx = ctx;
	d->gen = IPM_LOAD(&_ipm_lib.gen);
	d->nslots = _ipm_lib.max_threads;
	d->words = _ipm_lib.mask_words;
	d->refs = 1;
	d->members = calloc(d->words, sizeof(unsigned long));
	d->slots = aligned_alloc(IPM_CACHELINE, d->nslots * sizeof(struct dslot));
	if (!d->members || !d->slots) {
		free(d->members);
		free(d->slots);
		free(d);
		return NULL;
	}
	memset(d->slots, 0, d->nslots * sizeof(struct dslot));

	pthread_mutex_lock(&domains_lock);
	d->prev = NULL;
	d->next = all_domains;
	if (all_domains)
		all_domains->prev = d;
	all_domains = d;
	pthread_mutex_unlock(&domains_lock);
	return d;
}

void ipm_domain_destroy(struct ipm_domain *d)
{
	unsigned spins = 0;

	if (!d)
		return;
	pthread_mutex_lock(&domains_lock);
	if (d->prev)
		d->prev->next = d->next;
	else
		all_domains = d->next;
	if (d->next)
		d->next->prev = d->prev;
	pthread_mutex_unlock(&domains_lock);

	/* Scenario F: no inval runs after we return. */
	__atomic_store_n(&d->dead, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&d->running, __ATOMIC_SEQ_CST)) {
		if (++spins < WAIT_SPINS)
			_ipm_cpu_relax();
		else
			sched_yield();
	}
	domain_put(d, 1);
	reap_zombies();
}

__attribute__((noinline, cold))
static void enter_slow(struct ipm_domain *d, struct ipm_thread *t)
{
	unsigned s = (unsigned)t->slot;
	uint64_t *keys = NULL;
	struct dslot *ds;

	if (s >= d->nslots || !domain_current(d))
		return;
	ds = &d->slots[s];
	/* Only the slot's owner writes keys (under L: flushers read it). */
	if (!ds->keys)
		keys = _ipm_malloc(SET_KEYS * sizeof(uint64_t));	/* NULL: full flushes */

	/* Leftovers of an earlier member of this slot (or of ourselves before
	 * we left) are ours to discard; Scenario C keeps handlers off L. */
	IPM_STORE(&ds->applying, 1);
	IPM_STORE(&ds->again, 0);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	set_lock(ds);
	if (keys)
		ds->keys = keys;
	ds->n = 0;
	ds->full = 0;
	IPM_STORE(&ds->taken, ds->added);
	IPM_STORE(&ds->queued, 0);
	IPM_STORE_REL(&ds->applied, ds->added);
	set_unlock(ds);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	IPM_STORE(&ds->applying, 0);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);

	__atomic_fetch_or(&d->members[s / IPM_BITS_PER_LONG], slot_bit(s), __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* barrier A1 */
	/* A delivery that arrived while we held applying left its keys (and
	 * queued set) for us: take them now (Scenario C). */
	if (IPM_LOAD(&ds->again))
		consume(d, s);
}

void ipm_domain_enter(struct ipm_domain *d)
{
	/* Not registered under the current ipm_init() (or none): NULL. */
	struct ipm_thread *t = _ipm_self();

	if (unlikely(!t || !d))
		return;
	/* The fast path: a member only loads its bit. */
	if (likely((unsigned)t->slot < d->nslots && is_member(d, (unsigned)t->slot)))
		return;
	enter_slow(d, t);
}

void ipm_domain_leave(struct ipm_domain *d)
{
	struct ipm_thread *t;
	unsigned s;

	if (!d || !_ipm_ready())
		return;
	t = _ipm_self();
	if (!t || (unsigned)t->slot >= d->nslots || !domain_current(d))
		return;
	s = (unsigned)t->slot;
	if (!is_member(d, s))
		return;
	/* Scenario E: the bit first, then discard what is pending. */
	__atomic_fetch_and(&d->members[s / IPM_BITS_PER_LONG], ~slot_bit(s), __ATOMIC_SEQ_CST);
	consume(d, s);
}

/*
 * The registry's hook: the thread of @slot is unregistering; every request
 * for it has run and no signal handler runs for it any longer, and the slot
 * is not free for reuse yet.  It leaves every domain (Scenario E).
 */
void _ipm_batch_thread_gone(int slot)
{
	struct ipm_domain *d;

	pthread_mutex_lock(&domains_lock);
	for (d = all_domains; d; d = d->next) {
		unsigned s = (unsigned)slot;
		struct dslot *ds;

		if (s >= d->nslots)
			continue;
		ds = &d->slots[s];
		__atomic_fetch_and(&d->members[s / IPM_BITS_PER_LONG], ~slot_bit(s),
				   __ATOMIC_SEQ_CST);
		set_lock(ds);
		ds->n = 0;
		ds->full = 0;
		IPM_STORE(&ds->taken, ds->added);
		IPM_STORE(&ds->queued, 0);
		IPM_STORE_REL(&ds->applied, ds->added);
		IPM_STORE(&ds->applying, 0);
		IPM_STORE(&ds->again, 0);
		set_unlock(ds);
	}
	pthread_mutex_unlock(&domains_lock);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

struct ipm_batch *ipm_batch_create(struct ipm_domain *d, unsigned capacity)
{
	struct ipm_batch *b;

	if (!_ipm_ready() || !d || !domain_current(d) || capacity == 0 ||
	    capacity > IPM_BATCH_MAX_CAPACITY)
		return NULL;
	reap_zombies();
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->d = d;
	b->cap = capacity;
	b->keys = calloc(capacity, sizeof(uint64_t));
	b->tickets = calloc(d->nslots, sizeof(uint64_t));
	b->send = ipm_mask_alloc();
	b->targets = ipm_mask_alloc();
	if (!b->keys || !b->tickets || !b->send || !b->targets) {
		free(b->keys);
		free(b->tickets);
		ipm_mask_free(b->send);
		ipm_mask_free(b->targets);
		free(b);
		return NULL;
	}
	return b;
}

int ipm_batch_add(struct ipm_batch *b, uint64_t key)
{
	unsigned i;

	if (!_ipm_ready())
		return -EPERM;
	if (!b)
		return -EINVAL;
	b->nadded++;
	if (b->full)
		return 0;
	for (i = 0; i < b->n; i++)
		if (b->keys[i] == key)
			return 0;
	if (b->n < b->cap)
		b->keys[b->n++] = key;
	else
		b->full = true;
	return 0;
}

/* Under L: merge @b into @ds; returns whether the set collapsed here. */
static bool merge(struct dslot *ds, const struct ipm_batch *b)
{
	bool collapsed = false;

	if (!ds->full) {
		if (b->full || !ds->keys || ds->n + b->n > b->cap) {
			collapsed = !b->full;
			ds->full = 1;
			ds->n = 0;
		} else {
			memcpy(ds->keys + ds->n, b->keys, b->n * sizeof(uint64_t));
			ds->n += b->n;
		}
	}
	IPM_STORE(&ds->added, ds->added + 1);
	return collapsed;
}

/* The flusher is a member: its own keys, directly (Scenario C). */
static void apply_self(struct ipm_domain *d, unsigned s, const struct ipm_batch *b)
{
	struct dslot *ds = &d->slots[s];

	if (IPM_LOAD(&ds->applying)) {
		/* Only when inval calls us (not allowed): leave them queued. */
		set_lock(ds);
		merge(ds, b);
		set_unlock(ds);
		IPM_STORE(&ds->again, 1);
		return;
	}
	IPM_STORE(&ds->applying, 1);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	set_lock(ds);
	merge(ds, b);
	set_unlock(ds);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	IPM_STORE(&ds->applying, 0);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	consume(d, s);
}

/* Serve our own requests while waiting (mutual flushes of polling threads). */
static void wait_pause(unsigned *spins)
{
	if (++*spins < WAIT_SPINS) {
		_ipm_cpu_relax();
		return;
	}
	ipm_poll();
	sched_yield();
}

/* Scenario D: wait until the consumer of @s applied @ticket. */
static void wait_applied(struct ipm_domain *d, unsigned s, uint64_t ticket)
{
	struct dslot *ds = &d->slots[s];
	uint64_t kick_at = _ipm_now_ns() + _ipm_lib.poll_deadline_ns;
	unsigned spins = 0;

	while (IPM_LOAD_ACQ(&ds->applied) < ticket) {	/* barrier D2 */
		if (!is_member(d, s))
			return;		/* left or gone: discarded (Scenario E) */
		if (!IPM_LOAD(&_ipm_lib.slots[s]))
			return;		/* unregistering: its entries die with it */
		wait_pause(&spins);
		if ((spins & 63) || _ipm_now_ns() < kick_at)
			continue;
		/* A slot re-used by a thread that entered, or a consumer that
		 * takes long: send it one more delivery. */
		__atomic_fetch_add(&d->refs, 1, __ATOMIC_RELAXED);
		if (ipm_on_thread((int)s, deliver, d, IPM_WAIT | IPM_REMOTE) <= 0)
			domain_put(d, 1);
		kick_at = _ipm_now_ns() + _ipm_lib.poll_deadline_ns;
	}
}

int ipm_batch_flush(struct ipm_batch *b, unsigned flags)
{
	struct ipm_domain *d;
	struct ipm_thread *me;
	unsigned w, nsend = 0, ntargets = 0, collapsed = 0;
	int self = -1, ret = 0;

	if (!_ipm_ready())
		return -EPERM;
	if (!b || (flags & ~BATCH_FLAGS))
		return -EINVAL;
	d = b->d;
	if (!domain_current(d))
		return -EINVAL;
	reap_zombies();
	if (b->n == 0 && !b->full)
		return 0;

	me = _ipm_self();
	ipm_mask_zero(b->send);
	ipm_mask_zero(b->targets);

	__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* barrier A2 */
	for (w = 0; w < d->words; w++) {
		unsigned long bits = IPM_LOAD(&d->members[w]);

		while (bits) {
			unsigned s = w * IPM_BITS_PER_LONG + (unsigned)__builtin_ctzl(bits);
			struct dslot *ds;
			bool send;

			bits &= bits - 1;
			if (s >= d->nslots)
				break;
			ds = &d->slots[s];
			if (me && (unsigned)me->slot == s) {
				self = (int)s;
				continue;
			}
			set_lock(ds);
			collapsed += merge(ds, b);
			b->tickets[s] = ds->added;
			send = (flags & IPM_WAIT) || !ds->queued;
			IPM_STORE(&ds->queued, 1);
			set_unlock(ds);
			ipm_mask_set(b->targets, (int)s);
			ntargets++;
			if (send) {
				ipm_mask_set(b->send, (int)s);
				nsend++;
			}
		}
	}

	if (self >= 0)
		apply_self(d, (unsigned)self, b);

	if (nsend) {
		unsigned cflags = (flags & IPM_WAIT) ? (IPM_WAIT | IPM_REMOTE) : (flags & IPM_REMOTE);
		int n;

		__atomic_fetch_add(&d->refs, nsend, __ATOMIC_RELAXED);
		n = ipm_on_each_thread_mask(b->send, deliver, d, cflags);
		if (n == -ENOMEM) {
			int s = -1;

			/* Nobody got it: the sets keep the keys, the batch too. */
			domain_put(d, nsend);
			while ((s = ipm_mask_next(b->send, s)) >= 0) {
				set_lock(&d->slots[s]);
				IPM_STORE(&d->slots[s].queued, 0);
				set_unlock(&d->slots[s]);
			}
			return -ENOMEM;
		}
		if (n < 0)
			ret = n;	/* -ECANCELED: ipm_fini() ran */
		else if ((unsigned)n < nsend)
			domain_put(d, nsend - (unsigned)n);	/* unregistered meanwhile */
	}

	if ((flags & IPM_WAIT) && ret == 0) {
		int s = -1;

		while ((s = ipm_mask_next(b->targets, s)) >= 0)
			wait_applied(d, (unsigned)s, b->tickets[s]);
	}

	IPM_PROBE2(flush, ntargets + (self >= 0), b->nadded);
	_ipm_count(IPM_C_BATCHES, 1);
	_ipm_count(IPM_C_BATCH_KEYS, b->nadded);
	_ipm_count(IPM_C_FULL_FLUSHES, (b->full ? 1 : 0) + collapsed);
	b->n = 0;
	b->full = false;
	b->nadded = 0;
	return ret ? ret : (int)ntargets + (self >= 0);
}

int ipm_batch_add_sync(struct ipm_batch *b, uint64_t key)
{
	int ret = ipm_batch_add(b, key);

	return ret ? ret : ipm_batch_flush(b, IPM_WAIT);
}

void ipm_batch_destroy(struct ipm_batch *b)
{
	if (!b)
		return;
	if (_ipm_ready() && domain_current(b->d))
		ipm_batch_flush(b, IPM_WAIT);
	free(b->keys);
	free(b->tickets);
	ipm_mask_free(b->send);
	ipm_mask_free(b->targets);
	free(b);
}
