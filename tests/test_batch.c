/* SPDX-License-Identifier: MIT */
/*
 * test_batch.c - deferred batched invalidation: domains and batches, with a
 * real per-thread cache on every worker.
 *
 * Each worker caches versions of NK keys of a shared table (truth[]).  The
 * cache fill is safe against an inval interrupting it (a per-cache
 * generation, re-checked after the fill).  Workers check every use: a
 * flusher publishes completed[k] after its IPM_WAIT flush of k returned;
 * a worker reads completed[k] *before* its lookup, and a looked-up version
 * older than that is a use of an entry after its flush returned.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "key_cache.h"

#define NSLOTS	128
#define NK	128

enum ckind { K_SIGNAL, K_POLL, K_BLOCK };
enum cmd { C_NONE, C_WARM, C_LEAVE, C_LOOKUPS_ON, C_LOOKUPS_OFF, C_ENTER, C_PAUSE_POLL };

static struct key_cache caches[NSLOTS];	/* by slot; storage below */
static uint8_t cache_valid[NSLOTS][NK];
static uint64_t cache_val[NSLOTS][NK];
static uint64_t truth[NK];
static uint64_t completed[NK];
static atomic_uint inval_calls[NSLOTS];
static atomic_uint full_calls[NSLOTS];
static atomic_uint remote_calls[NSLOTS];
static atomic_uint last_n[NSLOTS];
static atomic_uint inval_total_keys[NSLOTS];
static atomic_ulong violations;
static atomic_int bad_ctx;
static struct ipm_domain *dom;
static int ctx_token;
static double inval_delay_s;	/* a slow inval: nested deliveries happen */

struct cw {
	pthread_t th;
	enum ckind kind;
	int slot;
	atomic_uint cmdseq;	/* futex word */
	atomic_int cmdval;
	atomic_uint ack;
	atomic_int stop;
	atomic_int pause_poll;
	atomic_int lookups;	/* do lookups continuously */
	atomic_int leave_every;	/* stress: leave and re-enter now and then */
	atomic_ulong loops;
	atomic_int ready;
};

/* ------------------------------------------------------------------------ */
/* The per-thread cache                                                      */
/* ------------------------------------------------------------------------ */

static void inval(int slot, const uint64_t *keys, unsigned n, void *ctx)
{
	if (ctx != &ctx_token)
		atomic_store(&bad_ctx, 1);
	if (n == 0 && keys)
		atomic_store(&bad_ctx, 2);
	key_cache_inval(&caches[slot], keys, n);
	if (n == 0)
		atomic_fetch_add(&full_calls[slot], 1);
	if (inval_delay_s > 0) {
		double end = now_s() + inval_delay_s;	/* clock_gettime: signal-safe */

		while (now_s() < end)
			;
	}
	if (ipm_self() != slot)
		atomic_fetch_add(&remote_calls[slot], 1);
	atomic_store(&last_n[slot], n);
	atomic_fetch_add(&inval_total_keys[slot], n);
	atomic_fetch_add(&inval_calls[slot], 1);
}

/* One checked use of every key. */
static void use_all(int slot)
{
	unsigned k;

	ipm_domain_enter(dom);
	for (k = 0; k < NK; k++) {
		uint64_t c0 = __atomic_load_n(&completed[k], __ATOMIC_ACQUIRE);

		if (key_cache_lookup(&caches[slot], k, truth) < c0)
			atomic_fetch_add(&violations, 1);
	}
}

static void drop_all(int slot)
{
	key_cache_inval(&caches[slot], NULL, 0);
}

static unsigned cached(int slot, unsigned k)
{
	return key_cache_has(&caches[slot], k);
}

/* A flusher's update of key @k: a new version; published after the flush. */
static uint64_t update(unsigned k)
{
	return __atomic_add_fetch(&truth[k], 1, __ATOMIC_SEQ_CST);
}

