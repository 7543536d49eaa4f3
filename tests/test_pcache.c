/* SPDX-License-Identifier: MIT */
/*
 * test_pcache.c - remote-drainable per-thread caches: every object is
 * accounted for through every path (get/put, refill/release, drain, drain by
 * node, thread exit, unregister, destroy), drains never interrupt anyone.
 *
 * The backing store is a checked pool of N distinct objects with a state
 * byte each ("in store" / "handed out"): a double hand-out or a double
 * release aborts at once.  Objects handed to a user also carry an in-use
 * flag flipped with an atomic exchange, so a cache that handed the same
 * object to two threads is caught at the second get.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

/* ------------------------------------------------------------------------ */
/* A checked backing store                                                   */
/* ------------------------------------------------------------------------ */

struct obj {
	atomic_int inuse;		/* 1 while a user holds it */
	unsigned idx;
	char pad[56];
};

struct store {
	pthread_mutex_t lock;
	unsigned n, nfree, batch;
	struct obj *objs;
	unsigned *freelist;		/* stack of indices */
	unsigned char *in_store;	/* 1: in the store, 0: out (cache or user) */
	atomic_ulong refill_calls, release_calls, refill_one, release_one;
};

static void store_die(const char *why, unsigned idx)
{
	fprintf(stderr, "store: %s (object %u)\n", why, idx);
	abort();
}

static void store_init(struct store *st, unsigned n, unsigned batch)
{
	unsigned i;

	memset(st, 0, sizeof(*st));
	pthread_mutex_init(&st->lock, NULL);
	st->n = n;
	st->batch = batch;
	st->objs = aligned_alloc(64, n * sizeof(struct obj));
	st->freelist = malloc(n * sizeof(unsigned));
	st->in_store = malloc(n);
	ck_assert_ptr_nonnull(st->objs);
	ck_assert_ptr_nonnull(st->freelist);
	ck_assert_ptr_nonnull(st->in_store);
	memset(st->objs, 0, n * sizeof(struct obj));
	for (i = 0; i < n; i++) {
		st->objs[i].idx = i;
		st->freelist[i] = n - 1 - i;
		st->in_store[i] = 1;
	}
	st->nfree = n;
}

static unsigned obj_index(struct store *st, const void *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)st->objs;

	if ((uintptr_t)p < (uintptr_t)st->objs || off % sizeof(struct obj) ||
	    off / sizeof(struct obj) >= st->n)
		store_die("foreign pointer released", ~0u);
	return (unsigned)(off / sizeof(struct obj));
}

static unsigned st_refill(void *ctx, void **objs, unsigned n)
{
	struct store *st = ctx;
	unsigned k = 0, idx;

	if (n == 0 || n > st->batch)
		store_die("refill asked for more than a batch", n);
	atomic_fetch_add(&st->refill_calls, 1);
	if (n == 1)
		atomic_fetch_add(&st->refill_one, 1);
	pthread_mutex_lock(&st->lock);
	while (k < n && st->nfree) {
		idx = st->freelist[--st->nfree];
		if (!st->in_store[idx])
			store_die("double hand-out", idx);
		st->in_store[idx] = 0;
		objs[k++] = &st->objs[idx];
	}
	pthread_mutex_unlock(&st->lock);
	return k;
}

static void st_release(void *ctx, void *const *objs, unsigned n)
{
	struct store *st = ctx;
	unsigned i, idx;

	if (n == 0 || n > st->batch)
		store_die("release of more than a batch", n);
	atomic_fetch_add(&st->release_calls, 1);
	if (n == 1)
		atomic_fetch_add(&st->release_one, 1);
	pthread_mutex_lock(&st->lock);
	for (i = 0; i < n; i++) {
		idx = obj_index(st, objs[i]);
		if (st->in_store[idx])
			store_die("double release", idx);
		if (atomic_load(&st->objs[idx].inuse))
			store_die("release of an object a user holds", idx);
		st->in_store[idx] = 1;
		st->freelist[st->nfree++] = idx;
	}
	pthread_mutex_unlock(&st->lock);
}

static const struct ipm_pcache_ops st_ops = { st_refill, st_release };

static unsigned store_free(struct store *st)
{
	unsigned n;

	pthread_mutex_lock(&st->lock);
	n = st->nfree;
	pthread_mutex_unlock(&st->lock);
	return n;
}

/* Everything is back: every object exactly once (count, bitmap, checksum). */
static void store_check_full(struct store *st)
{
	uint64_t sum = 0, want = 0;
	unsigned i;

	pthread_mutex_lock(&st->lock);
	ck_assert_uint_eq(st->nfree, st->n);
	for (i = 0; i < st->n; i++) {
		ck_assert_uint_eq(st->in_store[i], 1);
		sum += (uintptr_t)&st->objs[st->freelist[i]];
		want += (uintptr_t)&st->objs[i];
	}
	pthread_mutex_unlock(&st->lock);
	ck_assert_uint_eq(sum, want);
}

static void store_destroy(struct store *st)
{
	free(st->objs);
	free(st->freelist);
	free(st->in_store);
	pthread_mutex_destroy(&st->lock);
}

