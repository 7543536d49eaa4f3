/* SPDX-License-Identifier: MIT */
/*
 * bench_pcache.c - what the per-thread lock of ipm_pcache costs its owner,
 * and what remote draining saves.
 *
 * 1. get/put cost: ipm_pcache against an owner-only, unlocked per-thread
 *    free list with the same refill/release, the same high/batch policy and
 *    a DPDK-like lookup (a thread-local index into an array of caches).
 *    Patterns: "pair" (get, put: the worst case for the lock), "burst"
 *    (48 gets then 48 puts: crosses refill/release), "work" (pair + the
 *    owner writes 64 bytes of the object, like filling a packet header),
 *    "pkt" (pair + header write + checksum of the 512-byte buffer).  The
 *    cost of one bare uncontended CAS + release store is measured too: the
 *    lock costs exactly that, twice per pair.
 *    Trials of the two are interleaved; the best trial of each is kept.
 * 2. drain time: N owner threads, each with a filled cache.  "remote":
 *    ipm_pcache_drain(pc, NULL) from the control thread.  "self": ask each
 *    owner to flush its own free list with ipm_on_each_thread_mask(IPM_WAIT),
 *    owners in IPM_MODE_SIGNAL (flush runs in the signal handler) and in
 *    IPM_MODE_POLL (flush runs at the owner's next ipm_poll()).  Median time
 *    per drain of all N caches, and the owners' interrupts.
 *
 * DPDK's rte_mempool cache is measured only when libdpdk is found at build
 * time (not implemented yet: reported as skipped).
 *
 * Usage: bench_pcache [-i iterations] [-t owners] [-r rounds] [-q]
 * Prints a table and one "SUMMARY key=value ..." line.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ipimask.h>

#define HIGH		64
#define BATCH		32
#define BURST		48
#define NOBJS		(1u << 16)
#define MAX_OWNERS	256
#define TRIALS		7
#define OBJ_SIZE	512

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_pcache: %s\n", what);
	exit(1);
}

/* ------------------------------------------------------------------------ */
/* The backing store (shared by both caches)                                  */
/* ------------------------------------------------------------------------ */

struct store {
	pthread_mutex_t lock;
	void **stack;
	unsigned nfree;
	char *mem;
};

static struct store store;

static unsigned st_refill(void *ctx, void **objs, unsigned n)
{
	struct store *s = ctx;
	unsigned k = 0;

	pthread_mutex_lock(&s->lock);
	while (k < n && s->nfree)
		objs[k++] = s->stack[--s->nfree];
	pthread_mutex_unlock(&s->lock);
	return k;
}

static void st_release(void *ctx, void *const *objs, unsigned n)
{
	struct store *s = ctx;
	unsigned i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < n; i++)
		s->stack[s->nfree++] = objs[i];
	pthread_mutex_unlock(&s->lock);
}

static const struct ipm_pcache_ops st_ops = { st_refill, st_release };

static void store_init(void)
{
	unsigned i;

	pthread_mutex_init(&store.lock, NULL);
	store.mem = aligned_alloc(64, (size_t)NOBJS * OBJ_SIZE);
	store.stack = malloc(NOBJS * sizeof(void *));
	if (!store.mem || !store.stack)
		die("out of memory");
	memset(store.mem, 0, (size_t)NOBJS * OBJ_SIZE);
	for (i = 0; i < NOBJS; i++)
		store.stack[i] = store.mem + (size_t)i * OBJ_SIZE;
	store.nfree = NOBJS;
}

/* ------------------------------------------------------------------------ */
/* Baseline: owner-only, unlocked per-thread free lists (DPDK-like)           */
/* ------------------------------------------------------------------------ */

struct bl_cache {
	unsigned count;
	void *objs[HIGH + 1];
} __attribute__((aligned(64)));

struct bl {
	struct bl_cache *caches[MAX_OWNERS + 1];
};

static __thread int bl_slot = -1;	/* like rte_lcore_id() */
static struct bl bl;

static struct bl_cache *bl_cache(void)
{
	struct bl_cache *c = bl.caches[bl_slot];

	if (__builtin_expect(!c, 0)) {
		c = aligned_alloc(64, sizeof(*c));
		if (!c)
			die("out of memory");
		c->count = 0;
		bl.caches[bl_slot] = c;
	}
	return c;
}