static void publish(unsigned k, uint64_t v)
{
	uint64_t cur = __atomic_load_n(&completed[k], __ATOMIC_RELAXED);

	while (cur < v && !__atomic_compare_exchange_n(&completed[k], &cur, v, false,
						       __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                   */
/* ------------------------------------------------------------------------ */

static void run_cmd(struct cw *w, int c)
{
	switch (c) {
	case C_WARM:
		use_all(w->slot);
		break;
	case C_LEAVE:
		drop_all(w->slot);
		ipm_domain_leave(dom);
		break;
	case C_ENTER:
		ipm_domain_enter(dom);
		break;
	case C_LOOKUPS_ON:
		atomic_store(&w->lookups, 1);
		break;
	case C_LOOKUPS_OFF:
		atomic_store(&w->lookups, 0);
		break;
	case C_PAUSE_POLL:	/* on the worker: no ipm_poll() after the ack */
		atomic_store(&w->pause_poll, 1);
		break;
	default:
		break;
	}
}

static void *cw_main(void *arg)
{
	struct cw *w = arg;
	unsigned seen = 0;
	unsigned long n = 0;

	w->slot = ipm_thread_register();
	if (w->slot < 0 || w->slot >= NSLOTS)
		abort();
	if (w->kind == K_POLL)
		ipm_thread_set_mode(IPM_MODE_POLL);
	if (w->kind == K_BLOCK)
		ipm_thread_offline();
	atomic_store(&w->ready, 1);
	while (!atomic_load(&w->stop)) {
		unsigned s = atomic_load(&w->cmdseq);

		if (s != seen) {
			if (w->kind == K_BLOCK)
				ipm_thread_online();
			run_cmd(w, atomic_load(&w->cmdval));
			seen = s;
			atomic_store(&w->ack, s);
			if (w->kind == K_BLOCK)
				ipm_thread_offline();
		}
		if (atomic_load(&w->lookups)) {
			int every = atomic_load(&w->leave_every);

			if (w->kind == K_BLOCK)
				ipm_thread_online();
			use_all(w->slot);
			if (every && ++n % (unsigned long)every == 0) {
				drop_all(w->slot);
				ipm_domain_leave(dom);
			}
			if (w->kind == K_BLOCK)
				ipm_thread_offline();
		}
		switch (w->kind) {
		case K_POLL:
			if (!atomic_load(&w->pause_poll))
				ipm_poll();
			if (atomic_load(&w->lookups))
				sched_yield();
			else
				spin_relax();
			break;
		case K_BLOCK:
			if (!atomic_load(&w->lookups))
				futex_wait_u(&w->cmdseq, s);
			break;
		case K_SIGNAL:
			/* 2-CPU machines run many more threads than CPUs here:
			 * yield, so targets get the CPU in time. */
			sched_yield();
			break;
		}
		atomic_fetch_add(&w->loops, 1);
	}
	if (w->kind == K_BLOCK)
		ipm_thread_online();
	return NULL;
}

static void cw_start(struct cw *w, enum ckind kind)
{
	memset(w, 0, sizeof(*w));
	w->kind = kind;
	ck_assert_int_eq(pthread_create(&w->th, NULL, cw_main, w), 0);
	ck_assert(wait_int(&w->ready, 1, 10.0));
}

static void cw_cmd(struct cw *w, int c)
{
	unsigned s;
	double end = now_s() + 10.0;

	atomic_store(&w->cmdval, c);
	s = atomic_fetch_add(&w->cmdseq, 1) + 1;
	futex_wake_u(&w->cmdseq);
	while (atomic_load(&w->ack) != s) {
		ck_assert_msg(now_s() < end, "worker %d did not ack command %d", w->slot, c);
		sched_yield();
	}
}

static void cw_stop(struct cw *w)
{
	atomic_store(&w->stop, 1);
	atomic_fetch_add(&w->cmdseq, 1);
	futex_wake_u(&w->cmdseq);
	pthread_join(w->th, NULL);
}

static uint64_t interrupts_of(int slot)
{
	struct ipm_thread_stats ts;

	ck_assert_int_eq(ipm_thread_stats_get(slot, &ts), 0);
	return ts.interrupts;
}

static void setup(void)
{
	fixture_init();
	dom = ipm_domain_create(inval, &ctx_token);
	ck_assert_ptr_nonnull(dom);
}

static void teardown(void)
{
	ipm_domain_destroy(dom);
	dom = NULL;
	ck_assert_int_eq(atomic_load(&bad_ctx), 0);
	fixture_fini();
}

/* Start over under another configuration (the fixture's domain too). */
static void reinit(const struct ipm_config *cfg)
{
	ipm_domain_destroy(dom);
	ipm_fini();
	ck_assert_int_eq(ipm_init(cfg), 0);
	dom = ipm_domain_create(inval, &ctx_token);
	ck_assert_ptr_nonnull(dom);
}

/* A poll deadline no test reaches: paused pollers are never escalated by
 * the watchdog, so what they apply is applied in ipm_poll(). */
static const struct ipm_config long_deadline = { .poll_deadline_us = 60u * 1000 * 1000 };

/* Bounded wait for a counter. */
static bool wait_uint(atomic_uint *p, unsigned want, double seconds)
{
	double end = now_s() + seconds;

	while (atomic_load(p) < want) {
		if (now_s() > end)
			return false;
		sched_yield();
	}
	return true;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

#define NW 6

/* Every kind of thread, one IPM_WAIT flush: exactly the flushed keys are
 * gone everywhere, with one inval call per thread. */
START_TEST(wait_flush_drops_exactly_the_keys)
{
	struct cw w[NW];
	uint64_t irq[NW];
	struct ipm_batch *b = ipm_batch_create(dom, 32);
	unsigned k;
	int i;

	ck_assert_ptr_nonnull(b);
	for (i = 0; i < NW; i++) {
		cw_start(&w[i], (enum ckind)(i % 3));
		cw_cmd(&w[i], C_WARM);
		irq[i] = interrupts_of(w[i].slot);
	}
	for (k = 0; k < 10; k++) {
		update(k * 3);
		ck_assert_int_eq(ipm_batch_add(b, k * 3), 0);
	}
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), NW);
	for (i = 0; i < NW; i++) {
		int s = w[i].slot;

		for (k = 0; k < NK; k++)
			ck_assert_uint_eq(cached(s, k), (k % 3 == 0 && k < 30) ? 0 : 1);
		ck_assert_uint_eq(atomic_load(&inval_calls[s]), 1);
		ck_assert_uint_eq(atomic_load(&last_n[s]), 10);
		switch (w[i].kind) {
		case K_SIGNAL:
			ck_assert_uint_eq(interrupts_of(s), irq[i] + 1);
			break;
		case K_POLL:
			/* picked up in ipm_poll(), or by signal past the deadline */
			ck_assert_uint_le(interrupts_of(s), irq[i] + 1);
			break;
		case K_BLOCK:
			ck_assert_uint_eq(interrupts_of(s), irq[i]);
			ck_assert_uint_eq(atomic_load(&remote_calls[s]), 1);
			break;
		}
	}
	/* Nothing left pending: a later empty flush disturbs nobody. */
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 0);
	ipm_batch_destroy(b);
	for (i = 0; i < NW; i++) {
		ck_assert_uint_eq(atomic_load(&inval_calls[w[i].slot]), 1);
		cw_stop(&w[i]);
	}
}
END_TEST

/* Many keys, many flushes: one inval call (and at most one signal) per
 * thread per flush. */
START_TEST(one_delivery_per_thread_per_flush)
{
	unsigned nflush = vg_scale(100);	/* waited flushes: slow under valgrind */
	struct cw w[4];
	uint64_t irq[4];
	struct ipm_batch *b = ipm_batch_create(dom, IPM_BATCH_MAX_CAPACITY);
	struct ipm_stats st;
	unsigned f, k;
	int i;

	for (i = 0; i < 4; i++) {
		cw_start(&w[i], i < 3 ? K_SIGNAL : K_POLL);
		cw_cmd(&w[i], C_ENTER);
		irq[i] = interrupts_of(w[i].slot);
	}
	for (f = 0; f < nflush; f++) {
		for (k = 0; k < IPM_BATCH_MAX_CAPACITY; k++)
			ck_assert_int_eq(ipm_batch_add(b, k), 0);
		ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 4);
	}
	for (i = 0; i < 4; i++) {
		int s = w[i].slot;

		ck_assert_uint_eq(atomic_load(&inval_calls[s]), nflush);
		ck_assert_uint_eq(atomic_load(&inval_total_keys[s]), nflush * IPM_BATCH_MAX_CAPACITY);
		ck_assert_uint_eq(atomic_load(&full_calls[s]), 0);
		ck_assert_uint_le(interrupts_of(s) - irq[i], nflush);
	}
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	ck_assert_uint_eq(st.batches, nflush);
	ck_assert_uint_eq(st.batch_keys, nflush * IPM_BATCH_MAX_CAPACITY);
	ck_assert_uint_eq(st.full_flushes, 0);
	ipm_batch_destroy(b);
	for (i = 0; i < 4; i++)
		cw_stop(&w[i]);
}
END_TEST