/* A user takes / gives back an object: catches a double hand-out. */
static void *take(struct ipm_pcache *pc)
{
	struct obj *o = ipm_pcache_get(pc);

	if (o && atomic_exchange(&o->inuse, 1))
		store_die("object handed out twice", o->idx);
	return o;
}

static void give(struct ipm_pcache *pc, void *p)
{
	struct obj *o = p;

	if (!atomic_exchange(&o->inuse, 0))
		store_die("object given back twice", o->idx);
	ipm_pcache_put(pc, o);
}

/* ------------------------------------------------------------------------ */
/* Scripted threads: register, take/give, park until told, exit              */
/* ------------------------------------------------------------------------ */

struct pw {
	pthread_t th;
	struct ipm_pcache *pc;
	int slot;
	bool no_register;
	bool unregister;	/* call ipm_thread_unregister() after the script */
	unsigned takes, gives;	/* take @takes, then give @gives of them back */
	void *held[256];
	unsigned nheld;
	atomic_int ready;	/* script done, parked */
	atomic_int go;		/* leave */
	atomic_int gone;	/* about to return */
};

static void *pw_main(void *arg)
{
	struct pw *w = arg;
	unsigned i;
	double end;

	w->slot = w->no_register ? -1 : ipm_thread_register();
	if (!w->no_register && w->slot < 0)
		abort();
	for (i = 0; i < w->takes; i++) {
		void *o = take(w->pc);

		if (o)
			w->held[w->nheld++] = o;
	}
	for (i = 0; i < w->gives && w->nheld; i++)
		give(w->pc, w->held[--w->nheld]);
	if (w->unregister && ipm_thread_unregister())
		abort();
	atomic_store(&w->ready, 1);
	end = now_s() + 60;
	while (!atomic_load(&w->go)) {
		if (now_s() > end)
			abort();	/* the test forgot us: fail, never hang */
		sched_yield();
	}
	/* Give back what we hold, then exit (unregisters: hook). */
	while (w->nheld)
		give(w->pc, w->held[--w->nheld]);
	atomic_store(&w->gone, 1);
	return NULL;
}

static void pw_start(struct pw *w, struct ipm_pcache *pc, unsigned takes, unsigned gives)
{
	memset(w, 0, sizeof(*w));
	w->pc = pc;
	w->takes = takes;
	w->gives = gives;
	ck_assert_int_le(takes, 256);
}

static void pw_run(struct pw *w)
{
	ck_assert_int_eq(pthread_create(&w->th, NULL, pw_main, w), 0);
	ck_assert_msg(wait_int(&w->ready, 1, 30.0), "worker never ready");
}

static void pw_finish(struct pw *w)
{
	atomic_store(&w->go, 1);
	ck_assert_int_eq(pthread_join(w->th, NULL), 0);
}

static uint64_t interrupts_of(int slot)
{
	struct ipm_thread_stats ts;

	ck_assert_int_eq(ipm_thread_stats_get(slot, &ts), 0);
	return ts.interrupts;
}

static struct ipm_stats stats_now(void)
{
	struct ipm_stats s;

	ck_assert_int_eq(ipm_stats_get(&s), 0);
	return s;
}

/* ------------------------------------------------------------------------ */
/* Single thread                                                             */
/* ------------------------------------------------------------------------ */

START_TEST(create_rejects_bad_arguments)
{
	struct ipm_pcache_ops no_refill = { NULL, st_release };
	struct ipm_pcache_ops no_release = { st_refill, NULL };
	struct store st;

	store_init(&st, 16, 4);
	ck_assert_ptr_null(ipm_pcache_create(NULL, &st, 8, 4));
	ck_assert_ptr_null(ipm_pcache_create(&no_refill, &st, 8, 4));
	ck_assert_ptr_null(ipm_pcache_create(&no_release, &st, 8, 4));
	ck_assert_ptr_null(ipm_pcache_create(&st_ops, &st, 8, 0));
	ck_assert_ptr_null(ipm_pcache_create(&st_ops, &st, 4, 8));
	ck_assert_ptr_null(ipm_pcache_create(&st_ops, &st, (1u << 24) + 1, 4));
	/* NULL pcache: harmless. */
	ck_assert_ptr_null(ipm_pcache_get(NULL));
	ipm_pcache_put(NULL, &st.objs[0]);
	ck_assert_uint_eq(ipm_pcache_count(NULL, 0), 0);
	ck_assert_uint_eq(ipm_pcache_drain(NULL, NULL), 0);
	ck_assert_uint_eq(ipm_pcache_drain_node(NULL, 0), 0);
	ipm_pcache_destroy(NULL);
	store_destroy(&st);
}
END_TEST

START_TEST(create_before_init_fails)
{
	struct store st;

	store_init(&st, 16, 4);
	ck_assert_ptr_null(ipm_pcache_create(&st_ops, &st, 8, 4));
	store_destroy(&st);
}
END_TEST