/* noinline: the pcache is reached through the shared library's PLT. */
__attribute__((noinline)) static void *bl_get(struct bl *b)
{
	struct bl_cache *c = bl_cache();
	unsigned k;

	(void)b;
	if (__builtin_expect(c->count != 0, 1))
		return c->objs[--c->count];
	k = st_refill(&store, c->objs, BATCH);
	if (!k)
		return NULL;
	c->count = k - 1;
	return c->objs[k - 1];
}

__attribute__((noinline)) static void bl_put(struct bl *b, void *obj)
{
	struct bl_cache *c = bl_cache();
	unsigned n = c->count;

	(void)b;
	c->objs[n++] = obj;
	if (__builtin_expect(n <= HIGH, 1)) {
		c->count = n;
		return;
	}
	n -= BATCH;
	c->count = n;
	st_release(&store, c->objs + n, BATCH);
}

/*
 * The owner flushes its own list (what "ask each owner" runs).  In
 * IPM_MODE_SIGNAL it runs in the signal handler and takes the store's
 * mutex: safe here only because the owners are idle (never inside the store
 * or their list) when a drain is asked for; a real owner-only cache would
 * need IPM_MODE_POLL, which is the other row of the table.
 */
static void bl_flush_self(int slot, void *info)
{
	struct bl_cache *c = bl.caches[slot];
	unsigned n, k;

	(void)info;
	if (!c)
		return;
	for (n = c->count; n; n -= k) {
		k = n < BATCH ? n : BATCH;
		st_release(&store, c->objs + n - k, k);
	}
	c->count = 0;
}

/* ------------------------------------------------------------------------ */
/* 1. get/put cost                                                           */
/* ------------------------------------------------------------------------ */

enum pattern { P_PAIR, P_BURST, P_WORK, P_PKT, P_BULK, NPATTERNS };
static const char *const pattern_name[NPATTERNS] = { "pair", "burst", "work", "pkt", "bulk" };

/* "pkt": what a packet worker does between get and put: write a header,
 * checksum the buffer. */
static inline uintptr_t pkt_work(char *o, unsigned long i)
{
	uint32_t sum = 0;
	unsigned k;

	memset(o, (int)i, 64);
	for (k = 0; k < OBJ_SIZE; k += 4) {
		uint32_t w;

		memcpy(&w, o + k, 4);
		sum += w ^ (sum >> 7);
	}
	return sum;
}

static volatile uintptr_t sink;

static double run_pcache(struct ipm_pcache *pc, enum pattern p, unsigned long iters)
{
	void *h[BURST];
	unsigned long i, j, pairs = 0;
	double t0 = now_ns();

	switch (p) {
	case P_PAIR:
		for (i = 0; i < iters; i++) {
			void *o = ipm_pcache_get(pc);

			ipm_pcache_put(pc, o);
		}
		pairs = iters;
		break;
	case P_BURST:
		for (i = 0; i < iters / BURST; i++) {
			for (j = 0; j < BURST; j++)
				h[j] = ipm_pcache_get(pc);
			for (j = 0; j < BURST; j++)
				ipm_pcache_put(pc, h[BURST - 1 - j]);
		}
		pairs = iters / BURST * BURST;
		break;
	case P_WORK:
		for (i = 0; i < iters; i++) {
			char *o = ipm_pcache_get(pc);

			memset(o, (int)i, 64);
			sink += (uintptr_t)o[7];
			ipm_pcache_put(pc, o);
		}
		pairs = iters;
		break;
	case P_PKT:
		for (i = 0; i < iters; i++) {
			char *o = ipm_pcache_get(pc);

			sink += pkt_work(o, i);
			ipm_pcache_put(pc, o);
		}
		pairs = iters;
		break;
	case P_BULK:	/* the burst with ipm_pcache_get_bulk/put_bulk */
		for (i = 0; i < iters / BURST; i++) {
			if (ipm_pcache_get_bulk(pc, h, BURST) != BURST)
				die("get_bulk");
			ipm_pcache_put_bulk(pc, h, BURST);
		}
		pairs = iters / BURST * BURST;
		break;
	default:
		break;
	}
	return (now_ns() - t0) / (double)pairs;
}