START_TEST(duplicate_keys_are_merged)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 4);
	int i;

	cw_start(&w, K_SIGNAL);
	cw_cmd(&w, C_WARM);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(ipm_batch_add(b, 7), 0);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&last_n[w.slot]), 1);
	ck_assert_uint_eq(atomic_load(&full_calls[w.slot]), 0);
	ck_assert_uint_eq(cached(w.slot, 7), 0);
	ck_assert_uint_eq(cached(w.slot, 8), 1);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* Past capacity: one full flush (nkeys == 0), every entry dropped. */
START_TEST(overflow_becomes_full_flush)
{
	struct cw w[3];
	struct ipm_batch *b = ipm_batch_create(dom, 8);
	struct ipm_stats st;
	unsigned k;
	int i;

	for (i = 0; i < 3; i++) {
		cw_start(&w[i], (enum ckind)i);
		cw_cmd(&w[i], C_WARM);
	}
	for (k = 0; k < 8; k++)
		ipm_batch_add(b, k);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 3);
	for (i = 0; i < 3; i++) {
		ck_assert_uint_eq(atomic_load(&full_calls[w[i].slot]), 0);
		ck_assert_uint_eq(atomic_load(&last_n[w[i].slot]), 8);
		cw_cmd(&w[i], C_WARM);
	}
	for (k = 0; k < 9; k++)
		ipm_batch_add(b, 100 + k);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 3);
	for (i = 0; i < 3; i++) {
		int s = w[i].slot;

		ck_assert_uint_eq(atomic_load(&inval_calls[s]), 2);
		ck_assert_uint_eq(atomic_load(&full_calls[s]), 1);
		ck_assert_uint_eq(atomic_load(&last_n[s]), 0);
		for (k = 0; k < NK; k++)
			ck_assert_uint_eq(cached(s, k), 0);
	}
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	ck_assert_uint_eq(st.full_flushes, 1);
	ck_assert_uint_eq(st.batch_keys, 17);
	ipm_batch_destroy(b);
	for (i = 0; i < 3; i++)
		cw_stop(&w[i]);
}
END_TEST

