/* SPDX-License-Identifier: MIT */
/*
 * mempool_drain.c - packet buffers through per-thread caches; the control
 * thread drains every cache while the workers keep running, and nobody is
 * interrupted.
 *
 * The problem this solves: DPDK's mempool caches can be emptied only by
 * their own lcore, so objects get stranded in the caches of busy (or
 * sleeping) workers when the control plane wants them back, e.g. to resize
 * or free the pool.  With ipm_pcache the control thread empties the caches
 * itself, one per-thread lock at a time.
 *
 * Claims checked (the program exits 1 if one does not hold):
 *   - every worker's interrupt counter is unchanged by the drains;
 *   - no signal was sent by the library during the drains;
 *   - the drains gave objects back (drains / drained_objects counted);
 *   - at the end every buffer is back in the pool exactly once.
 *
 * Build: part of the tree (examples/meson.build); run ./mempool_drain.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ipimask.h>

#define NWORKERS	4
#define NBUFS		4096
#define BUF_SIZE	2048
#define CACHE_HIGH	256
#define CACHE_BATCH	32
#define BURST		32

/* ------------------------------------------------------------------------ */
/* The pool: the backing store, a mutex-protected stack of buffers           */
/* ------------------------------------------------------------------------ */

struct pkt {
	uint32_t magic;		/* PKT_FREE in the pool, PKT_BUSY outside */
	uint32_t len;
	unsigned char data[BUF_SIZE - 8];
};
#define PKT_FREE	0x46524545u
#define PKT_BUSY	0x42555359u

struct pool {
	pthread_mutex_t lock;
	struct pkt *bufs;
	struct pkt **stack;
	unsigned nfree;
};

static struct pool pool;

static unsigned pool_refill(void *ctx, void **objs, unsigned n)
{
	struct pool *p = ctx;
	unsigned k = 0;

	pthread_mutex_lock(&p->lock);
	while (k < n && p->nfree)
		objs[k++] = p->stack[--p->nfree];
	pthread_mutex_unlock(&p->lock);
	return k;
}

static void pool_release(void *ctx, void *const *objs, unsigned n)
{
	struct pool *p = ctx;
	unsigned i;

	pthread_mutex_lock(&p->lock);
	for (i = 0; i < n; i++) {
		if (p->nfree == NBUFS) {
			fprintf(stderr, "pool: more buffers back than exist\n");
			abort();
		}
		p->stack[p->nfree++] = objs[i];
	}
	pthread_mutex_unlock(&p->lock);
}

static const struct ipm_pcache_ops pool_ops = { pool_refill, pool_release };