static double run_baseline(enum pattern p, unsigned long iters)
{
	void *h[BURST];
	unsigned long i, j, pairs = 0;
	double t0 = now_ns();

	switch (p) {
	case P_PAIR:
		for (i = 0; i < iters; i++) {
			void *o = bl_get(&bl);

			bl_put(&bl, o);
		}
		pairs = iters;
		break;
	case P_BURST:
	case P_BULK:	/* the list has no bulk call: the same burst */
		for (i = 0; i < iters / BURST; i++) {
			for (j = 0; j < BURST; j++)
				h[j] = bl_get(&bl);
			for (j = 0; j < BURST; j++)
				bl_put(&bl, h[BURST - 1 - j]);
		}
		pairs = iters / BURST * BURST;
		break;
	case P_WORK:
		for (i = 0; i < iters; i++) {
			char *o = bl_get(&bl);

			memset(o, (int)i, 64);
			sink += (uintptr_t)o[7];
			bl_put(&bl, o);
		}
		pairs = iters;
		break;
	case P_PKT:
		for (i = 0; i < iters; i++) {
			char *o = bl_get(&bl);

			sink += pkt_work(o, i);
			bl_put(&bl, o);
		}
		pairs = iters;
		break;
	default:
		break;
	}
	return (now_ns() - t0) / (double)pairs;
}