/* add_sync flushes at once, with the keys collected before it. */
START_TEST(add_sync_flushes_now)
{
	struct cw w[3];
	struct ipm_batch *b = ipm_batch_create(dom, 16);
	int i;

	for (i = 0; i < 3; i++) {
		cw_start(&w[i], (enum ckind)i);
		cw_cmd(&w[i], C_WARM);
	}
	ipm_batch_add(b, 1);
	ipm_batch_add(b, 2);
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(atomic_load(&inval_calls[w[i].slot]), 0);
	ck_assert_int_eq(ipm_batch_add_sync(b, 3), 3);
	for (i = 0; i < 3; i++) {
		int s = w[i].slot;

		ck_assert_uint_eq(atomic_load(&inval_calls[s]), 1);
		ck_assert_uint_eq(atomic_load(&last_n[s]), 3);
		ck_assert_uint_eq(cached(s, 1) + cached(s, 2) + cached(s, 3), 0);
		ck_assert_uint_eq(cached(s, 4), 1);
	}
	/* The batch was emptied by it. */
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 0);
	ipm_batch_destroy(b);
	for (i = 0; i < 3; i++)
		cw_stop(&w[i]);
}
END_TEST

/* Deferred flushes to a polling thread: nothing until it polls, then one
 * call with everything merged. */
START_TEST(deferred_applied_at_poll)
{
	struct cw w;
	struct ipm_batch *b;
	unsigned f;

	reinit(&long_deadline);
	b = ipm_batch_create(dom, 32);

	cw_start(&w, K_POLL);
	cw_cmd(&w, C_WARM);
	cw_cmd(&w, C_PAUSE_POLL);
	for (f = 0; f < 5; f++) {
		ipm_batch_add(b, f * 2);
		ipm_batch_add(b, f * 2 + 1);
		ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	}
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 0);
	ck_assert_uint_eq(cached(w.slot, 0), 1);
	ck_assert_uint_eq(interrupts_of(w.slot), 0);
	atomic_store(&w.pause_poll, 0);
	ck_assert(wait_uint(&inval_calls[w.slot], 1, 10.0));
	ck_assert_uint_eq(atomic_load(&last_n[w.slot]), 10);
	for (f = 0; f < 10; f++)
		ck_assert_uint_eq(cached(w.slot, f), 0);
	ck_assert_uint_eq(cached(w.slot, 10), 1);
	/* Let a few more polls pass: no second call. */
	ck_assert(wait_ge(&w.loops, atomic_load(&w.loops) + 1000, 10.0));
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 1);
	ck_assert_uint_eq(interrupts_of(w.slot), 0);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* The pending set is bounded: past the capacity it collapses to a full flush. */
