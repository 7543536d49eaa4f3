/* SPDX-License-Identifier: MIT */
/*
 * pcache.c - remote-drainable per-thread object caches: drain everything,
 * interrupt no one.
 *
 * The user-space twin of the kernel's per-CPU page lists drained remotely
 * under a per-CPU spinlock ("Drain remote per-cpu directly", Mel Gorman,
 * 2022): every registered thread that uses a pcache has its own small cache
 * (struct pc_cache, indexed by slot, allocated by the owner on its NUMA
 * node) protected by its own lock word.  The owner takes the lock on every
 * get/put: one uncontended compare-and-swap on a cache line only it writes,
 * no system call.  A drainer takes the same lock to empty the cache from
 * its own thread: the owner is never signalled, woken or otherwise
 * disturbed, and a cache whose count reads 0 is skipped without touching
 * its lock (Gilad Ben-Yossef's "only if they have pages").
 *
 * Lock word (pc_cache.lock): PC_FREE, PC_OWNER or PC_DRAINER.  Taken with
 * a CAS from PC_FREE (acquire), dropped with a store of PC_FREE (release).
 * Nobody ever sleeps on it: the owner holds it for a few instructions and
 * never across a callback; a drainer holds it for one memcpy of at most
 * @high pointers.  The owner, contended, spins with cpu_relax, then yields.
 * A drainer that finds the lock taken sets the drainer_waits hint (an owner
 * taking and dropping its lock in a tight loop keeps the line in its cache
 * and would otherwise win every race; the owner's fast path reads the hint
 * on its own line and defers for a bounded time), spins for a bounded time,
 * and if the owner still holds it (it was preempted inside get/put: the
 * kernel's per-CPU lock disables preemption, ours cannot) moves on to the
 * other caches and comes back after a short nanosleep: a drain waits for a
 * preempted owner to be scheduled again, never for anything else.
 *
 * Invariants:
 *   I1. objs[0 .. count) are the cached objects; only the holder of the
 *       lock reads or writes them, or writes count (a drainer's "skip when
 *       empty" test and ipm_pcache_count() read count without it, relaxed,
 *       and act on it only under the lock).
 *   I2. Only the owner increases count.  A drainer only sets it to 0.
 *   I3. The owner may write objs[count ..) without the lock (refill), and
 *       may read objs[count ..) without the lock (release of a batch it
 *       has just cut off): no one else touches the slots above count.
 *   I4. pc->caches[slot] is written by the owner of @slot (publication,
 *       store-release) and, under pc->drain_lock, by that same owner on its
 *       way out (unregister) or by ipm_pcache_destroy() (no owner left).
 *       Drainers, ipm_pcache_count() and the exit hook read it and use the
 *       cache only under pc->drain_lock, so a cache is never freed under
 *       them.
 *
 * Ordering scenarios (O = the owner, D = a drainer):
 *
 * Scenario A: a put races with a drain.
 *
 *   O (ipm_pcache_put)                   D (ipm_pcache_drain)
 *   CAS(lock: FREE -> OWNER) [acquire]   n = count               [relaxed]
 *   objs[count] = obj                    if n == 0: skip
 *   count++                              CAS(lock: FREE -> DRAINER) [acquire A]
 *   lock = FREE              [release B] copy objs[0 .. count), count = 0
 *                                        lock = FREE             [release]
 *
 *   The lock serialises the two critical sections; the release B of the
 *   owner pairs with the acquire A of the drainer (and the drainer's
 *   release with the owner's next acquire), so D copies exactly the objects
 *   O stored, and O's next get never hands out one that D took.  If D reads
 *   count == 0 before O's count++ is visible, the put is concurrent with the
 *   drain and its object stays cached: a drain empties every cache of the
 *   objects put before the drain began (their put happens-before the drain
 *   call: B is then ordered before D's relaxed load by that same
 *   happens-before, and coherence makes D read the new count).
 *
 * Scenario B: a get refills (the callback runs without the lock).
 *
 *   O (ipm_pcache_get)                   D
 *   lock; count == 0; unlock
 *   k = refill(objs[0 .. batch))         n = count: 0 -> skip
 *                                        (or: lock; count == 0; copies
 *                                         nothing; unlock)
 *   CAS(lock)                [acquire]
 *   count = k - 1; obj = objs[k - 1]
 *   lock = FREE              [release C] ... a later D: CAS [acquire] pairs
 *                                        with C and sees objs[0 .. k-1)
 *
 *   By I2 count is still 0 when O relocks, and by I3 no drainer read the
 *   slots refill wrote.  D never waits for a user callback run by O.
 *
 * Scenario C: a put above @high releases a batch (again without the lock).
 *
 *   O (ipm_pcache_put)                   D
 *   lock; objs[count++] = obj
 *   count > high: count -= batch
 *   lock = FREE              [release]   lock [acquire]: copies objs[0 .. count)
 *   release(objs[count .. count+batch))  (never the batch: it is above count)
 *
 * Scenario D: the owner unregisters (or exits) while a drain runs; the slot
 * is then reused by another thread.
 *
 *   O (ipm_thread_unregister)            D
 *   _ipm_pcache_thread_exit(slot):       mutex_lock(pc->drain_lock)
 *     mutex_lock(pc->drain_lock)         c = caches[slot]        [acquire]
 *     c = caches[slot]; caches[slot]     ... uses c ...
 *       = NULL                           mutex_unlock(pc->drain_lock)
 *     mutex_unlock(pc->drain_lock)
 *     release(c->objs[0 .. count)); free(c)
 *   (registry) slot becomes free
 *   N (new owner of slot): first get/put allocates a new, empty cache and
 *   publishes it: caches[slot] = c' [release], pairs with D's acquire.
 *
 *   The mutex orders D's use of c before its free (I4).  The registry frees
 *   the slot only after the hook returned, so N starts with an empty cache
 *   and never meets O's objects; O, being the caller, is not inside
 *   get/put meanwhile.
 *
 * Scenario E: the owner was preempted holding its lock.
 *
 *   O (in get/put)                       D
 *   CAS(lock: FREE -> OWNER)             CAS fails; drainer_waits = 1
 *   -- preempted --                      spins PC_DRAIN_SPINS: lock still
 *                                        OWNER; drainer_waits = 0; marks
 *                                        the slot in pc->busy, drains the
 *                                        other caches
 *   -- runs again --                     nanosleep(20 us .. 1 ms)
 *   lock = FREE              [release]   CAS(lock) [acquire]: as in A
 *
 *   D never touched the cache while O held it, so A applies unchanged on
 *   the retry.  drainer_waits is a hint for fairness (O's fast path reads
 *   it and defers for at most PC_HOLDOFF rounds): no ordering depends on
 *   it, a stale value only costs O that bounded deference.
 *
 * Callbacks (refill/release) are called without any per-thread lock held;
 * a drainer calls release with pc->drain_lock held, the exit hook with
 * pcache_list_lock held.  They must therefore not call ipm_pcache_*() on
 * the same pcache, nor create or destroy a pcache, nor unregister.
 *
 * fork(): the child inherits the caches of every slot, with their objects
 * (they stay owned by the pcache: drained and destroyed normally; the
 * registry frees the records of the parent's other threads without this
 * file's exit hook, so the next owner of such a slot in the child starts
 * with the parent thread's objects).  The atfork handlers below keep the
 * child from inheriting a held mutex or per-thread lock.  Objects a parent
 * thread had in flight (handed out, or cut off for release) are not in the
 * child's caches: they belong to that thread, which does not exist there.
 */