static unsigned pool_free_count(void)
{
	unsigned n;

	pthread_mutex_lock(&pool.lock);
	n = pool.nfree;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

/* Every buffer exactly once. */
static int pool_check_full(void)
{
	unsigned char *seen = calloc(NBUFS, 1);
	unsigned i, bad = 0;

	if (!seen)
		return -1;
	pthread_mutex_lock(&pool.lock);
	if (pool.nfree != NBUFS)
		bad++;
	for (i = 0; i < pool.nfree; i++) {
		size_t idx = (size_t)(pool.stack[i] - pool.bufs);

		if (idx >= NBUFS || seen[idx]++)
			bad++;
	}
	pthread_mutex_unlock(&pool.lock);
	free(seen);
	return bad ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Workers: receive a burst, process it, free it                             */
/* ------------------------------------------------------------------------ */

struct worker {
	pthread_t th;
	struct ipm_pcache *pc;
	int slot;
	atomic_int ready, stop;
	atomic_ulong packets;
	atomic_int error;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pkt *burst[BURST];
	unsigned long packets = 0;
	unsigned i, n, round = 0;

	w->slot = ipm_thread_register();
	if (w->slot < 0) {
		atomic_store(&w->error, 1);
		atomic_store(&w->ready, 1);
		return NULL;
	}
	atomic_store(&w->ready, 1);
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		/* Bursts of varying size: the cache moves across batch and high. */
		unsigned want = 1 + (round++ * 7) % BURST;

		for (n = 0; n < want; n++) {
			burst[n] = ipm_pcache_get(w->pc);
			if (!burst[n])
				break;
			if (burst[n]->magic == PKT_BUSY)
				atomic_store(&w->error, 1);	/* handed out twice */
			burst[n]->magic = PKT_BUSY;
			burst[n]->len = 64;
			memset(burst[n]->data, (int)n, 64);
		}
		for (i = 0; i < n; i++) {
			burst[i]->magic = PKT_FREE;
			ipm_pcache_put(w->pc, burst[i]);
		}
		packets += n;
		atomic_store_explicit(&w->packets, packets, memory_order_relaxed);
	}
	return NULL;	/* exit: the thread's cache goes back to the pool */
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int main(void)
{
	struct worker w[NWORKERS];
	struct ipm_thread_stats ts;
	struct ipm_stats s0, s1;
	uint64_t irq_before[NWORKERS], irq_after[NWORKERS];
	unsigned drained[NWORKERS], total = 0, cached, i, round;
	struct ipm_pcache *pc;
	ipm_mask_t *one;
	int ok = 1, ret;

	ret = ipm_init(NULL);
	if (ret) {
		fprintf(stderr, "ipm_init: %s\n", strerror(-ret));
		return 1;
	}
	pthread_mutex_init(&pool.lock, NULL);
	pool.bufs = calloc(NBUFS, sizeof(struct pkt));
	pool.stack = calloc(NBUFS, sizeof(struct pkt *));
	if (!pool.bufs || !pool.stack)
		return 1;
	for (i = 0; i < NBUFS; i++) {
		pool.bufs[i].magic = PKT_FREE;
		pool.stack[i] = &pool.bufs[i];
	}
	pool.nfree = NBUFS;

	pc = ipm_pcache_create(&pool_ops, &pool, CACHE_HIGH, CACHE_BATCH);
	one = ipm_mask_alloc();
	if (!pc || !one) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	memset(w, 0, sizeof(w));
	for (i = 0; i < NWORKERS; i++) {
		w[i].pc = pc;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i]))
			return 1;
	}
	for (i = 0; i < NWORKERS; i++)
		while (!atomic_load(&w[i].ready))
			sched_yield();
	sleep_ms(100);	/* let the caches fill up */

	/* The control thread drains every worker's cache while they run. */
	ipm_stats_get(&s0);
	for (i = 0; i < NWORKERS; i++) {
		ipm_thread_stats_get(w[i].slot, &ts);
		irq_before[i] = ts.interrupts;
		drained[i] = 0;
	}
	for (round = 0; round < 20; round++) {
		for (i = 0; i < NWORKERS; i++) {
			ipm_mask_zero(one);
			ipm_mask_set(one, w[i].slot);
			drained[i] += ipm_pcache_drain(pc, one);
		}
		sleep_ms(5);
	}
	/* "Before resizing the pool": one last drain of everyone. */
	total = ipm_pcache_drain(pc, NULL);
	cached = 0;
	for (i = 0; i < NWORKERS; i++)
		cached += ipm_pcache_count(pc, w[i].slot);
	printf("pool: %u of %u buffers free after the final drain (%u drained by it,"
	       " %u cached again by running workers)\n",
	       pool_free_count(), NBUFS, total, cached);
	for (i = 0; i < NWORKERS; i++) {
		ipm_thread_stats_get(w[i].slot, &ts);
		irq_after[i] = ts.interrupts;
		total += drained[i];
	}
	ipm_stats_get(&s1);

	printf("%-8s %-6s %-12s %-16s %s\n", "worker", "slot", "packets", "objects drained",
	       "interruptions");
	for (i = 0; i < NWORKERS; i++) {
		uint64_t irq = irq_after[i] - irq_before[i];

		printf("%-8u %-6d %-12lu %-16u %llu\n", i, w[i].slot,
		       (unsigned long)atomic_load(&w[i].packets), drained[i],
		       (unsigned long long)irq);
		if (irq != 0) {
			printf("FAIL: worker %u was interrupted\n", i);
			ok = 0;
		}
	}
	printf("drains: %llu caches emptied, %llu objects; signals sent: %llu\n",
	       (unsigned long long)(s1.drains - s0.drains),
	       (unsigned long long)(s1.drained_objects - s0.drained_objects),
	       (unsigned long long)(s1.signals_sent - s0.signals_sent));
	if (s1.signals_sent != s0.signals_sent) {
		printf("FAIL: the library sent signals during the drains\n");
		ok = 0;
	}
	if (total == 0 || s1.drained_objects - s0.drained_objects != total) {
		printf("FAIL: the drains gave nothing back, or were not counted\n");
		ok = 0;
	}

	for (i = 0; i < NWORKERS; i++) {
		atomic_store(&w[i].stop, 1);
		pthread_join(w[i].th, NULL);
		if (atomic_load(&w[i].error) || atomic_load(&w[i].packets) == 0) {
			printf("FAIL: worker %u saw an error or made no progress\n", i);
			ok = 0;
		}
	}
	ipm_pcache_destroy(pc);
	if (pool_check_full()) {
		printf("FAIL: buffers lost or duplicated\n");
		ok = 0;
	} else {
		printf("pool: all %u buffers back, each exactly once\n", NBUFS);
	}
	ipm_mask_free(one);
	ipm_fini();
	free(pool.bufs);
	free(pool.stack);
	printf("%s\n", ok ? "OK" : "FAILED");
	return ok ? 0 : 1;
}