START_TEST(deferred_pending_set_is_bounded)
{
	struct cw w;
	struct ipm_batch *b;
	struct ipm_stats st;
	unsigned f;

	reinit(&long_deadline);
	b = ipm_batch_create(dom, 8);

	cw_start(&w, K_POLL);
	cw_cmd(&w, C_WARM);
	cw_cmd(&w, C_PAUSE_POLL);
	for (f = 0; f < 50; f++) {
		ipm_batch_add(b, f % NK);
		ipm_batch_add(b, (f + 50) % NK);
		ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	}
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	ck_assert_uint_eq(st.full_flushes, 1);	/* the one collapse */
	atomic_store(&w.pause_poll, 0);
	ck_assert(wait_uint(&inval_calls[w.slot], 1, 10.0));
	ck_assert_uint_eq(atomic_load(&full_calls[w.slot]), 1);
	ck_assert(wait_ge(&w.loops, atomic_load(&w.loops) + 1000, 10.0));
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 1);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* Deferred flushes to an offline thread run at ipm_thread_online(), on it. */
START_TEST(deferred_applied_at_online)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 32);

	cw_start(&w, K_BLOCK);
	cw_cmd(&w, C_WARM);
	ipm_batch_add(b, 5);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	ipm_batch_add(b, 6);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 0);
	ck_assert_uint_eq(cached(w.slot, 5), 1);
	cw_cmd(&w, C_NONE);	/* online (runs it), then offline again */
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 1);
	ck_assert_uint_eq(atomic_load(&last_n[w.slot]), 2);
	ck_assert_uint_eq(atomic_load(&remote_calls[w.slot]), 0);
	ck_assert_uint_eq(cached(w.slot, 5) + cached(w.slot, 6), 0);
	ck_assert_uint_eq(interrupts_of(w.slot), 0);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* Deferred flushes to a running signal-mode thread: one coalesced signal. */
START_TEST(deferred_signal_thread_one_signal)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 32);
	uint64_t irq;

	cw_start(&w, K_SIGNAL);
	cw_cmd(&w, C_WARM);
	irq = interrupts_of(w.slot);
	ipm_batch_add(b, 9);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	ck_assert(wait_uint(&inval_calls[w.slot], 1, 10.0));
	ck_assert_uint_eq(cached(w.slot, 9), 0);
	ck_assert_uint_eq(interrupts_of(w.slot), irq + 1);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* A polling thread that stopped polling is still reached by IPM_WAIT. */
START_TEST(wait_flush_escalates_stalled_poller)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 32);

	cw_start(&w, K_POLL);
	cw_cmd(&w, C_WARM);
	cw_cmd(&w, C_PAUSE_POLL);
	ipm_batch_add(b, 3);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 1);
	ck_assert_uint_eq(cached(w.slot, 3), 0);
	ck_assert_uint_ge(interrupts_of(w.slot), 1);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* The flusher is a member: its own entries go first, directly. */
START_TEST(flusher_member_runs_its_own)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 32);
	int me = ipm_thread_register();

	ck_assert_int_ge(me, 0);
	cw_start(&w, K_SIGNAL);
	cw_cmd(&w, C_WARM);
	use_all(me);
	ipm_batch_add(b, 11);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 2);
	ck_assert_uint_eq(atomic_load(&inval_calls[me]), 1);
	ck_assert_uint_eq(atomic_load(&remote_calls[me]), 0);
	ck_assert_uint_eq(cached(me, 11), 0);
	ck_assert(wait_uint(&inval_calls[w.slot], 1, 10.0));
	ipm_batch_destroy(b);
	cw_stop(&w);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
}
END_TEST

/* A thread that left is no longer a target; one that exited neither, and
 * the next owner of its slot is not a member. */