/* What one uncontended lock round trip costs here (CAS + release store). */
static double bare_lock_ns(unsigned long iters)
{
	static uint32_t word;
	unsigned long i;
	double t0 = now_ns();

	for (i = 0; i < iters; i++) {
		uint32_t e = 0;

		__atomic_compare_exchange_n(&word, &e, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
		__atomic_store_n(&word, 0, __ATOMIC_RELEASE);
	}
	return (now_ns() - t0) / (double)iters;
}

/* ------------------------------------------------------------------------ */
/* 2. drain time                                                             */
/* ------------------------------------------------------------------------ */

enum drain_kind { D_REMOTE, D_SELF_SIGNAL, D_SELF_POLL, NKINDS };
static const char *const kind_name[NKINDS] = {
	"remote ipm_pcache_drain", "self, IPM_MODE_SIGNAL", "self, IPM_MODE_POLL"
};

struct owner {
	pthread_t th;
	int slot;
	atomic_int ready;
	atomic_uint acked;	/* last round filled */
};

static struct ipm_pcache *drain_pc;
static enum drain_kind drain_kind;
static atomic_uint drain_round;
static atomic_int owners_stop;
static unsigned fill_per_owner = HIGH;

static void owner_fill(void)
{
	void *h[HIGH];
	unsigned i;

	/* Take fill objects and put them back: the cache holds them. */
	for (i = 0; i < fill_per_owner; i++)
		h[i] = drain_kind == D_REMOTE ? ipm_pcache_get(drain_pc) : bl_get(&bl);
	for (i = 0; i < fill_per_owner; i++) {
		if (drain_kind == D_REMOTE)
			ipm_pcache_put(drain_pc, h[i]);
		else
			bl_put(&bl, h[i]);
	}
}

static void *owner_main(void *arg)
{
	struct owner *o = arg;
	unsigned r;

	o->slot = ipm_thread_register();
	if (o->slot < 0 || o->slot >= MAX_OWNERS)
		die("register");
	bl_slot = o->slot;
	if (drain_kind == D_SELF_POLL)
		ipm_thread_set_mode(IPM_MODE_POLL);
	atomic_store(&o->ready, 1);
	while (!atomic_load_explicit(&owners_stop, memory_order_relaxed)) {
		r = atomic_load(&drain_round);
		if (atomic_load_explicit(&o->acked, memory_order_relaxed) != r) {
			owner_fill();
			atomic_store(&o->acked, r);
		}
		if (drain_kind == D_SELF_POLL)
			ipm_poll();
		sched_yield();	/* a running thread that does not touch its cache */
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct drain_result {
	double median_us, p90_us;
	double interrupts_per_round;
	double objects_per_round;
};

static struct drain_result bench_drain(enum drain_kind kind, int nowners, int rounds)
{
	struct owner *o = calloc((size_t)nowners, sizeof(*o));
	double *t = calloc((size_t)rounds, sizeof(double));
	struct ipm_thread_stats ts;
	struct drain_result res = { 0 };
	uint64_t irq0 = 0, irq1 = 0;
	unsigned long objects = 0;
	ipm_mask_t *m = ipm_mask_alloc();
	int i, r;

	if (!o || !t || !m)
		die("out of memory");
	drain_kind = kind;
	drain_pc = ipm_pcache_create(&st_ops, &store, HIGH, BATCH);
	if (!drain_pc)
		die("ipm_pcache_create");
	atomic_store(&owners_stop, 0);
	atomic_store(&drain_round, 0);
	for (i = 0; i < nowners; i++) {
		if (pthread_create(&o[i].th, NULL, owner_main, &o[i]))
			die("pthread_create");
	}
	for (i = 0; i < nowners; i++) {
		while (!atomic_load(&o[i].ready))
			sched_yield();
		ipm_mask_set(m, o[i].slot);
	}
	for (i = 0; i < nowners; i++) {
		ipm_thread_stats_get(o[i].slot, &ts);
		irq0 += ts.interrupts;
	}
	for (r = 0; r < rounds; r++) {
		double t0, end;

		atomic_store(&drain_round, (unsigned)r + 1);
		end = now_ns() + 30e9;
		for (i = 0; i < nowners; i++)
			while (atomic_load(&o[i].acked) != (unsigned)r + 1) {
				if (now_ns() > end)
					die("an owner never filled its cache");
				sched_yield();
			}
		t0 = now_ns();
		if (kind == D_REMOTE) {
			objects += ipm_pcache_drain(drain_pc, NULL);
		} else {
			unsigned before = store.nfree;	/* owners are idle: stable */

			if (ipm_on_each_thread_mask(m, bl_flush_self, NULL, IPM_WAIT) != nowners)
				die("ipm_on_each_thread_mask");
			objects += store.nfree - before;
		}
		t[r] = (now_ns() - t0) / 1e3;
	}
	for (i = 0; i < nowners; i++) {
		ipm_thread_stats_get(o[i].slot, &ts);
		irq1 += ts.interrupts;
	}
	atomic_store(&owners_stop, 1);
	for (i = 0; i < nowners; i++)
		pthread_join(o[i].th, NULL);
	/* Exited owners gave their pcache caches back; flush baseline leftovers. */
	for (i = 0; i <= MAX_OWNERS; i++) {
		if (bl.caches[i]) {
			bl_flush_self(i, NULL);
			free(bl.caches[i]);
			bl.caches[i] = NULL;
		}
	}
	ipm_pcache_destroy(drain_pc);
	if (store.nfree != NOBJS)
		die("objects lost");
	qsort(t, (size_t)rounds, sizeof(double), cmp_double);
	res.median_us = t[rounds / 2];
	res.p90_us = t[(rounds * 9) / 10];
	res.interrupts_per_round = (double)(irq1 - irq0) / rounds;
	res.objects_per_round = (double)objects / rounds;
	ipm_mask_free(m);
	free(o);
	free(t);
	return res;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	unsigned long iters = 20000000;
	int nowners = 8, rounds = 200, opt, trial, p, slot;
	double best_pc[NPATTERNS], best_bl[NPATTERNS], best_lock, d;
	struct drain_result dr[NKINDS];
	struct ipm_stats s0, s1;
	struct ipm_pcache *pc;
	char host[64] = "?";

	while ((opt = getopt(argc, argv, "i:t:r:q")) != -1) {
		switch (opt) {
		case 'i':
			iters = strtoul(optarg, NULL, 0);
			break;
		case 't':
			nowners = atoi(optarg);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 'q':
			iters = 2000000;
			rounds = 50;
			break;
		default:
			fprintf(stderr, "usage: %s [-i iterations] [-t owners] [-r rounds] [-q]\n",
				argv[0]);
			return 2;
		}
	}
	if (nowners < 1 || nowners > MAX_OWNERS - 1 || rounds < 1 || iters < BURST)
		die("bad arguments");
	gethostname(host, sizeof(host) - 1);
	if (ipm_init(NULL))
		die("ipm_init");
	store_init();

	/* 1. get/put cost, on the main thread. */
	slot = ipm_thread_register();
	if (slot < 0)
		die("register");
	bl_slot = slot;
	pc = ipm_pcache_create(&st_ops, &store, HIGH, BATCH);
	if (!pc)
		die("ipm_pcache_create");
	for (p = 0; p < NPATTERNS; p++) {
		best_pc[p] = best_bl[p] = 1e30;
		run_pcache(pc, (enum pattern)p, iters / 10);	/* warm up */
		run_baseline((enum pattern)p, iters / 10);
		for (trial = 0; trial < TRIALS; trial++) {
			d = run_pcache(pc, (enum pattern)p, iters);
			if (d < best_pc[p])
				best_pc[p] = d;
			d = run_baseline((enum pattern)p, iters);
			if (d < best_bl[p])
				best_bl[p] = d;
		}
	}
	best_lock = 1e30;
	for (trial = 0; trial < TRIALS; trial++) {
		d = bare_lock_ns(iters);
		if (d < best_lock)
			best_lock = d;
	}
	ipm_pcache_destroy(pc);
	bl_flush_self(slot, NULL);
	free(bl.caches[slot]);
	bl.caches[slot] = NULL;
	ipm_thread_unregister();

	printf("bench_pcache on %s, %ld CPUs online, high=%d batch=%d\n", host,
	       sysconf(_SC_NPROCESSORS_ONLN), HIGH, BATCH);
	printf("\n1. get+put pair, ns (best of %d trials of %lu pairs)\n", TRIALS, iters);
	printf("%-8s %12s %22s %8s\n", "pattern", "ipm_pcache", "unlocked free list", "ratio");
	for (p = 0; p < NPATTERNS; p++)
		printf("%-8s %12.2f %22.2f %8.3f\n", pattern_name[p], best_pc[p], best_bl[p],
		       best_pc[p] / best_bl[p]);
	printf("one uncontended CAS + release store on this machine: %.2f ns "
	       "(a pair takes two: %.2f ns)\n", best_lock, 2 * best_lock);
#ifdef IPM_BENCH_HAVE_DPDK
	printf("rte_mempool cache: see `ipm-bench mempool`\n");
#else
	printf("rte_mempool cache: skipped (libdpdk not found at build time)\n");
#endif

	/* 2. drain time. */
	ipm_stats_get(&s0);
	dr[D_REMOTE] = bench_drain(D_REMOTE, nowners, rounds);
	ipm_stats_get(&s1);
	dr[D_SELF_SIGNAL] = bench_drain(D_SELF_SIGNAL, nowners, rounds);
	dr[D_SELF_POLL] = bench_drain(D_SELF_POLL, nowners, rounds);

	printf("\n2. drain %d caches of %u objects (%d rounds)\n", nowners, fill_per_owner, rounds);
	printf("%-26s %12s %10s %14s %12s\n", "method", "median us", "p90 us",
	       "interrupts/rnd", "objects/rnd");
	for (p = 0; p < NKINDS; p++)
		printf("%-26s %12.1f %10.1f %14.2f %12.0f\n", kind_name[p], dr[p].median_us,
		       dr[p].p90_us, dr[p].interrupts_per_round, dr[p].objects_per_round);
	printf("remote drain: signals sent %llu\n",
	       (unsigned long long)(s1.signals_sent - s0.signals_sent));

	printf("SUMMARY pair_ns=%.2f pair_base_ns=%.2f pair_ratio=%.3f burst_ratio=%.3f bulk_ratio=%.3f "
	       "work_ratio=%.3f pkt_ratio=%.3f lock_ns=%.2f drain_us=%.1f selfdrain_signal_us=%.1f selfdrain_poll_us=%.1f "
	       "speedup_signal=%.1f speedup_poll=%.1f drain_interrupts=%.2f "
	       "selfdrain_signal_interrupts=%.2f drain_signals=%llu owners=%d cpus=%ld\n",
	       best_pc[P_PAIR], best_bl[P_PAIR], best_pc[P_PAIR] / best_bl[P_PAIR],
	       best_pc[P_BURST] / best_bl[P_BURST], best_pc[P_BULK] / best_bl[P_BULK], best_pc[P_WORK] / best_bl[P_WORK],
	       best_pc[P_PKT] / best_bl[P_PKT], best_lock,
	       dr[D_REMOTE].median_us, dr[D_SELF_SIGNAL].median_us, dr[D_SELF_POLL].median_us,
	       dr[D_SELF_SIGNAL].median_us / dr[D_REMOTE].median_us,
	       dr[D_SELF_POLL].median_us / dr[D_REMOTE].median_us,
	       dr[D_REMOTE].interrupts_per_round, dr[D_SELF_SIGNAL].interrupts_per_round,
	       (unsigned long long)(s1.signals_sent - s0.signals_sent), nowners,
	       sysconf(_SC_NPROCESSORS_ONLN));
	ipm_fini();
	return 0;
}
