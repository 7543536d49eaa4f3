/* SPDX-License-Identifier: MIT */
/*
 * route_cache.c - DPDK-style packet workers with a per-worker route cache,
 * and a control thread that updates routes at a high rate.
 *
 * Workers: half of them are "lcores" in IPM_MODE_POLL (they call ipm_poll()
 * once per burst of packets), the others are ordinary threads in
 * IPM_MODE_SIGNAL.  Each worker caches the routes it looks up; a route is
 * (version, next hop), and the shared table is updated by the control
 * thread only.  Every route change must reach every cache before the
 * control thread considers it done (IPM_WAIT), so a worker never forwards a
 * packet with a route older than one whose flush has returned.
 *
 * The control thread runs two phases of the same length: one flush per
 * route update ("unbatched"), then one flush per @capacity updates
 * ("batched").  It prints interruptions per update (signals the workers
 * handled, and inval deliveries they ran) for both, and checks:
 *   1. no worker used a route after its flush returned;
 *   2. no worker ran more than one inval per flush;
 *   3. batching cut deliveries per update at least 8-fold, and signals
 *      per update did not grow.
 * It exits 1 when a claim fails.
 *
 * Usage: route_cache [-w workers] [-c capacity] [-t seconds per phase]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipimask.h"

#define NROUTES		1024
#define MAX_WORKERS	32
#define BURST		32

struct route {
	uint64_t version;	/* bumped by every update */
	uint32_t nexthop;
};

struct rcache {
	unsigned gen;		/* bumped by every inval: a fill re-checks it */
	uint8_t valid[NROUTES];
	struct route r[NROUTES];
};

struct worker {
	pthread_t th;
	int poll;		/* IPM_MODE_POLL lcore */
	int slot;
	atomic_int ready;
	atomic_int stop;
	atomic_ulong packets;
	atomic_ulong stale;	/* uses of a route older than a completed flush */
	atomic_ulong invals;	/* inval calls for this worker */
	uint64_t sink;
	struct rcache cache;
} __attribute__((aligned(64)));