START_TEST(leave_and_exit)
{
	struct cw w[3], fresh;
	struct ipm_batch *b = ipm_batch_create(dom, 32);
	uint64_t irq;
	int gone_slot;
	int i;

	for (i = 0; i < 3; i++) {
		cw_start(&w[i], K_SIGNAL);
		cw_cmd(&w[i], C_WARM);
	}
	/* w[0] leaves (dropping its entries itself). */
	cw_cmd(&w[0], C_LEAVE);
	irq = interrupts_of(w[0].slot);
	ipm_batch_add(b, 1);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 2);
	ck_assert_uint_eq(atomic_load(&inval_calls[w[0].slot]), 0);
	ck_assert_uint_eq(interrupts_of(w[0].slot), irq);

	/* w[1] exits while a member, with a deferred flush in flight. */
	gone_slot = w[1].slot;
	ipm_batch_add(b, 2);
	ipm_batch_flush(b, 0);
	cw_stop(&w[1]);
	ipm_batch_add(b, 3);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 1);

	/* A new thread takes the slot; it never entered: never disturbed. */
	cw_start(&fresh, K_SIGNAL);
	ck_assert_int_eq(fresh.slot, gone_slot);
	atomic_store(&inval_calls[fresh.slot], 0);
	irq = interrupts_of(fresh.slot);
	ipm_batch_add(b, 4);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 1);
	ipm_batch_add(b, 5);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	ck_assert_uint_eq(atomic_load(&inval_calls[fresh.slot]), 0);
	ck_assert_uint_eq(interrupts_of(fresh.slot), irq);

	/* w[0] enters again: a target again. */
	cw_cmd(&w[0], C_WARM);
	ipm_batch_add(b, 6);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 2);
	ck_assert_uint_eq(atomic_load(&inval_calls[w[0].slot]), 1);
	ck_assert_uint_eq(cached(w[0].slot, 6), 0);

	ipm_batch_destroy(b);
	cw_stop(&w[0]);
	cw_stop(&w[2]);
	cw_stop(&fresh);
}
END_TEST

/* Unregistered callers are ignored by enter/leave; errors are reported. */
START_TEST(api_errors)
{
	struct ipm_batch *b;

	ipm_domain_enter(dom);		/* not registered: ignored */
	ipm_domain_leave(dom);
	ipm_domain_enter(NULL);
	ipm_domain_leave(NULL);
	ck_assert_ptr_null(ipm_domain_create(NULL, NULL));
	ck_assert_ptr_null(ipm_batch_create(NULL, 8));
	ck_assert_ptr_null(ipm_batch_create(dom, 0));
	ck_assert_ptr_null(ipm_batch_create(dom, IPM_BATCH_MAX_CAPACITY + 1));
	ck_assert_int_eq(ipm_batch_add(NULL, 1), -EINVAL);
	ck_assert_int_eq(ipm_batch_add_sync(NULL, 1), -EINVAL);
	ck_assert_int_eq(ipm_batch_flush(NULL, 0), -EINVAL);
	b = ipm_batch_create(dom, 8);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(ipm_batch_flush(b, 0x100), -EINVAL);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 0);	/* empty */
	ck_assert_int_eq(ipm_batch_add(b, 1), 0);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 0);	/* no members */
	ipm_batch_destroy(b);
	ipm_batch_destroy(NULL);
	ipm_domain_destroy(NULL);
}
END_TEST

START_TEST(before_init)
{
	ck_assert_ptr_null(ipm_domain_create(inval, NULL));
	ck_assert_ptr_null(ipm_batch_create(NULL, 8));
	ck_assert_int_eq(ipm_batch_add(NULL, 1), -EPERM);
	ck_assert_int_eq(ipm_batch_add_sync(NULL, 1), -EPERM);
	ck_assert_int_eq(ipm_batch_flush(NULL, 0), -EPERM);
	ipm_domain_enter(NULL);
	ipm_domain_leave(NULL);
}
END_TEST

/* A domain destroyed with a delivery queued for an offline thread: no inval
 * after destroy, the thread comes back fine. */
START_TEST(destroy_with_deliveries_in_flight)
{
	struct cw w;
	struct ipm_domain *d2;
	struct ipm_batch *b;

	cw_start(&w, K_BLOCK);
	d2 = dom;
	cw_cmd(&w, C_WARM);
	b = ipm_batch_create(d2, 8);
	ipm_batch_add(b, 1);
	ck_assert_int_eq(ipm_batch_flush(b, 0), 1);
	ipm_batch_destroy(b);	/* empty: flushes nothing */
	ipm_domain_destroy(d2);
	dom = ipm_domain_create(inval, &ctx_token);
	cw_cmd(&w, C_NONE);	/* online: the delivery runs, does nothing */
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 0);
	cw_stop(&w);
}
END_TEST