#include <numa.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "probes.h"

#define PC_FREE		0u
#define PC_OWNER	1u
#define PC_DRAINER	2u

#define PC_SPINS	128	/* cpu_relax rounds before sched_yield */
#define PC_HOLDOFF	(4 * PC_SPINS)	/* owner's bounded deference to a drainer */
#define PC_DRAIN_SPINS	2048	/* drainer: cpu_relax rounds before moving on */
#define PC_MAX_HIGH	(1u << 24)

struct pc_cache {
	/* The owner's line: lock, count and the hot end of objs (small caches). */
	uint32_t lock __ipm_aligned;	/* PC_*: the per-thread lock word */
	uint32_t drainer_waits;		/* a drainer wants the lock: owner, hold off */
	unsigned count;			/* objs[0 .. count) are cached (I1) */
	int node;			/* NUMA node it was allocated on, or -1 */
	bool numa;			/* from numa_alloc_local() */
	size_t size;			/* bytes allocated */
	void *objs[];			/* high + 1 */
};

struct ipm_pcache {
	struct ipm_pcache_ops ops;
	void *ctx;
	unsigned high, batch;
	unsigned nslots;		/* max_threads at creation */
	struct pc_cache **caches;	/* [nslots]; see I4 */
	pthread_mutex_t drain_lock;	/* drainers, exit hook, count, destroy */
	void **drain_buf;		/* [high + 1]; under drain_lock */
	unsigned long *busy;		/* slots to come back to; under drain_lock */
	struct ipm_pcache *next, *prev;	/* live pcaches, under pcache_list_lock */
};