START_TEST(get_put_batches_and_high)
{
	struct store st;
	struct ipm_pcache *pc;
	void *o[16];
	int slot = ipm_thread_register(), i;

	ck_assert_int_ge(slot, 0);
	store_init(&st, 64, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	ck_assert_ptr_nonnull(pc);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);

	/* First get: one refill of a batch, one handed out, three cached. */
	o[0] = take(pc);
	ck_assert_ptr_nonnull(o[0]);
	ck_assert_uint_eq(atomic_load(&st.refill_calls), 1);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 3);
	ck_assert_uint_eq(store_free(&st), 60);
	for (i = 1; i < 4; i++)
		o[i] = take(pc);
	ck_assert_uint_eq(atomic_load(&st.refill_calls), 1);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);
	for (i = 4; i < 12; i++)
		o[i] = take(pc);
	ck_assert_uint_eq(atomic_load(&st.refill_calls), 3);
	ck_assert_uint_eq(store_free(&st), 52);

	/* Puts fill the cache up to high; the next releases a batch. */
	for (i = 0; i < 8; i++)
		give(pc, o[i]);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 8);
	ck_assert_uint_eq(atomic_load(&st.release_calls), 0);
	give(pc, o[8]);
	ck_assert_uint_eq(atomic_load(&st.release_calls), 1);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 5);
	ck_assert_uint_eq(store_free(&st), 56);
	for (i = 9; i < 12; i++)
		give(pc, o[i]);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 8);
	ck_assert_uint_eq(store_free(&st), 56);
	ck_assert_uint_eq(atomic_load(&st.refill_one), 0);
	ck_assert_uint_eq(atomic_load(&st.release_one), 0);

	/* Destroy gives back everything. */
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

/* Bulk: one lock for what the cache holds, the rest through the store. */
START_TEST(bulk_get_put)
{
	struct store st;
	struct ipm_pcache *pc;
	void *o[96];	/* o[25 .. 90) below */
	int slot = ipm_thread_register(), i;
	unsigned n;

	ck_assert_int_ge(slot, 0);
	store_init(&st, 64, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	ck_assert_ptr_nonnull(pc);
	/* Empty cache: all 10 from the store, in batches of at most 4. */
	n = ipm_pcache_get_bulk(pc, o, 10);
	ck_assert_uint_eq(n, 10);
	ck_assert_uint_eq(atomic_load(&st.refill_calls), 3);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);
	ck_assert_uint_eq(store_free(&st), 54);
	for (i = 0; i < 10; i++)
		if (atomic_exchange(&((struct obj *)o[i])->inuse, 1))
			store_die("object handed out twice", ((struct obj *)o[i])->idx);
	/* Put 10: 8 fit under high, 2 go back to the store. */
	for (i = 0; i < 10; i++)
		atomic_store(&((struct obj *)o[i])->inuse, 0);
	ipm_pcache_put_bulk(pc, o, 10);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 8);
	ck_assert_uint_eq(store_free(&st), 56);
	/* Get 5: from the cache, most recent first. */
	n = ipm_pcache_get_bulk(pc, o + 20, 5);
	ck_assert_uint_eq(n, 5);
	ck_assert_ptr_eq(o[20], o[7]);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 3);
	/* More than everything: the cache's 3, then the store until empty. */
	n = ipm_pcache_get_bulk(pc, o + 25, 55 + 10);
	ck_assert_uint_eq(n, 3 + 56);
	ck_assert_uint_eq(store_free(&st), 0);
	ipm_pcache_put_bulk(pc, o + 25, n);
	ipm_pcache_put_bulk(pc, o + 20, 5);
	ipm_pcache_put_bulk(NULL, o, 1);
	ipm_pcache_put_bulk(pc, NULL, 1);
	ck_assert_uint_eq(ipm_pcache_get_bulk(pc, NULL, 3), 0);
	ck_assert_uint_eq(ipm_pcache_get_bulk(NULL, o, 3), 0);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