/* A member whose pending set could not be allocated gets full flushes. */
START_TEST(no_pending_set_means_full_flushes)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 8);

	_ipm_fault_alloc_countdown = 1;	/* the worker's pending set */
	cw_start(&w, K_SIGNAL);
	cw_cmd(&w, C_WARM);
	_ipm_fault_alloc_countdown = 0;
	ipm_batch_add(b, 1);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&inval_calls[w.slot]), 1);
	ck_assert_uint_eq(atomic_load(&full_calls[w.slot]), 1);
	ck_assert_uint_eq(cached(w.slot, 2), 0);
	ipm_batch_destroy(b);
	cw_stop(&w);
}
END_TEST

/* fork: the child's threads are the forking one only; slots of the
 * parent's other threads are not members there. */
START_TEST(fork_child_starts_clean)
{
	struct cw w;
	struct ipm_batch *b = ipm_batch_create(dom, 8);
	int me = ipm_thread_register(), status;
	pid_t pid;

	ck_assert_int_ge(me, 0);
	cw_start(&w, K_SIGNAL);
	cw_cmd(&w, C_WARM);
	use_all(me);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct cw c;
		int bad = 0;

		cw_start(&c, K_SIGNAL);	/* takes the parent worker's slot */
		bad |= c.slot != w.slot;
		atomic_store(&inval_calls[c.slot], 0);
		ipm_batch_add(b, 1);
		bad |= ipm_batch_flush(b, IPM_WAIT) != 1;	/* the caller only */
		bad |= atomic_load(&inval_calls[c.slot]) != 0;
		bad |= cached(me, 1) != 0;
		cw_cmd(&c, C_WARM);
		ipm_batch_add(b, 2);
		bad |= ipm_batch_flush(b, IPM_WAIT) != 2;
		bad |= atomic_load(&inval_calls[c.slot]) != 1;
		cw_stop(&c);
		ipm_batch_destroy(b);
		ipm_domain_destroy(dom);
		ipm_thread_unregister();
		ipm_fini();
		_exit(bad ? 3 : 0);
	}
	status = wait_child(pid, 60.0);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The parent goes on as before. */
	ipm_batch_add(b, 3);
	ck_assert_int_eq(ipm_batch_flush(b, IPM_WAIT), 2);
	ck_assert_uint_eq(cached(w.slot, 3), 0);
	ipm_batch_destroy(b);
	cw_stop(&w);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Stress: concurrent flushers, workers of every kind looking up, leaving   */
/* ------------------------------------------------------------------------ */

struct flusher {
	pthread_t th;
	unsigned id;
	unsigned rounds;
	bool member;
	atomic_int errors;
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;
	struct ipm_batch *b = ipm_batch_create(dom, 16);
	unsigned r, i, seed = f->id * 7919u + 1;
	uint64_t vers[NK];
	unsigned keys[24];

	if (!b) {
		atomic_store(&f->errors, 1);
		return NULL;
	}
	if (f->member && ipm_thread_register() < 0)
		atomic_store(&f->errors, 2);
	for (r = 0; r < f->rounds; r++) {
		unsigned n = 1 + (seed = seed * 1103515245u + 12345u) % 20;
		unsigned flags = (r % 4 == 3) ? 0 : IPM_WAIT;
		int ret;

		for (i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			keys[i] = (seed >> 8) % NK;
			vers[i] = update(keys[i]);
			ipm_batch_add(b, keys[i]);
		}
		if (f->member)
			use_all(ipm_self());
		ret = (r % 7 == 6) ? ipm_batch_add_sync(b, keys[0]) : ipm_batch_flush(b, flags);
		if (ret < 0)
			atomic_store(&f->errors, 3);
		if (flags & IPM_WAIT || r % 7 == 6)
			for (i = 0; i < n; i++)
				publish(keys[i], vers[i]);
	}
	ipm_batch_destroy(b);
	return NULL;
}

static void stress(unsigned rounds);

START_TEST(concurrent_flushers_no_stale_use)
{
	stress(vg_scale(600));
}
END_TEST

/* Polling workers escalated after 20 us while a slow inval runs in
 * ipm_poll(): the signal handler's delivery nests in the poll's. */