static struct worker workers[MAX_WORKERS];
static struct worker *by_slot[1024];
static struct route table[NROUTES];	/* the truth; written by the control thread */
static uint64_t completed[NROUTES];	/* version whose flush has returned */
static struct ipm_domain *routes;
static int oversubscribed;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ipm_inval_t: async-signal-safe; works on the cache of @slot. */
static void route_inval(int slot, const uint64_t *keys, unsigned n, void *ctx)
{
	struct worker *w = by_slot[slot];
	unsigned i;

	(void)ctx;
	__atomic_store_n(&w->cache.gen, w->cache.gen + 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (n == 0)
		memset(w->cache.valid, 0, sizeof(w->cache.valid));
	for (i = 0; i < n; i++)
		w->cache.valid[keys[i] % NROUTES] = 0;
	atomic_fetch_add_explicit(&w->invals, 1, memory_order_relaxed);
}

/* The next hop may be newer than the version read after it; the checks use
 * the version only. */
static struct route read_route(unsigned r)
{
	struct route x;

	x.nexthop = __atomic_load_n(&table[r].nexthop, __ATOMIC_RELAXED);
	x.version = __atomic_load_n(&table[r].version, __ATOMIC_ACQUIRE);
	return x;
}

static struct route lookup(struct rcache *c, unsigned r)
{
	for (;;) {
		struct route x;
		unsigned g;

		if (__atomic_load_n(&c->valid[r], __ATOMIC_RELAXED))
			return c->r[r];
		g = __atomic_load_n(&c->gen, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		x = read_route(r);
		c->r[r] = x;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		__atomic_store_n(&c->valid[r], 1, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&c->gen, __ATOMIC_RELAXED) == g)
			return x;
		__atomic_store_n(&c->valid[r], 0, __ATOMIC_RELAXED);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint32_t seed = (uint32_t)(w - workers) * 2654435761u + 1;
	int i;

	w->slot = ipm_thread_register();
	if (w->slot < 0 || w->slot >= 1024) {
		fprintf(stderr, "ipm_thread_register: %d\n", w->slot);
		exit(1);
	}
	by_slot[w->slot] = w;
	if (w->poll)
		ipm_thread_set_mode(IPM_MODE_POLL);
	atomic_store(&w->ready, 1);
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		for (i = 0; i < BURST; i++) {
			unsigned r;
			uint64_t done;
			struct route x;

			seed = seed * 1103515245u + 12345u;
			r = (seed >> 8) % NROUTES;
			/* Read what has completed *before* the lookup. */
			done = __atomic_load_n(&completed[r], __ATOMIC_ACQUIRE);
			ipm_domain_enter(routes);	/* one load once a member */
			x = lookup(&w->cache, r);
			if (x.version < done)
				atomic_fetch_add_explicit(&w->stale, 1, memory_order_relaxed);
			w->sink += x.nexthop;	/* "forward" the packet */
		}
		atomic_fetch_add_explicit(&w->packets, BURST, memory_order_relaxed);
		if (w->poll)
			ipm_poll();
		if (oversubscribed)
			sched_yield();	/* more threads than CPUs: let the others run */
	}
	/* Drop the cache, then leave: no flush needs to reach us any more. */
	memset(w->cache.valid, 0, sizeof(w->cache.valid));
	ipm_domain_leave(routes);
	return NULL;
}

struct phase {
	const char *name;
	unsigned long updates, flushes, signals, deliveries, packets;
	unsigned long max_inval_per_worker;
	double secs;
};

static void snapshot(int nw, unsigned long *sig, unsigned long *inv, unsigned long *pk,
		     unsigned long *per)
{
	int i;

	*sig = *inv = *pk = 0;
	for (i = 0; i < nw; i++) {
		struct ipm_thread_stats ts;

		if (ipm_thread_stats_get(workers[i].slot, &ts) == 0)
			*sig += ts.interrupts;
		per[i] = atomic_load(&workers[i].invals);
		*inv += per[i];
		*pk += atomic_load(&workers[i].packets);
	}
}

/* Update routes for @secs, flushing every @per updates (IPM_WAIT). */
static int control(struct ipm_batch *b, unsigned per, double secs, int nw, struct phase *p)
{
	unsigned long sig0, inv0, pk0, sig1, inv1, pk1, per0[MAX_WORKERS], per1[MAX_WORKERS];
	uint64_t pending_ver[IPM_BATCH_MAX_CAPACITY];
	unsigned pending_r[IPM_BATCH_MAX_CAPACITY], np = 0, i;
	uint32_t seed = 12345;
	double t0 = now_s(), end = t0 + secs;
	int ret, w;

	p->updates = p->flushes = 0;
	snapshot(nw, &sig0, &inv0, &pk0, per0);
	while (np || now_s() < end) {
		unsigned r;
		uint64_t v;

		if (now_s() < end) {
			seed = seed * 1103515245u + 12345u;
			r = (seed >> 8) % NROUTES;
			/* Update the truth: next hop first, then the version. */
			v = table[r].version + 1;
			__atomic_store_n(&table[r].nexthop, (uint32_t)(v * 7 % 251), __ATOMIC_RELAXED);
			__atomic_store_n(&table[r].version, v, __ATOMIC_SEQ_CST);
			ret = ipm_batch_add(b, r);
			if (ret)
				return ret;
			pending_r[np] = r;
			pending_ver[np++] = v;
			p->updates++;
			if (np < per)
				continue;
		}
		ret = ipm_batch_flush(b, IPM_WAIT);
		if (ret < 0)
			return ret;
		p->flushes++;
		/* Done: nobody may use anything older from now on. */
		for (i = 0; i < np; i++)
			if (__atomic_load_n(&completed[pending_r[i]], __ATOMIC_RELAXED) < pending_ver[i])
				__atomic_store_n(&completed[pending_r[i]], pending_ver[i],
						 __ATOMIC_RELEASE);
		np = 0;
	}
	p->secs = now_s() - t0;
	snapshot(nw, &sig1, &inv1, &pk1, per1);
	p->signals = sig1 - sig0;
	p->deliveries = inv1 - inv0;
	p->packets = pk1 - pk0;
	p->max_inval_per_worker = 0;
	for (w = 0; w < nw; w++)
		if (per1[w] - per0[w] > p->max_inval_per_worker)
			p->max_inval_per_worker = per1[w] - per0[w];
	return 0;
}

static void print_phase(const struct phase *p)
{
	double u = p->updates ? (double)p->updates : 1.0;

	printf("%-10s %9lu %8lu %10.0f %9lu %12.4f %11lu %12.4f %10.2f\n", p->name, p->updates,
	       p->flushes, (double)p->updates / p->secs, p->signals, (double)p->signals / u,
	       p->deliveries, (double)p->deliveries / u, (double)p->packets / p->secs / 1e6);
}

int main(int argc, char **argv)
{
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN), nw = 4, i, opt, ret, failed = 0;
	unsigned cap = 32;
	double secs = 0.5;
	struct ipm_batch *one, *many;
	struct phase un = { .name = "unbatched" }, ba = { .name = "batched" };
	unsigned long stale = 0;
	double sig_u, sig_b, del_u, del_b;

	while ((opt = getopt(argc, argv, "w:c:t:")) != -1) {
		switch (opt) {
		case 'w':
			nw = atoi(optarg);
			break;
		case 'c':
			cap = (unsigned)atoi(optarg);
			break;
		case 't':
			secs = atof(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-w workers] [-c capacity] [-t seconds]\n", argv[0]);
			return 2;
		}
	}
	if (nw < 1 || nw > MAX_WORKERS || cap < 2 || cap > IPM_BATCH_MAX_CAPACITY || secs <= 0) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	oversubscribed = nw + 1 > ncpu;
	ret = ipm_init(NULL);
	if (ret) {
		fprintf(stderr, "ipm_init: %s\n", strerror(-ret));
		return 1;
	}
	routes = ipm_domain_create(route_inval, NULL);
	one = ipm_batch_create(routes, 1);
	many = ipm_batch_create(routes, cap);
	if (!routes || !one || !many) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (i = 0; i < nw; i++) {
		workers[i].poll = i % 2 == 0;
		if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i])) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	}
	for (i = 0; i < nw; i++)
		while (!atomic_load(&workers[i].ready))
			sched_yield();

	ret = control(one, 1, secs, nw, &un);
	if (!ret)
		ret = control(many, cap, secs, nw, &ba);
	if (ret) {
		fprintf(stderr, "ipm_batch_flush: %s\n", strerror(-ret));
		return 1;
	}
	for (i = 0; i < nw; i++)
		atomic_store(&workers[i].stop, 1);
	for (i = 0; i < nw; i++) {
		pthread_join(workers[i].th, NULL);
		stale += atomic_load(&workers[i].stale);
	}

	printf("route_cache: %d workers (%d polling lcores, %d signal-mode), %d CPUs, "
	       "%.2f s per phase, batch capacity %u\n", nw, (nw + 1) / 2, nw / 2, ncpu, secs, cap);
	printf("%-10s %9s %8s %10s %9s %12s %11s %12s %10s\n", "phase", "updates", "flushes",
	       "updates/s", "signals", "signals/upd", "deliveries", "deliv/upd", "Mpkt/s");
	print_phase(&un);
	print_phase(&ba);

	sig_u = un.updates ? (double)un.signals / (double)un.updates : 0;
	sig_b = ba.updates ? (double)ba.signals / (double)ba.updates : 0;
	del_u = un.updates ? (double)un.deliveries / (double)un.updates : 0;
	del_b = ba.updates ? (double)ba.deliveries / (double)ba.updates : 0;
	printf("interruptions per update (signals + deliveries): unbatched %.4f, batched %.4f "
	       "(%.1fx fewer)\n", sig_u + del_u, sig_b + del_b,
	       sig_b + del_b > 0 ? (sig_u + del_u) / (sig_b + del_b) : 0.0);

	if (stale) {
		printf("FAIL: %lu packets used a route after its flush returned\n", stale);
		failed = 1;
	} else {
		printf("ok: no worker used a route after its flush returned\n");
	}
	if (un.max_inval_per_worker > un.flushes || ba.max_inval_per_worker > ba.flushes) {
		printf("FAIL: a worker ran more than one inval per flush (%lu > %lu or %lu > %lu)\n",
		       un.max_inval_per_worker, un.flushes, ba.max_inval_per_worker, ba.flushes);
		failed = 1;
	} else {
		printf("ok: at most one inval per worker per flush\n");
	}
	if (!un.updates || !ba.updates || del_b * 8 > del_u || sig_b > sig_u) {
		printf("FAIL: batching did not cut interruptions (deliveries/update %.4f -> %.4f, "
		       "signals/update %.4f -> %.4f)\n", del_u, del_b, sig_u, sig_b);
		failed = 1;
	} else {
		printf("ok: batching cut deliveries per update %.1fx, signals per update %.1fx\n",
		       del_b > 0 ? del_u / del_b : 0.0, sig_b > 0 ? sig_u / sig_b : 0.0);
	}

	ipm_batch_destroy(one);
	ipm_batch_destroy(many);
	ipm_domain_destroy(routes);
	ipm_fini();
	return failed;
}
