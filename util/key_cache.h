/* SPDX-License-Identifier: MIT */
/*
 * key_cache.h - a per-thread cache of 64-bit values by key, filled from a
 * shared table and invalidated through ipm_batch's ipm_inval_t, which may
 * run in a signal handler on top of a lookup.  A generation count, bumped
 * by every invalidation, tells a lookup that its fill raced one: the fill
 * is undone and retried.  Used by tests/test_batch.c and
 * bench/bench_inval.c (examples/route_cache.c spells the same idea out for
 * readers, on its own).  Header only; not installed.
 *
 * All accesses are relaxed atomics plus signal fences: the invalidation
 * runs on the owning thread (a handler, its poll, or while it is offline
 * and not in a lookup), so compiler ordering is all that is needed.
 */
#ifndef IPM_UTIL_KEY_CACHE_H
#define IPM_UTIL_KEY_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct key_cache {
	unsigned gen;		/* bumped by every invalidation */
	unsigned nkeys;
	uint8_t *valid;		/* [nkeys] */
	uint64_t *val;		/* [nkeys] */
};

/* @valid and @val: the caller's storage of @nkeys entries, zeroed. */
static inline void key_cache_init(struct key_cache *c, unsigned nkeys, uint8_t *valid,
				  uint64_t *val)
{
	c->gen = 0;
	c->nkeys = nkeys;
	c->valid = valid;
	c->val = val;
}

/* Drop @keys (@n of them; @n == 0: everything).  Keys out of range are
 * ignored.  Async-signal-safe; only on the cache's own thread, or for it
 * while it is offline. */
static inline void key_cache_inval(struct key_cache *c, const uint64_t *keys, unsigned n)
{
	unsigned i;

	__atomic_store_n(&c->gen, c->gen + 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (n == 0)
		for (i = 0; i < c->nkeys; i++)
			__atomic_store_n(&c->valid[i], 0, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++)
		if (keys[i] < c->nkeys)
			__atomic_store_n(&c->valid[keys[i]], 0, __ATOMIC_RELAXED);
}

/* The cached value of @k, or @table[k] (read with acquire) cached now. */
static inline uint64_t key_cache_lookup(struct key_cache *c, unsigned k, const uint64_t *table)
{
	for (;;) {
		unsigned g;
		uint64_t v;

		if (__atomic_load_n(&c->valid[k], __ATOMIC_RELAXED))
			return __atomic_load_n(&c->val[k], __ATOMIC_RELAXED);
		g = __atomic_load_n(&c->gen, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		v = __atomic_load_n(&table[k], __ATOMIC_ACQUIRE);
		__atomic_store_n(&c->val[k], v, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		__atomic_store_n(&c->valid[k], 1, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&c->gen, __ATOMIC_RELAXED) == g)
			return v;
		/* An invalidation ran in between: what we cached may be older. */
		__atomic_store_n(&c->valid[k], 0, __ATOMIC_RELAXED);
	}
}

static inline bool key_cache_has(const struct key_cache *c, unsigned k)
{
	return __atomic_load_n(&c->valid[k], __ATOMIC_RELAXED);
}

#endif