START_TEST(nested_deliveries_slow_inval)
{
	struct ipm_config cfg = { .poll_deadline_us = 20 };

	reinit(&cfg);
	inval_delay_s = 50e-6;
	stress(vg_scale(300));
}
END_TEST

static void stress(unsigned rounds)
{
	struct cw w[6];
	struct flusher f[3];
	unsigned long base;
	int i;

	for (i = 0; i < 6; i++) {
		cw_start(&w[i], (enum ckind)(i % 3));
		if (i % 2)
			atomic_store(&w[i].leave_every, 7);
		cw_cmd(&w[i], C_LOOKUPS_ON);
	}
	for (i = 0; i < 3; i++) {
		memset(&f[i], 0, sizeof(f[i]));
		f[i].id = (unsigned)i;
		f[i].rounds = rounds;
		f[i].member = i == 0;
		ck_assert_int_eq(pthread_create(&f[i].th, NULL, flusher_main, &f[i]), 0);
	}
	for (i = 0; i < 3; i++)
		pthread_join(f[i].th, NULL);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(atomic_load(&f[i].errors), 0);
	/* Every worker made progress, and still works. */
	for (i = 0; i < 6; i++) {
		base = atomic_load(&w[i].loops);
		ck_assert(wait_ge(&w[i].loops, base + 10, 10.0));
	}
	for (i = 0; i < 6; i++)
		cw_stop(&w[i]);
	ck_assert_uint_eq(atomic_load(&violations), 0);
}


/* Workers come and go (register, enter, exit) while flushes run. */
static atomic_int churn_stop;

static void *churn_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&churn_stop)) {
		int s = ipm_thread_register();

		if (s < 0 || s >= NSLOTS)
			abort();
		use_all(s);
		use_all(s);
		drop_all(s);	/* the cache dies with the thread */
		ipm_thread_unregister();
	}
	return NULL;
}

START_TEST(membership_churn)
{
	pthread_t th[3];
	struct ipm_batch *b = ipm_batch_create(dom, 8);
	double end = now_s() + 1.0;
	unsigned r = 0;
	int i;

	for (i = 0; i < 3; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, churn_main, NULL), 0);
	while (now_s() < end) {
		unsigned k = r++ % NK;
		uint64_t v = update(k);

		ipm_batch_add(b, k);
		ck_assert_int_ge(ipm_batch_flush(b, (r & 1) ? IPM_WAIT : 0), 0);
		if (r & 1)
			publish(k, v);
	}
	atomic_store(&churn_stop, 1);
	for (i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ipm_batch_destroy(b);
	ck_assert_uint_eq(atomic_load(&violations), 0);
}
END_TEST

static Suite *batch_suite(void)
{
	Suite *s = suite_create("batch");
	TCase *tc = tcase_create("batch");
	TCase *raw = tcase_create("uninitialised");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, wait_flush_drops_exactly_the_keys);
	tcase_add_test(tc, one_delivery_per_thread_per_flush);
	tcase_add_test(tc, duplicate_keys_are_merged);
	tcase_add_test(tc, overflow_becomes_full_flush);
	tcase_add_test(tc, add_sync_flushes_now);
	tcase_add_test(tc, deferred_applied_at_poll);
	tcase_add_test(tc, deferred_pending_set_is_bounded);
	tcase_add_test(tc, deferred_applied_at_online);
	tcase_add_test(tc, deferred_signal_thread_one_signal);
	tcase_add_test(tc, wait_flush_escalates_stalled_poller);
	tcase_add_test(tc, flusher_member_runs_its_own);
	tcase_add_test(tc, leave_and_exit);
	tcase_add_test(tc, api_errors);
	tcase_add_test(tc, destroy_with_deliveries_in_flight);
	tcase_add_test(tc, no_pending_set_means_full_flushes);
	tcase_add_test(tc, fork_child_starts_clean);
	tcase_add_test(tc, concurrent_flushers_no_stale_use);
	tcase_add_test(tc, nested_deliveries_slow_inval);
	tcase_add_test(tc, membership_churn);
	suite_add_tcase(s, tc);
	tcase_add_test(raw, before_init);
	suite_add_tcase(s, raw);
	return s;
}

int main(void)
{
	int i;

	for (i = 0; i < NSLOTS; i++)
		key_cache_init(&caches[i], NK, cache_valid[i], cache_val[i]);
	return run_suite(batch_suite());
}