START_TEST(empty_store_returns_null)
{
	struct store st;
	struct ipm_pcache *pc;
	void *o[8];
	int i;

	ck_assert_int_ge(ipm_thread_register(), 0);
	store_init(&st, 5, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	for (i = 0; i < 5; i++)
		ck_assert_ptr_nonnull(o[i] = take(pc));
	ck_assert_ptr_null(take(pc));
	ck_assert_ptr_null(take(pc));
	for (i = 0; i < 5; i++)
		give(pc, o[i]);
	/* Cached ones are handed out again before the store is asked. */
	for (i = 0; i < 5; i++)
		ck_assert_ptr_nonnull(o[i] = take(pc));
	ck_assert_ptr_null(take(pc));
	for (i = 0; i < 5; i++)
		give(pc, o[i]);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

START_TEST(unregistered_goes_through_the_store)
{
	struct store st;
	struct ipm_pcache *pc;
	void *a, *b;
	int slot;

	store_init(&st, 16, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	/* The test thread is not registered. */
	a = take(pc);
	b = take(pc);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(atomic_load(&st.refill_one), 2);
	ck_assert_uint_eq(store_free(&st), 14);
	give(pc, a);
	ck_assert_uint_eq(atomic_load(&st.release_one), 1);
	ck_assert_uint_eq(store_free(&st), 15);

	/* Register: b goes to the cache; unregister: it goes back. */
	slot = ipm_thread_register();
	ck_assert_int_ge(slot, 0);
	give(pc, b);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 1);
	ck_assert_uint_eq(store_free(&st), 15);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);
	store_check_full(&st);
	/* And it works straight through again. */
	a = take(pc);
	ck_assert_uint_eq(atomic_load(&st.refill_one), 3);
	give(pc, a);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

START_TEST(drain_own_cache_and_skip_empty)
{
	struct store st;
	struct ipm_pcache *pc;
	struct ipm_stats s0, s1;
	ipm_mask_t *m = ipm_mask_alloc();
	void *o[6];
	int slot = ipm_thread_register(), i;

	store_init(&st, 32, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	for (i = 0; i < 6; i++)
		o[i] = take(pc);
	for (i = 0; i < 6; i++)
		give(pc, o[i]);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 8);
	s0 = stats_now();
	ipm_mask_set(m, slot);
	ck_assert_uint_eq(ipm_pcache_drain(pc, m), 8);
	s1 = stats_now();
	ck_assert_uint_eq(s1.drains - s0.drains, 1);
	ck_assert_uint_eq(s1.drained_objects - s0.drained_objects, 8);
	store_check_full(&st);
	/* Empty: skipped, nothing counted, the store is not called. */
	ck_assert_uint_eq(ipm_pcache_drain(pc, m), 0);
	ck_assert_uint_eq(ipm_pcache_drain(pc, NULL), 0);
	s0 = stats_now();
	ck_assert_uint_eq(s0.drains, s1.drains);
	/* Still usable afterwards. */
	o[0] = take(pc);
	ck_assert_ptr_nonnull(o[0]);
	give(pc, o[0]);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

/* An empty cache is skipped without its lock: with the lock held (as by an
 * owner stuck inside get/put), the drain still returns at once. */
START_TEST(empty_cache_skipped_without_its_lock)
{
	struct store st;
	struct ipm_pcache *pc;
	ipm_mask_t *m = ipm_mask_alloc();
	uint32_t *lock;
	void *o;
	int slot = ipm_thread_register();

	store_init(&st, 32, 4);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	o = take(pc);
	give(pc, o);
	ck_assert_uint_eq(ipm_pcache_drain(pc, NULL), 4);
	lock = _ipm_pcache_lock_word(pc, slot);
	ck_assert_ptr_nonnull(lock);
	ck_assert_uint_eq(__atomic_exchange_n(lock, 1u, __ATOMIC_ACQUIRE), 0);
	ipm_mask_set(m, slot);
	ck_assert_uint_eq(ipm_pcache_drain(pc, NULL), 0);	/* would spin forever */
	ck_assert_uint_eq(ipm_pcache_drain(pc, m), 0);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, 0), 0);
	__atomic_store_n(lock, 0u, __ATOMIC_RELEASE);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Other threads                                                             */
/* ------------------------------------------------------------------------ */

#define NW 6

START_TEST(drain_mask_and_all_interrupts_no_one)
{
	struct store st;
	struct ipm_pcache *pc;
	struct pw w[NW];
	struct ipm_stats s0, s1;
	uint64_t irq[NW];
	unsigned cnt[NW], want = 0, got;
	ipm_mask_t *m = ipm_mask_alloc();
	int i;

	store_init(&st, 1024, 8);
	pc = ipm_pcache_create(&st_ops, &st, 32, 8);
	for (i = 0; i < NW; i++) {
		/* Worker i keeps 2 objects and caches the rest of what it took. */
		pw_start(&w[i], pc, 3 + 5 * (unsigned)i, 1 + 5 * (unsigned)i);
		pw_run(&w[i]);
	}
	/* Worker 0 took 3 (refill 8), gave 1 back: 6 cached, 2 held. */
	ck_assert_uint_eq(ipm_pcache_count(pc, w[0].slot), 6);
	for (i = 0; i < NW; i++) {
		cnt[i] = ipm_pcache_count(pc, w[i].slot);
		ck_assert_uint_gt(cnt[i], 0);
		irq[i] = interrupts_of(w[i].slot);
		if (i % 2 == 0) {
			ipm_mask_set(m, w[i].slot);
			want += cnt[i];
		}
	}
	s0 = stats_now();
	got = ipm_pcache_drain(pc, m);
	s1 = stats_now();
	ck_assert_uint_eq(got, want);
	ck_assert_uint_eq(s1.drains - s0.drains, NW / 2);
	ck_assert_uint_eq(s1.drained_objects - s0.drained_objects, want);
	for (i = 0; i < NW; i++)
		ck_assert_uint_eq(ipm_pcache_count(pc, w[i].slot), i % 2 == 0 ? 0 : cnt[i]);
	/* Accounting: store + caches + held == N. */
	ck_assert_uint_eq(store_free(&st) + (cnt[1] + cnt[3] + cnt[5]) + 2 * NW, 1024);

	want = cnt[1] + cnt[3] + cnt[5];
	ck_assert_uint_eq(ipm_pcache_drain(pc, NULL), want);
	for (i = 0; i < NW; i++) {
		ck_assert_uint_eq(ipm_pcache_count(pc, w[i].slot), 0);
		ck_assert_uint_eq(interrupts_of(w[i].slot), irq[i]);
	}
	s1 = stats_now();
	ck_assert_uint_eq(s1.signals_sent, s0.signals_sent);
	ck_assert_uint_eq(s1.drains - s0.drains, NW);
	ck_assert_uint_eq(store_free(&st) + 2 * NW, 1024);

	for (i = 0; i < NW; i++)
		pw_finish(&w[i]);
	/* The workers put back what they held on exit: into their caches,
	 * which exit gave back. */
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

static void set_node(int slot, int node)
{
	struct ipm_thread *t;

	_ipm_rcu_read_lock();
	t = _ipm_slot_deref((unsigned)slot);
	ck_assert_ptr_nonnull(t);
	IPM_STORE(&t->node, node);
	_ipm_rcu_read_unlock();
}

START_TEST(drain_by_node)
{
	struct store st;
	struct ipm_pcache *pc;
	struct pw w[NW];
	unsigned cnt[NW], want0 = 0, want1 = 0;
	ipm_mask_t *m = ipm_mask_alloc();
	int i;

	store_init(&st, 1024, 8);
	pc = ipm_pcache_create(&st_ops, &st, 32, 8);
	for (i = 0; i < NW; i++) {
		pw_start(&w[i], pc, 10, 7);
		pw_run(&w[i]);
	}
	/* Spread the (parked, signal-mode) workers over fake nodes 40 and 41:
	 * their node is not sampled again while they park. */
	for (i = 0; i < NW; i++) {
		set_node(w[i].slot, 40 + i % 2);
		cnt[i] = ipm_pcache_count(pc, w[i].slot);
		ck_assert_uint_gt(cnt[i], 0);
		if (i % 2)
			want1 += cnt[i];
		else
			want0 += cnt[i];
	}
	ck_assert_int_eq(ipm_mask_set_node(m, 41), NW / 2);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, 42), 0);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, -1), 0);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, 41), want1);
	for (i = 0; i < NW; i++)
		ck_assert_uint_eq(ipm_pcache_count(pc, w[i].slot), i % 2 ? 0 : cnt[i]);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, 41), 0);
	ck_assert_uint_eq(ipm_pcache_drain_node(pc, 40), want0);
	for (i = 0; i < NW; i++)
		ck_assert_uint_eq(ipm_pcache_count(pc, w[i].slot), 0);
	ck_assert_uint_eq(store_free(&st) + 3 * NW, 1024);
	for (i = 0; i < NW; i++)
		pw_finish(&w[i]);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