static pthread_mutex_t pcache_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ipm_pcache *pcache_list;
static unsigned pcache_live;		/* for a lock-free "none" check at exit */

/* ------------------------------------------------------------------------ */
/* The per-thread lock                                                       */
/* ------------------------------------------------------------------------ */

static inline bool pc_trylock(struct pc_cache *c, uint32_t who)
{
	uint32_t expected = PC_FREE;

	return __atomic_compare_exchange_n(&c->lock, &expected, who, false,
					   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

/* Spin with cpu_relax, then yield; never sleeps on a futex, so no one ever
 * has to wake anyone. */
static inline void pc_backoff(unsigned *spins)
{
	if (++*spins < PC_SPINS) {
		_ipm_cpu_relax();
	} else {
		*spins = 0;
		sched_yield();
	}
}

/*
 * Owner, contended: a drainer holds the lock, or waits for it.  Holding off
 * while drainer_waits is set keeps an owner that takes and drops its lock
 * in a tight loop (its line stays in its cache) from starving the drainer;
 * the hold-off is bounded (PC_HOLDOFF cpu_relax rounds, no system call) so
 * that a drainer preempted with the hint set delays the owner by a few
 * microseconds, not a time slice.  Only a lock actually held (by a drainer
 * preempted inside its memcpy) makes the owner yield.
 */
static __attribute__((noinline)) void pc_lock_owner_slow(struct pc_cache *c)
{
	unsigned spins = 0, holdoff = 0;

	for (;;) {
		if (IPM_LOAD(&c->lock) != PC_FREE) {
			pc_backoff(&spins);
			continue;
		}
		if (IPM_LOAD(&c->drainer_waits) && holdoff < PC_HOLDOFF) {
			holdoff++;
			_ipm_cpu_relax();
			continue;
		}
		if (pc_trylock(c, PC_OWNER))
			return;
	}
}

/* The owner's fast path: one load of its own line, one CAS. */
static inline void pc_lock_owner(struct pc_cache *c)
{
	if (unlikely(IPM_LOAD(&c->drainer_waits) || !pc_trylock(c, PC_OWNER)))
		pc_lock_owner_slow(c);
}

/*
 * Drainer (at most one per pcache at a time: pc->drain_lock): spin for a
 * bounded time only.  The owner holds the lock for a few instructions, so a
 * failure means it was preempted inside get/put: the caller moves on to the
 * other caches and comes back (ipm_pcache_drain()), so one preempted owner
 * delays the drain by its own wait, not the sum of all of them.
 */
static bool pc_trylock_drainer(struct pc_cache *c)
{
	unsigned spins;

	if (likely(pc_trylock(c, PC_DRAINER)))
		return true;
	/* A hint only: mutual exclusion is the CAS's business. */
	IPM_STORE(&c->drainer_waits, 1);
	for (spins = 0; spins < PC_DRAIN_SPINS; spins++) {
		if (IPM_LOAD(&c->lock) == PC_FREE && pc_trylock(c, PC_DRAINER)) {
			IPM_STORE(&c->drainer_waits, 0);
			return true;
		}
		_ipm_cpu_relax();
	}
	IPM_STORE(&c->drainer_waits, 0);
	return false;
}

static inline void pc_unlock(struct pc_cache *c)
{
	__atomic_store_n(&c->lock, PC_FREE, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Backing store                                                             */
/* ------------------------------------------------------------------------ */

/* refill() of at most @want objects; a callback that returns more broke
 * its contract (and wrote past @objs). */
static inline unsigned refill_checked(struct ipm_pcache *pc, void **objs, unsigned want)
{
	unsigned k = pc->ops.refill(pc->ctx, objs, want);

	if (unlikely(k > want))
		_ipm_die("refill returned more objects than asked for");
	return k;
}

/* refill() in batches of at most pc->batch, until @n objects or an empty
 * store; returns how many came. */
static unsigned refill_all(struct ipm_pcache *pc, void **objs, unsigned n)
{
	unsigned got = 0, want, k;

	while (got < n) {
		want = n - got < pc->batch ? n - got : pc->batch;
		k = refill_checked(pc, objs + got, want);
		got += k;
		if (k < want)
			break;	/* the store is empty */
	}
	return got;
}

/* release() in batches of at most pc->batch. */
static void release_all(struct ipm_pcache *pc, void *const *objs, unsigned n)
{
	unsigned k;

	while (n) {
		k = n < pc->batch ? n : pc->batch;
		pc->ops.release(pc->ctx, objs, k);
		objs += k;
		n -= k;
	}
}

/* An unregistered caller (or no cache memory): straight through the store. */
static void *get_through(struct ipm_pcache *pc)
{
	void *obj = NULL;

	if (pc->ops.refill(pc->ctx, &obj, 1) == 0)
		return NULL;
	return obj;
}

static void put_through(struct ipm_pcache *pc, void *obj)
{
	pc->ops.release(pc->ctx, &obj, 1);
}

/* ------------------------------------------------------------------------ */
/* Per-thread caches                                                         */
/* ------------------------------------------------------------------------ */

static void cache_free(struct pc_cache *c)
{
	if (c->numa)
		numa_free(c, c->size);
	else
		free(c);
}

/* First get/put of the owner of @slot: a cache on the owner's node. */
static __attribute__((noinline)) struct pc_cache *
cache_alloc(struct ipm_pcache *pc, struct ipm_thread *t, unsigned slot)
{
	size_t size = sizeof(struct pc_cache) + ((size_t)pc->high + 1) * sizeof(void *);
	struct pc_cache *c = NULL;
	bool numa = false;

	size = (size + IPM_CACHELINE - 1) & ~(size_t)(IPM_CACHELINE - 1);
	if (_ipm_lib.features & IPM_FEAT_NUMA) {
		c = numa_alloc_local(size);
		numa = c != NULL;
	}
	if (!c)
		c = aligned_alloc(IPM_CACHELINE, size);	/* first touch: below */
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->lock = PC_FREE;
	c->node = IPM_LOAD(&t->node);
	c->numa = numa;
	c->size = size;
	/* Scenario D: pairs with the acquire of drainers. */
	__atomic_store_n(&pc->caches[slot], c, __ATOMIC_RELEASE);
	return c;
}

/* The caller's cache, or NULL when it must go through the store. */
static inline struct pc_cache *my_cache(struct ipm_pcache *pc)
{
	struct ipm_thread *t = _ipm_self();
	struct pc_cache *c;
	unsigned slot;

	if (unlikely(!t))
		return NULL;
	slot = (unsigned)t->slot;
	if (unlikely(slot >= pc->nslots))
		return NULL;
	/* Only this thread writes this entry while it is registered (I4). */
	c = IPM_LOAD(&pc->caches[slot]);
	if (unlikely(!c))
		c = cache_alloc(pc, t, slot);
	return c;
}

static __attribute__((noinline)) void *get_refill(struct ipm_pcache *pc, struct pc_cache *c)
{
	unsigned k;
	void *obj;

	/* Scenario B: count is 0 and stays 0 (I2); objs[] above it is ours (I3). */
	k = refill_checked(pc, c->objs, pc->batch);
	if (k == 0)
		return NULL;
	pc_lock_owner(c);
	if (unlikely(c->count))
		_ipm_die("cache grew while its owner refilled it");
	obj = c->objs[k - 1];
	IPM_STORE(&c->count, k - 1);
	pc_unlock(c);
	return obj;
}

void *ipm_pcache_get(struct ipm_pcache *pc)
{
	struct pc_cache *c;
	unsigned n;
	void *obj;

	if (unlikely(!pc))
		return NULL;
	c = my_cache(pc);
	if (unlikely(!c))
		return get_through(pc);
	pc_lock_owner(c);
	n = c->count;
	if (likely(n)) {
		obj = c->objs[n - 1];
		IPM_STORE(&c->count, n - 1);
		pc_unlock(c);
		return obj;
	}
	pc_unlock(c);
	return get_refill(pc, c);
}

void ipm_pcache_put(struct ipm_pcache *pc, void *obj)
{
	struct pc_cache *c;
	unsigned n;

	if (unlikely(!pc))
		return;
	c = my_cache(pc);
	if (unlikely(!c)) {
		put_through(pc, obj);
		return;
	}
	pc_lock_owner(c);
	n = c->count;
	c->objs[n++] = obj;
	if (likely(n <= pc->high)) {
		IPM_STORE(&c->count, n);
		pc_unlock(c);
		return;
	}
	/* Scenario C: cut the top batch off, release it without the lock. */
	n -= pc->batch;
	IPM_STORE(&c->count, n);
	pc_unlock(c);
	pc->ops.release(pc->ctx, c->objs + n, pc->batch);
}

/*
 * Bulk: one lock round trip for up to @n objects, the rest straight
 * through the store (refill/release in batches, without the lock).
 */
unsigned ipm_pcache_get_bulk(struct ipm_pcache *pc, void **objs, unsigned n)
{
	struct pc_cache *c;
	unsigned got = 0, k, have;

	if (unlikely(!pc || !objs))
		return 0;
	c = my_cache(pc);
	if (likely(c) && n) {
		pc_lock_owner(c);
		have = c->count;
		k = n < have ? n : have;
		/* The most recently put first, like ipm_pcache_get(). */
		for (got = 0; got < k; got++)
			objs[got] = c->objs[have - 1 - got];
		IPM_STORE(&c->count, have - k);
		pc_unlock(c);
	}
	return got + refill_all(pc, objs + got, n - got);
}

void ipm_pcache_put_bulk(struct ipm_pcache *pc, void *const *objs, unsigned n)
{
	struct pc_cache *c;
	unsigned k = 0, have, i;

	if (unlikely(!pc || !objs || !n))
		return;
	c = my_cache(pc);
	if (likely(c)) {
		pc_lock_owner(c);
		have = c->count;
		k = pc->high - have < n ? pc->high - have : n;
		for (i = 0; i < k; i++)
			c->objs[have + i] = objs[i];
		IPM_STORE(&c->count, have + k);
		pc_unlock(c);
	}
	/* What does not fit under @high goes back to the store. */
	release_all(pc, objs + k, n - k);
}

/* ------------------------------------------------------------------------ */
/* Draining                                                                  */
/* ------------------------------------------------------------------------ */

#define PC_BUSY		(~0u)	/* drain_slot(): its owner holds the lock */

/*
 * Under pc->drain_lock: empty the cache of @slot.  Returns the objects
 * released, or PC_BUSY when the owner held the lock (preempted in get/put).
 */
static unsigned drain_slot(struct ipm_pcache *pc, unsigned slot)
{
	struct pc_cache *c = __atomic_load_n(&pc->caches[slot], __ATOMIC_ACQUIRE);
	unsigned n;

	if (!c || IPM_LOAD(&c->count) == 0)	/* empty: skip without the lock */
		return 0;
	if (!pc_trylock_drainer(c))		/* Scenario A */
		return PC_BUSY;
	n = c->count;
	memcpy(pc->drain_buf, c->objs, n * sizeof(void *));
	IPM_STORE(&c->count, 0);
	pc_unlock(c);
	if (n) {
		IPM_PROBE2(drain, slot, n);
		release_all(pc, pc->drain_buf, n);
		_ipm_count(IPM_C_DRAINS, 1);
		_ipm_count(IPM_C_DRAINED_OBJECTS, n);
	}
	return n;
}

/* Drain @slot, or remember it in pc->busy for another round. */
static unsigned drain_or_defer(struct ipm_pcache *pc, unsigned slot, unsigned *nbusy)
{
	unsigned n = drain_slot(pc, slot);

	if (n != PC_BUSY)
		return n;
	pc->busy[slot / IPM_BITS_PER_LONG] |= 1ul << (slot % IPM_BITS_PER_LONG);
	(*nbusy)++;
	return 0;
}

/* Come back to the caches whose owner held the lock, until none is left. */
static unsigned drain_busy(struct ipm_pcache *pc, unsigned nbusy)
{
	unsigned total = 0, w, b, slot, n;
	unsigned long bits, nap_ns = 20000;

	while (nbusy) {
		/* Let a preempted owner run: sleep (no one waits for us), from
		 * 20 us up to 1 ms; sched_yield() would hand our CPU to any
		 * other task for a whole slice and still not reach an owner
		 * queued on another CPU. */
		struct timespec ts = { 0, (long)nap_ns };

		nanosleep(&ts, NULL);
		if (nap_ns < 1000000)
			nap_ns *= 2;
		for (w = 0; w < (pc->nslots + IPM_BITS_PER_LONG - 1) / IPM_BITS_PER_LONG; w++) {
			for (bits = pc->busy[w]; bits; bits &= bits - 1) {
				b = (unsigned)__builtin_ctzl(bits);
				slot = w * (unsigned)IPM_BITS_PER_LONG + b;
				n = drain_slot(pc, slot);
				if (n == PC_BUSY)
					continue;
				total += n;
				pc->busy[w] &= ~(1ul << b);
				nbusy--;
			}
		}
	}
	return total;
}

unsigned ipm_pcache_drain(struct ipm_pcache *pc, const ipm_mask_t *mask)
{
	unsigned total = 0, nbusy = 0, s;
	int i;

	if (!pc)
		return 0;
	pthread_mutex_lock(&pc->drain_lock);
	if (!mask) {
		for (s = 0; s < pc->nslots; s++)
			total += drain_or_defer(pc, s, &nbusy);
	} else {
		for (i = ipm_mask_next(mask, -1); i >= 0; i = ipm_mask_next(mask, i)) {
			if ((unsigned)i >= pc->nslots)
				break;
			total += drain_or_defer(pc, (unsigned)i, &nbusy);
		}
	}
	total += drain_busy(pc, nbusy);
	pthread_mutex_unlock(&pc->drain_lock);
	return total;
}

unsigned ipm_pcache_drain_node(struct ipm_pcache *pc, int node)
{
	unsigned total = 0, nbusy = 0, s, n;
	struct ipm_thread *t;
	bool match;

	if (!pc || node < 0 || !_ipm_ready())
		return 0;
	n = pc->nslots < _ipm_lib.max_threads ? pc->nslots : _ipm_lib.max_threads;
	pthread_mutex_lock(&pc->drain_lock);
	for (s = 0; s < n; s++) {
		/* Skip slots without a cache before looking at the registry. */
		if (!IPM_LOAD(&pc->caches[s]))
			continue;
		_ipm_rcu_read_lock();
		t = _ipm_slot_deref(s);
		match = t && IPM_LOAD(&t->node) == node;
		_ipm_rcu_read_unlock();
		if (match)
			total += drain_or_defer(pc, s, &nbusy);
	}
	total += drain_busy(pc, nbusy);
	pthread_mutex_unlock(&pc->drain_lock);
	return total;
}

unsigned ipm_pcache_count(const struct ipm_pcache *pc, int slot)
{
	struct ipm_pcache *p = (struct ipm_pcache *)pc;	/* the mutex */
	struct pc_cache *c;
	unsigned n = 0;

	if (!p || slot < 0 || (unsigned)slot >= p->nslots)
		return 0;
	pthread_mutex_lock(&p->drain_lock);
	c = __atomic_load_n(&p->caches[slot], __ATOMIC_ACQUIRE);
	if (c)
		n = IPM_LOAD(&c->count);
	pthread_mutex_unlock(&p->drain_lock);
	return n;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

/*
 * fork(): the child must not inherit a mutex or a per-thread lock held by a
 * thread that does not exist there.  prepare takes every mutex (no drain,
 * exit hook or destroy is half-way through at the fork); the child resets
 * every per-thread lock word: a thread of the parent caught inside get/put
 * left its cache consistent (count is each section's single commit), and
 * no drainer held one (drainers hold drain_lock).
 */
static void pc_atfork_prepare(void)
{
	struct ipm_pcache *pc;

	pthread_mutex_lock(&pcache_list_lock);
	for (pc = pcache_list; pc; pc = pc->next)
		pthread_mutex_lock(&pc->drain_lock);
}

static void pc_atfork_parent(void)
{
	struct ipm_pcache *pc;

	for (pc = pcache_list; pc; pc = pc->next)
		pthread_mutex_unlock(&pc->drain_lock);
	pthread_mutex_unlock(&pcache_list_lock);
}

static void pc_atfork_child(void)
{
	struct ipm_pcache *pc;
	struct pc_cache *c;
	unsigned s;

	for (pc = pcache_list; pc; pc = pc->next) {
		for (s = 0; s < pc->nslots; s++) {
			c = pc->caches[s];
			if (c) {
				c->lock = PC_FREE;
				c->drainer_waits = 0;
			}
		}
		pthread_mutex_unlock(&pc->drain_lock);
	}
	pthread_mutex_unlock(&pcache_list_lock);
}

static void pc_install_atfork(void)
{
	if (pthread_atfork(pc_atfork_prepare, pc_atfork_parent, pc_atfork_child))
		_ipm_die("pthread_atfork");
}

struct ipm_pcache *ipm_pcache_create(const struct ipm_pcache_ops *ops, void *ctx,
				     unsigned high, unsigned batch)
{
	static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
	struct ipm_pcache *pc;

	if (!_ipm_ready())
		return NULL;
	pthread_once(&atfork_once, pc_install_atfork);
	if (!ops || !ops->refill || !ops->release || batch == 0 || batch > high ||
	    high > PC_MAX_HIGH)
		return NULL;
	pc = calloc(1, sizeof(*pc));
	if (!pc)
		return NULL;
	pc->ops = *ops;
	pc->ctx = ctx;
	pc->high = high;
	pc->batch = batch;
	pc->nslots = _ipm_lib.max_threads;
	pc->caches = calloc(pc->nslots, sizeof(*pc->caches));
	pc->drain_buf = malloc(((size_t)high + 1) * sizeof(void *));
	pc->busy = calloc((pc->nslots + IPM_BITS_PER_LONG - 1) / IPM_BITS_PER_LONG,
			  sizeof(unsigned long));
	if (!pc->caches || !pc->drain_buf || !pc->busy) {
		free(pc->caches);
		free(pc->drain_buf);
		free(pc->busy);
		free(pc);
		return NULL;
	}
	pthread_mutex_init(&pc->drain_lock, NULL);

	pthread_mutex_lock(&pcache_list_lock);
	pc->prev = NULL;
	pc->next = pcache_list;
	if (pcache_list)
		pcache_list->prev = pc;
	pcache_list = pc;
	IPM_STORE(&pcache_live, pcache_live + 1);
	pthread_mutex_unlock(&pcache_list_lock);
	return pc;
}

void ipm_pcache_destroy(struct ipm_pcache *pc)
{
	struct pc_cache *c;
	unsigned s;

	if (!pc)
		return;
	/* After this no exit hook reaches pc (one in progress has finished). */
	pthread_mutex_lock(&pcache_list_lock);
	if (pc->prev)
		pc->prev->next = pc->next;
	else
		pcache_list = pc->next;
	if (pc->next)
		pc->next->prev = pc->prev;
	IPM_STORE(&pcache_live, pcache_live - 1);
	pthread_mutex_unlock(&pcache_list_lock);

	/* No owner is inside get/put any more (the caller's contract); a
	 * drainer still running holds drain_lock. */
	pthread_mutex_lock(&pc->drain_lock);
	for (s = 0; s < pc->nslots; s++) {
		c = pc->caches[s];
		if (!c)
			continue;
		pc->caches[s] = NULL;
		release_all(pc, c->objs, c->count);
		cache_free(c);
	}
	pthread_mutex_unlock(&pc->drain_lock);
	pthread_mutex_destroy(&pc->drain_lock);
	free(pc->drain_buf);
	free(pc->busy);
	free(pc->caches);
	free(pc);
}

/*
 * Called by ipm_thread_unregister() on the unregistering thread, while it
 * still owns @slot: give the thread's cached objects back and drop its
 * caches, so the slot's next owner starts empty (Scenario D).
 */
void _ipm_pcache_thread_exit(int slot)
{
	struct ipm_pcache *pc;
	struct pc_cache *c;

	if (slot < 0 || IPM_LOAD(&pcache_live) == 0)
		return;
	pthread_mutex_lock(&pcache_list_lock);
	for (pc = pcache_list; pc; pc = pc->next) {
		if ((unsigned)slot >= pc->nslots)
			continue;
		pthread_mutex_lock(&pc->drain_lock);
		c = pc->caches[slot];
		pc->caches[slot] = NULL;
		pthread_mutex_unlock(&pc->drain_lock);
		if (!c)
			continue;
		/* Private now: no drainer can reach it, its owner is us. */
		release_all(pc, c->objs, c->count);
		cache_free(c);
	}
	pthread_mutex_unlock(&pcache_list_lock);
}

/* White-box tests: lets a test hold a cache's lock as an owner would. */
uint32_t *_ipm_pcache_lock_word(struct ipm_pcache *pc, int slot)
{
	struct pc_cache *c;

	if (!pc || slot < 0 || (unsigned)slot >= pc->nslots)
		return NULL;
	c = __atomic_load_n(&pc->caches[slot], __ATOMIC_ACQUIRE);
	return c ? &c->lock : NULL;
}