START_TEST(drain_by_real_node)
{
	struct store st;
	struct ipm_pcache *pc;
	struct pw w[2];
	ipm_mask_t *m = ipm_mask_alloc();
	unsigned want = 0, got = 0;
	int i, node, max = (ipm_features() & IPM_FEAT_NUMA) ? 64 : 0;

	store_init(&st, 256, 8);
	pc = ipm_pcache_create(&st_ops, &st, 32, 8);
	for (i = 0; i < 2; i++) {
		pw_start(&w[i], pc, 5, 5);
		pw_run(&w[i]);
		want += ipm_pcache_count(pc, w[i].slot);
	}
	/* Every registered thread has a node; draining all nodes gets all. */
	for (node = 0; node <= max; node++)
		got += ipm_pcache_drain_node(pc, node);
	ck_assert_uint_eq(got, want);
	store_check_full(&st);
	for (i = 0; i < 2; i++)
		pw_finish(&w[i]);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

START_TEST(thread_exit_gives_back_and_slot_starts_empty)
{
	struct store st;
	struct ipm_pcache *pc, *pc2;
	struct pw a, b;
	int slot;

	store_init(&st, 256, 8);
	pc = ipm_pcache_create(&st_ops, &st, 32, 8);
	pc2 = ipm_pcache_create(&st_ops, &st, 16, 4);	/* a second pcache: exit walks both */
	pw_start(&a, pc, 20, 13);
	pw_run(&a);
	slot = a.slot;
	ck_assert_uint_gt(ipm_pcache_count(pc, slot), 0);
	ck_assert_uint_eq(store_free(&st) + ipm_pcache_count(pc, slot) + 7, 256);
	pw_finish(&a);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);
	store_check_full(&st);

	/* The next owner of the slot starts empty: its first get refills. */
	pw_start(&b, pc2, 1, 0);
	pw_run(&b);
	ck_assert_int_eq(b.slot, slot);
	ck_assert_uint_eq(ipm_pcache_count(pc, slot), 0);
	ck_assert_uint_eq(ipm_pcache_count(pc2, slot), 3);
	pw_finish(&b);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	ipm_pcache_destroy(pc2);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

START_TEST(explicit_unregister_gives_back)
{
	struct store st;
	struct ipm_pcache *pc;
	struct pw a, b;
	unsigned long one;

	store_init(&st, 256, 8);
	pc = ipm_pcache_create(&st_ops, &st, 32, 8);
	pw_start(&a, pc, 20, 13);
	a.unregister = true;
	pw_run(&a);
	/* Its 7 held objects are out; its cache went back at unregister. */
	ck_assert_uint_eq(store_free(&st), 256 - 7);
	ck_assert_uint_eq(ipm_pcache_count(pc, a.slot), 0);
	one = atomic_load(&st.release_one);
	pw_finish(&a);	/* gives the 7 back through the store, one by one */
	ck_assert_uint_eq(atomic_load(&st.release_one) - one, 7);
	store_check_full(&st);

	/* An unregistered thread: refill 1 / release 1 only. */
	pw_start(&b, pc, 3, 3);
	b.no_register = true;
	one = atomic_load(&st.refill_one);
	pw_run(&b);
	ck_assert_uint_eq(atomic_load(&st.refill_one) - one, 3);
	pw_finish(&b);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_destroy(&st);
}
END_TEST

START_TEST(destroy_releases_caches_of_live_threads)
{
	struct store st;
	struct ipm_pcache *pc;
	struct pw w[NW];
	int i;

	store_init(&st, 1024, 8);
	pc = ipm_pcache_create(&st_ops, &st, 64, 8);
	for (i = 0; i < NW; i++) {
		pw_start(&w[i], pc, 40, 40);
		pw_run(&w[i]);
		ck_assert_uint_gt(ipm_pcache_count(pc, w[i].slot), 0);
	}
	ck_assert_uint_lt(store_free(&st), 1024);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	/* They exit afterwards: the hook finds no pcache. */
	for (i = 0; i < NW; i++)
		pw_finish(&w[i]);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

START_TEST(destroy_after_fini)
{
	struct store st;
	struct ipm_pcache *pc;
	void *o[4];
	int i;

	store_init(&st, 64, 4);
	ck_assert_int_ge(ipm_thread_register(), 0);
	pc = ipm_pcache_create(&st_ops, &st, 8, 4);
	for (i = 0; i < 4; i++)
		o[i] = take(pc);
	give(pc, o[0]);
	ipm_fini();	/* unregisters us: our cache goes back */
	ck_assert_uint_eq(store_free(&st), 61);
	/* Straight through now. */
	give(pc, o[1]);
	o[0] = take(pc);
	ck_assert_ptr_nonnull(o[0]);
	give(pc, o[0]);
	give(pc, o[2]);
	give(pc, o[3]);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
	ck_assert_int_eq(ipm_init(NULL), 0);	/* for the fixture's fini */
}
END_TEST

/* A drain never waits for an owner's callback: the owner is blocked inside
 * release() (a put above high) while the control thread drains its cache. */
static __thread bool block_my_release;
static atomic_int in_release, release_gate;

static void st_release_blocking(void *ctx, void *const *objs, unsigned n)
{
	if (block_my_release) {
		double end = now_s() + 30;

		atomic_store(&in_release, 1);
		while (!atomic_load(&release_gate))
			if (now_s() > end)
				abort();
			else
				sched_yield();
	}
	st_release(ctx, objs, n);
}

static const struct ipm_pcache_ops blocking_ops = { st_refill, st_release_blocking };

struct blocked_owner {
	struct ipm_pcache *pc;
	int slot;
	atomic_int ready;
};

static void *blocked_owner_main(void *arg)
{
	struct blocked_owner *b = arg;
	void *o[17];
	int i;

	b->slot = ipm_thread_register();
	if (b->slot < 0)
		abort();
	for (i = 0; i < 17; i++)
		o[i] = take(b->pc);
	atomic_store(&b->ready, 1);
	block_my_release = true;
	for (i = 0; i < 17; i++)
		give(b->pc, o[i]);	/* the 10th put releases a batch: blocks */
	return NULL;
}

START_TEST(drain_does_not_wait_for_owner_callbacks)
{
	struct store st;
	struct ipm_pcache *pc;
	struct blocked_owner b = { 0 };
	pthread_t th;
	double t0;
	unsigned got;

	store_init(&st, 64, 8);
	pc = ipm_pcache_create(&blocking_ops, &st, 16, 8);
	b.pc = pc;
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_owner_main, &b), 0);
	ck_assert(wait_int(&b.ready, 1, 30.0));
	ck_assert(wait_int(&in_release, 1, 30.0));
	/* 17 gets refilled 24 (7 stay cached); the 10th put took the cache to
	 * 17 > high: 8 went to release() (blocked there), 9 are cached, 7
	 * objects are still in the owner's hands. */
	t0 = now_s();
	got = ipm_pcache_drain(pc, NULL);
	ck_assert_uint_eq(got, 9);
	ck_assert_msg(now_s() - t0 < 10.0, "the drain waited for the owner's callback");
	ck_assert_int_eq(atomic_load(&release_gate), 0);	/* still blocked */
	ck_assert_uint_eq(store_free(&st), 64 - 8 - 7);
	atomic_store(&release_gate, 1);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_destroy(&st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Stress: drains while owners hammer get/put                                */
/* ------------------------------------------------------------------------ */

#define SW		4
#define SHOLD		48
#define STRESS_S	2.0

struct hammer {
	pthread_t th;
	struct ipm_pcache *pc;
	int slot;
	atomic_int ready, stop;
	atomic_ulong ops;
	unsigned seed;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	void *held[SHOLD];
	unsigned n = 0, r;
	unsigned long ops = 0;

	h->slot = ipm_thread_register();
	if (h->slot < 0)
		abort();
	atomic_store(&h->ready, 1);
	while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
		r = rand_r(&h->seed);
		/* Mostly get/put pairs, sometimes runs that cross high/batch. */
		if ((r & 7) == 0) {
			unsigned k = (r >> 3) % SHOLD;

			while (n < k) {
				void *o = take(h->pc);

				if (!o)
					break;
				held[n++] = o;
			}
			while (n > k / 2)
				give(h->pc, held[--n]);
		} else {
			void *o = take(h->pc);

			if (o)
				give(h->pc, o);
		}
		if ((++ops & 255) == 0) {
			atomic_store_explicit(&h->ops, ops, memory_order_relaxed);
			spin_relax();
		}
	}
	while (n)
		give(h->pc, held[--n]);
	atomic_store(&h->ops, ops);
	return NULL;	/* exit: the hook gives the cache back */
}

/* A second drainer, unregistered: drains of one pcache are serialised. */
struct drainer {
	pthread_t th;
	struct ipm_pcache *pc;
	atomic_int stop;
	unsigned long drained;
};

static void *drainer_main(void *arg)
{
	struct drainer *d = arg;

	while (!atomic_load(&d->stop)) {
		d->drained += ipm_pcache_drain(d->pc, NULL);
		d->drained += ipm_pcache_drain_node(d->pc, 0);
		sched_yield();
	}
	return NULL;
}

START_TEST(stress_drain_while_owners_hammer)
{
	struct drainer dr;
	struct store st;
	struct ipm_pcache *pc;
	struct hammer h[SW];
	struct ipm_stats s0, s1;
	uint64_t irq[SW];
	ipm_mask_t *m = ipm_mask_alloc();
	unsigned long drained = 0, rounds = 0;
	double end;
	int i;

	/* Fewer objects than the hammers could cache: the store runs dry too. */
	store_init(&st, SW * 40, 8);
	pc = ipm_pcache_create(&st_ops, &st, 24, 8);
	memset(h, 0, sizeof(h));
	for (i = 0; i < SW; i++) {
		h[i].pc = pc;
		h[i].seed = 12345u + (unsigned)i;
		ck_assert_int_eq(pthread_create(&h[i].th, NULL, hammer_main, &h[i]), 0);
	}
	for (i = 0; i < SW; i++) {
		ck_assert(wait_int(&h[i].ready, 1, 30.0));
		irq[i] = interrupts_of(h[i].slot);
	}
	s0 = stats_now();
	memset(&dr, 0, sizeof(dr));
	dr.pc = pc;
	ck_assert_int_eq(pthread_create(&dr.th, NULL, drainer_main, &dr), 0);
	end = now_s() + STRESS_S;
	while (now_s() < end) {
		switch (rounds++ % 3) {
		case 0:
			drained += ipm_pcache_drain(pc, NULL);
			break;
		case 1:
			ipm_mask_zero(m);
			ipm_mask_set(m, h[rounds % SW].slot);
			drained += ipm_pcache_drain(pc, m);
			break;
		default:
			drained += ipm_pcache_drain_node(pc, 0);
			break;
		}
		(void)ipm_pcache_count(pc, h[rounds % SW].slot);
	}
	atomic_store(&dr.stop, 1);
	ck_assert_int_eq(pthread_join(dr.th, NULL), 0);
	drained += dr.drained;
	s1 = stats_now();
	for (i = 0; i < SW; i++) {
		ck_assert_uint_eq(interrupts_of(h[i].slot), irq[i]);
		atomic_store(&h[i].stop, 1);
	}
	for (i = 0; i < SW; i++) {
		ck_assert_int_eq(pthread_join(h[i].th, NULL), 0);
		ck_assert_uint_gt(atomic_load(&h[i].ops), 0);
	}
	ck_assert_uint_eq(s1.signals_sent, s0.signals_sent);
	ck_assert_uint_eq(s1.drained_objects - s0.drained_objects, drained);
	ck_assert_uint_gt(drained, 0);
	/* Every hammer exited: everything went back exactly once. */
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	fprintf(stderr, "stress: %lu drain rounds, %lu objects drained, ops:", rounds, drained);
	for (i = 0; i < SW; i++)
		fprintf(stderr, " %lu", (unsigned long)atomic_load(&h[i].ops));
	fprintf(stderr, "\n");
	ipm_mask_free(m);
	store_destroy(&st);
}
END_TEST

/* Threads come and go (slot reuse) while a drainer runs. */
static void *churn_main(void *arg)
{
	struct ipm_pcache *pc = arg;
	void *held[16];
	int i, n = 0;

	if (ipm_thread_register() < 0)
		abort();
	for (i = 0; i < 200; i++) {
		void *o = take(pc);

		if (o && n < 16)
			held[n++] = o;
		else if (o)
			give(pc, o);
		if (n && (i & 3) == 0)
			give(pc, held[--n]);
	}
	while (n)
		give(pc, held[--n]);
	return NULL;
}

START_TEST(stress_exit_churn_while_draining)
{
	struct store st;
	struct ipm_pcache *pc;
	pthread_t th[4];
	double end;
	int i;

	store_init(&st, 512, 8);
	pc = ipm_pcache_create(&st_ops, &st, 16, 8);
	end = now_s() + STRESS_S / 2;
	while (now_s() < end) {
		for (i = 0; i < 4; i++)
			ck_assert_int_eq(pthread_create(&th[i], NULL, churn_main, pc), 0);
		ipm_pcache_drain(pc, NULL);
		ipm_pcache_drain_node(pc, 0);
		for (i = 0; i < 4; i++)
			ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		store_check_full(&st);
	}
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

/* fork() while owners hammer and a drainer drains: the child inherits no
 * held lock, drains and destroys, and its store sees no double release. */
static struct store *fork_store;

static void fork_prepare(void)
{
	pthread_mutex_lock(&fork_store->lock);
}

static void fork_unlock(void)
{
	pthread_mutex_unlock(&fork_store->lock);
}

static int child_check(struct store *st, struct ipm_pcache *pc)
{
	unsigned i, n = 0;
	unsigned char *seen;

	alarm(20);	/* a hang fails the child instead of the suite */
	ipm_pcache_drain(pc, NULL);
	ipm_pcache_drain_node(pc, 0);
	ipm_pcache_destroy(pc);
	seen = calloc(st->n, 1);
	if (!seen)
		return 3;
	for (i = 0; i < st->nfree; i++) {
		unsigned idx = st->freelist[i];

		if (seen[idx]++ || !st->in_store[idx])
			return 4;
	}
	free(seen);
	for (i = 0; i < st->n; i++)
		n += st->in_store[i];
	return n == st->nfree ? 0 : 5;
}

/* Leave the child by exec: at exit, valgrind would report the stacks of the
 * parent's threads (which do not exist in the child) as possibly lost. */
static void child_exit(int code)
{
	char cmd[16];

	snprintf(cmd, sizeof(cmd), "exit %d", code);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	_exit(code);
}

START_TEST(fork_while_hammering)
{
	struct store st;
	struct ipm_pcache *pc;
	struct hammer h[2];
	struct drainer dr;
	int i, k, status = -1;
	pid_t pid;

	store_init(&st, 256, 8);
	fork_store = &st;
	ck_assert_int_eq(pthread_atfork(fork_prepare, fork_unlock, fork_unlock), 0);
	pc = ipm_pcache_create(&st_ops, &st, 24, 8);
	memset(h, 0, sizeof(h));
	memset(&dr, 0, sizeof(dr));
	dr.pc = pc;
	for (i = 0; i < 2; i++) {
		h[i].pc = pc;
		h[i].seed = 777u + (unsigned)i;
		ck_assert_int_eq(pthread_create(&h[i].th, NULL, hammer_main, &h[i]), 0);
		ck_assert(wait_int(&h[i].ready, 1, 30.0));
	}
	ck_assert_int_eq(pthread_create(&dr.th, NULL, drainer_main, &dr), 0);
	for (k = 0; k < 20; k++) {
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			child_exit(child_check(&st, pc));
		status = wait_child(pid, 60.0);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child %d: status %#x", k, status);
	}
	atomic_store(&dr.stop, 1);
	ck_assert_int_eq(pthread_join(dr.th, NULL), 0);
	for (i = 0; i < 2; i++) {
		atomic_store(&h[i].stop, 1);
		ck_assert_int_eq(pthread_join(h[i].th, NULL), 0);
	}
	store_check_full(&st);
	ipm_pcache_destroy(pc);
	store_check_full(&st);
	store_destroy(&st);
}
END_TEST

static Suite *pcache_suite(void)
{
	Suite *s = suite_create("pcache");
	TCase *tc = tcase_create("pcache");
	TCase *noinit = tcase_create("noinit");
	TCase *stress = tcase_create("stress");

	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, create_rejects_bad_arguments);
	tcase_add_test(tc, get_put_batches_and_high);
	tcase_add_test(tc, bulk_get_put);
	tcase_add_test(tc, empty_store_returns_null);
	tcase_add_test(tc, unregistered_goes_through_the_store);
	tcase_add_test(tc, drain_own_cache_and_skip_empty);
	tcase_add_test(tc, empty_cache_skipped_without_its_lock);
	tcase_add_test(tc, drain_mask_and_all_interrupts_no_one);
	tcase_add_test(tc, drain_by_node);
	tcase_add_test(tc, drain_by_real_node);
	tcase_add_test(tc, thread_exit_gives_back_and_slot_starts_empty);
	tcase_add_test(tc, explicit_unregister_gives_back);
	tcase_add_test(tc, destroy_releases_caches_of_live_threads);
	tcase_add_test(tc, destroy_after_fini);
	tcase_add_test(tc, drain_does_not_wait_for_owner_callbacks);
	suite_add_tcase(s, tc);

	tcase_add_test(noinit, create_before_init_fails);
	suite_add_tcase(s, noinit);

	tcase_add_checked_fixture(stress, fixture_init, fixture_fini);
	tcase_set_timeout(stress, 120);
	tcase_add_test(stress, stress_drain_while_owners_hammer);
	tcase_add_test(stress, stress_exit_churn_while_draining);
	tcase_add_test(stress, fork_while_hammering);
	suite_add_tcase(s, stress);
	return s;
}

int main(void)
{
	return run_suite(pcache_suite());
}
