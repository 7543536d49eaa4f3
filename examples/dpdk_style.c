/* SPDX-License-Identifier: MIT */
/*
 * dpdk_style.c - the main demo: pinned busy-polling workers ("lcores") and a
 * control thread that keeps asking them to do things, done twice:
 *
 *   naive     the control thread sends a signal to every worker
 *             (pthread_kill) and a hand-written handler does the work, the
 *             way runtimes do it without help;
 *   ipimask   the workers are IPM_MODE_POLL threads calling ipm_poll() in
 *             their loop; the control thread uses
 *               ipm_on_each_thread_cond()  route flush, only the workers
 *                                          that may cache the route,
 *               ipm_batch                  8 invalidated keys, one delivery,
 *               ipm_pcache_drain()         takes back the packet buffers
 *                                          cached by the workers, itself.
 *
 * The workload is the same in both runs: each worker loops looking routes
 * up in its own route cache (filling it from a shared table) and getting and
 * putting packet buffers; every --period-us the control thread does the next
 * of the three operations (flush one route, invalidate 8 routes, drain the
 * buffer caches) and waits until it took effect everywhere.
 *
 * For each worker the program prints the interruptions it took (handler
 * count, or ipm_thread_stats_get().interrupts, and the RES+CAL rows of
 * /proc/interrupts for its CPU) and the distribution of its loop gaps (time
 * between two consecutive iterations, clock_gettime(CLOCK_MONOTONIC)):
 * p50/p99/max, iterations slower than 1 us, and a terminal histogram.
 * `--plot DIR` writes the gap distributions, a gnuplot script, and renders
 * DIR/jitter.png when gnuplot is installed.
 *
 * Claims checked (exit 1 when one does not hold):
 *   - naive run: every worker handled >= 1 signal per operation;
 *   - ipimask run: the library sent no signal to a polling worker except as
 *     an escalation (a worker that did not poll for --deadline-us, 50 ms by
 *     default: only when the machine descheduled it that long), and the
 *     cond-targeted flushes skipped the workers that could not cache the
 *     route (cond_skipped > 0);
 *   - ipimask run: after every flush / batch no worker still caches an
 *     invalidated route; drains returned buffers; at the end every buffer is
 *     back in the pool exactly once.
 *
 * Usage: dpdk_style [--workers N] [--seconds S] [--period-us P]
 *                   [--deadline-us D] [--plot DIR] [--quiet]
 * Default: one worker per CPU but the first (at least 2), 750 operations
 * every 2 ms per run (about 7 s in all; a run stops after 3 x --seconds on
 * a slow machine, and the ipimask run then does as many operations as the
 * naive one did).  The control thread is pinned to
 * the first CPU the program may run on, workers round-robin to the others;
 * with fewer CPUs than workers + 1 (2 CPUs: both workers on CPU 1) workers
 * share CPUs (the program says so), which adds scheduler gaps to both runs
 * alike.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE	/* CPU_SET, pthread_setaffinity_np */
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ipimask.h>

#define MAXW		64
#define NKEYS		256		/* routes */
#define NBUFS		8192		/* packet buffers */
#define BATCH_KEYS	8
#define HBITS		4		/* histogram: 16 sub-buckets per power of 2 */
#define NBUCKET		(40 << HBITS)
#define NIRQCPU		1024

/* ------------------------------------------------------------------------ */
/* Options, helpers                                                          */
/* ------------------------------------------------------------------------ */

static int nworkers;
static double run_seconds = 1.5;
static unsigned period_us = 2000;
static unsigned deadline_us = 50000;
static const char *plot_dir;
static bool quiet;
static int cpus[NIRQCPU], ncpus;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { (time_t)(t / 1000000000u), (long)(t % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "dpdk_style: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* Log-linear histogram of nanoseconds: bucket b covers [lo(b), lo(b+1)). */
static unsigned bucket_of(uint64_t ns)
{
	if (ns < (1u << HBITS))
		return (unsigned)ns;
	unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
	unsigned sub = (unsigned)(ns >> (msb - HBITS)) & ((1u << HBITS) - 1);
	unsigned b = ((msb - HBITS + 1) << HBITS) + sub;
	return b < NBUCKET ? b : NBUCKET - 1;
}

static uint64_t bucket_lo(unsigned b)
{
	if (b < (1u << HBITS))
		return b;
	unsigned e = (b >> HBITS) - 1 + HBITS, sub = b & ((1u << HBITS) - 1);
	return ((uint64_t)1 << e) + ((uint64_t)sub << (e - HBITS));
}

/* /proc/interrupts: RES + CAL per CPU. */
static void irq_read(uint64_t *per_cpu)
{
	char line[16384];
	int col[NIRQCPU], n = 0;
	FILE *f = fopen("/proc/interrupts", "r");

	memset(per_cpu, 0, sizeof(uint64_t) * NIRQCPU);
	if (!f)
		return;
	if (fgets(line, sizeof(line), f)) {
		char *p = line, *e;
		while ((p = strstr(p, "CPU")) && n < NIRQCPU) {
			col[n++] = (int)strtol(p + 3, &e, 10);
			p = e;
		}
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = line;
		while (*p == ' ')
			p++;
		if (strncmp(p, "RES:", 4) && strncmp(p, "CAL:", 4))
			continue;
		p += 4;
		for (int i = 0; i < n; i++) {
			char *e;
			unsigned long long v = strtoull(p, &e, 10);
			if (e == p)
				break;
			if (col[i] >= 0 && col[i] < NIRQCPU)
				per_cpu[col[i]] += v;
			p = e;
		}
	}
	fclose(f);
}

/* ------------------------------------------------------------------------ */
/* The shared world: routes and packet buffers                               */
/* ------------------------------------------------------------------------ */

/* Route table: the truth.  Worker w looks up keys k with k % nworkers == w
 * (its flows) and every 16th key (shared routes), so a flush of one route
 * concerns one worker, or all of them for a shared route. */
static _Atomic unsigned char route_valid[NKEYS];

static bool worker_uses(int w, unsigned key)
{
	return key % 16 == 0 || (int)(key % (unsigned)nworkers) == w;
}

struct buf {
	_Atomic uint32_t state;	/* BUF_FREE in the pool, BUF_BUSY outside */
	char data[60];
};
#define BUF_FREE	1u
#define BUF_BUSY	2u

static struct buf bufs[NBUFS];
static struct buf *pool_stack[NBUFS];
static unsigned pool_free;
static pthread_spinlock_t pool_lock;	/* never sleeps: both runs alike */

static unsigned pool_refill(void *ctx, void **objs, unsigned n)
{
	unsigned got = 0;

	(void)ctx;
	pthread_spin_lock(&pool_lock);
	while (got < n && pool_free > 0)
		objs[got++] = pool_stack[--pool_free];
	pthread_spin_unlock(&pool_lock);
	return got;
}

static void pool_release(void *ctx, void *const *objs, unsigned n)
{
	(void)ctx;
	pthread_spin_lock(&pool_lock);
	for (unsigned i = 0; i < n; i++)
		pool_stack[pool_free++] = objs[i];
	pthread_spin_unlock(&pool_lock);
}

static const struct ipm_pcache_ops pool_ops = { pool_refill, pool_release };

/* ------------------------------------------------------------------------ */
/* Workers                                                                   */
/* ------------------------------------------------------------------------ */

enum { RUN_NAIVE, RUN_IPM };

struct worker {
	_Alignas(64) int id, cpu, slot;
	pthread_t th;
	/* the worker's route cache: written by the worker, cleared by flushes */
	_Atomic unsigned char cache[NKEYS];
	/* naive run: a plain per-thread buffer cache the worker owns */
	struct buf *own[256];
	unsigned nown;
	_Alignas(64) _Atomic uint64_t handled;	/* naive: signals handled */
	_Atomic int drain_req;			/* naive: give buffers back */
	_Atomic int ready;
	uint64_t iters, maxgap, over1us;
	uint64_t hist[NBUCKET];
};

static struct worker W[MAXW];
static _Atomic int stop;
static int run_kind;
static uint64_t ops_cap;	/* the ipimask run does as many ops as the naive one */
static struct ipm_pcache *pc;
static struct ipm_domain *routes;

/* The work an operation asks for, shared by both runs. */
enum { OP_FLUSH, OP_BATCH, OP_DRAIN, NOPS };
struct op {
	int kind;
	unsigned keys[BATCH_KEYS];
	unsigned nkeys;
};
static struct op cur_op;	/* naive: read by the handlers */
static _Atomic uint32_t acks_left;	/* naive: workers yet to acknowledge */

/* naive: a worker acknowledges; the last one wakes the control thread
 * (futex(2) is a plain system call: fine in a signal handler). */
static void naive_ack(void)
{
	if (atomic_fetch_sub_explicit(&acks_left, 1, memory_order_acq_rel) == 1)
		syscall(SYS_futex, (uint32_t *)&acks_left, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void drop_keys(struct worker *w, const unsigned *keys, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		atomic_store_explicit(&w->cache[keys[i] % NKEYS], 0, memory_order_relaxed);
}

/* ipimask: the route flush, run by ipm_poll() on the target. */
static void flush_route(int slot, void *info)
{
	for (int i = 0; i < nworkers; i++)
		if (W[i].slot == slot)
			drop_keys(&W[i], info, 1);
}

/* ipimask: evaluated by the control thread; only workers whose flows use
 * the route may cache it.  (Testing the worker's cache entry itself would
 * race: the worker may be between reading the table and filling its entry.) */
static bool may_cache(int slot, void *info)
{
	unsigned key = *(unsigned *)info;

	for (int i = 0; i < nworkers; i++)
		if (W[i].slot == slot)
			return worker_uses(i, key);
	return false;
}

/* ipimask: the domain's invalidation callback (nkeys == 0: drop all). */
static void route_inval(int slot, const uint64_t *keys, unsigned nkeys, void *ctx)
{
	(void)ctx;
	for (int i = 0; i < nworkers; i++) {
		if (W[i].slot != slot)
			continue;
		if (nkeys == 0)
			for (unsigned k = 0; k < NKEYS; k++)
				atomic_store_explicit(&W[i].cache[k], 0, memory_order_relaxed);
		for (unsigned j = 0; j < nkeys; j++)
			atomic_store_explicit(&W[i].cache[keys[j] % NKEYS], 0, memory_order_relaxed);
	}
}

/* naive: the hand-written handler (async-signal-safe: atomics only). */
static _Thread_local struct worker *self_w;

static void naive_handler(int sig)
{
	struct worker *w = self_w;

	(void)sig;
	if (!w)
		return;
	atomic_fetch_add_explicit(&w->handled, 1, memory_order_relaxed);
	switch (cur_op.kind) {
	case OP_FLUSH:
	case OP_BATCH:
		drop_keys(w, cur_op.keys, cur_op.nkeys);
		break;
	case OP_DRAIN:
		/* the cache is not safe to touch here: ask the loop */
		atomic_store_explicit(&w->drain_req, 1, memory_order_relaxed);
		return;		/* the loop acknowledges */
	}
	naive_ack();
}

static void naive_get_put(struct worker *w, unsigned i)
{
	if (atomic_load_explicit(&w->drain_req, memory_order_relaxed)) {
		pool_release(NULL, (void *const *)w->own, w->nown);
		w->nown = 0;
		atomic_store_explicit(&w->drain_req, 0, memory_order_relaxed);
		naive_ack();
	}
	if (i & 1) {
		if (w->nown == 0)
			w->nown = pool_refill(NULL, (void **)w->own, 32);
		if (w->nown > 0) {
			struct buf *b = w->own[--w->nown];
			b->data[0]++;
			w->own[w->nown++] = b;
		}
	}
}

static void ipm_get_put(struct worker *w, unsigned i)
{
	(void)w;
	if (i & 1) {
		struct buf *b = ipm_pcache_get(pc);
		if (b) {
			if (atomic_exchange(&b->state, BUF_BUSY) != BUF_FREE)
				fprintf(stderr, "buffer handed out twice\n");
			b->data[0]++;
			atomic_store(&b->state, BUF_FREE);
			ipm_pcache_put(pc, b);
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	cpu_set_t set;
	uint64_t prev, t;
	unsigned i = 0, seed = (unsigned)w->id * 2654435761u + 1;

	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	self_w = w;
	if (run_kind == RUN_IPM) {
		w->slot = ipm_thread_register();
		if (w->slot < 0)
			die("ipm_thread_register", w->slot);
		int ret = ipm_thread_set_mode(IPM_MODE_POLL);
		if (ret)
			die("ipm_thread_set_mode", ret);
		ipm_domain_enter(routes);
	}
	atomic_store(&w->ready, 1);
	prev = now_ns();
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (run_kind == RUN_IPM)
			ipm_poll();
		/* route lookup: one of this worker's keys */
		seed = seed * 1103515245u + 12345u;
		unsigned key = (seed >> 8) % NKEYS;
		if (!worker_uses(w->id, key))
			key &= ~15u;	/* a shared route */
		if (!atomic_load_explicit(&w->cache[key], memory_order_relaxed) &&
		    atomic_load_explicit(&route_valid[key], memory_order_acquire))
			atomic_store_explicit(&w->cache[key], 1, memory_order_relaxed);
		/* a packet buffer */
		if (run_kind == RUN_IPM)
			ipm_get_put(w, i);
		else
			naive_get_put(w, i);
		i++;
		t = now_ns();
		uint64_t gap = t - prev;
		prev = t;
		w->iters++;
		w->hist[bucket_of(gap)]++;
		if (gap > w->maxgap)
			w->maxgap = gap;
		if (gap > 1000)
			w->over1us++;
	}
	if (run_kind == RUN_IPM) {
		ipm_domain_leave(routes);
		ipm_thread_unregister();
	} else {
		pool_release(NULL, (void *const *)w->own, w->nown);
		w->nown = 0;
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Control thread                                                            */
/* ------------------------------------------------------------------------ */

struct result {
	const char *name;
	uint64_t ops[NOPS], nops;
	uint64_t interrupts[MAXW], irq[MAXW];
	uint64_t iters[MAXW], p50[MAXW], p99[MAXW], maxgap[MAXW], over1us[MAXW];
	uint64_t hist[MAXW][NBUCKET];
	struct ipm_stats st;
	uint64_t stale, drained;
	double op_us;	/* mean control-op latency */
};

static unsigned ctl_seed = 12345;

static void next_op(struct op *o, uint64_t n)
{
	o->kind = (int)(n % NOPS);
	o->nkeys = o->kind == OP_FLUSH ? 1 : o->kind == OP_BATCH ? BATCH_KEYS : 0;
	for (unsigned i = 0; i < o->nkeys; i++) {
		ctl_seed = ctl_seed * 1103515245u + 12345u;
		o->keys[i] = (ctl_seed >> 8) % NKEYS;
	}
}

static void naive_broadcast(const struct op *o)
{
	uint32_t left;

	cur_op = *o;
	atomic_store(&acks_left, (uint32_t)nworkers);
	for (int i = 0; i < nworkers; i++) {
		int ret = pthread_kill(W[i].th, SIGUSR1);
		if (ret)
			die("pthread_kill", ret);
	}
	/* spin a little, then sleep like ipimask's IPM_WAIT does */
	for (int spin = 0; spin < 2000 && atomic_load(&acks_left); spin++)
		;
	while ((left = atomic_load(&acks_left)) != 0)
		syscall(SYS_futex, (uint32_t *)&acks_left, FUTEX_WAIT_PRIVATE, left, NULL, NULL, 0);
}

static uint64_t check_stale(const struct op *o)
{
	uint64_t stale = 0;

	for (int i = 0; i < nworkers; i++)
		for (unsigned k = 0; k < o->nkeys; k++)
			stale += atomic_load(&W[i].cache[o->keys[k]]) != 0;
	return stale;
}

static void ipm_do(const struct op *o, struct ipm_batch *b, struct result *r)
{
	int ret;

	switch (o->kind) {
	case OP_FLUSH: {
		unsigned key = o->keys[0];
		ret = ipm_on_each_thread_cond(may_cache, flush_route, &key, IPM_WAIT);
		if (ret < 0)
			die("ipm_on_each_thread_cond", ret);
		break;
	}
	case OP_BATCH:
		for (unsigned i = 0; i < o->nkeys; i++)
			if ((ret = ipm_batch_add(b, o->keys[i])) < 0)
				die("ipm_batch_add", ret);
		ret = ipm_batch_flush(b, IPM_WAIT);
		if (ret < 0)
			die("ipm_batch_flush", ret);
		break;
	case OP_DRAIN:
		r->drained += ipm_pcache_drain(pc, NULL);
		break;
	}
}

static void run(int kind, struct result *r)
{
	static uint64_t irq0[NIRQCPU], irq1[NIRQCPU];
	struct ipm_batch *b = NULL;
	uint64_t t0, next, optime = 0;
	int ret;

	memset(W, 0, sizeof(W));
	run_kind = kind;
	atomic_store(&stop, 0);
	for (unsigned k = 0; k < NKEYS; k++)
		atomic_store(&route_valid[k], 1);
	if (kind == RUN_IPM) {
		struct ipm_config cfg = { .poll_deadline_us = deadline_us };
		if ((ret = ipm_init(&cfg)))
			die("ipm_init", ret);
		routes = ipm_domain_create(route_inval, NULL);
		b = routes ? ipm_batch_create(routes, BATCH_KEYS) : NULL;
		pc = ipm_pcache_create(&pool_ops, NULL, 128, 32);
		if (!routes || !b || !pc)
			die("ipimask objects", -ENOMEM);
	}
	for (int i = 0; i < nworkers; i++) {
		W[i].id = i;
		W[i].cpu = ncpus > 1 ? cpus[1 + i % (ncpus - 1)] : cpus[0];
		W[i].slot = -1;
		if ((ret = pthread_create(&W[i].th, NULL, worker_main, &W[i])))
			die("pthread_create", ret);
	}
	for (int i = 0; i < nworkers; i++)
		while (!atomic_load(&W[i].ready))
			usleep(100);
	usleep(50000);	/* caches warm */
	irq_read(irq0);
	if (kind == RUN_IPM)
		ipm_stats_get(&r->st);
	struct ipm_stats st0 = r->st;
	struct ipm_thread_stats ts0[MAXW];
	for (int i = 0; i < nworkers && kind == RUN_IPM; i++)
		ipm_thread_stats_get(W[i].slot, &ts0[i]);

	uint64_t target_ops = (uint64_t)(run_seconds * 1e6 / period_us);
	if (ops_cap && ops_cap < target_ops)	/* the naive run hit its time cap */
		target_ops = ops_cap;
	t0 = now_ns();
	next = t0;
	while (r->nops < target_ops && now_ns() - t0 < (uint64_t)(3 * run_seconds * 1e9)) {
		struct op o;
		next_op(&o, r->nops);
		for (unsigned i = 0; i < o.nkeys; i++)
			atomic_store(&route_valid[o.keys[i]], 0);
		uint64_t s = now_ns();
		if (kind == RUN_NAIVE)
			naive_broadcast(&o);
		else
			ipm_do(&o, b, r);
		optime += now_ns() - s;
		if (kind == RUN_IPM)
			r->stale += check_stale(&o);
		for (unsigned i = 0; i < o.nkeys; i++)
			atomic_store(&route_valid[o.keys[i]], 1);
		r->ops[o.kind]++;
		r->nops++;
		next += (uint64_t)period_us * 1000u;
		sleep_until(next);
	}
	r->op_us = r->nops ? (double)optime / (double)r->nops / 1e3 : 0;

	if (kind == RUN_IPM) {
		ipm_stats_get(&r->st);
		r->st.signals_sent -= st0.signals_sent;
		r->st.escalations -= st0.escalations;
		r->st.cond_skipped -= st0.cond_skipped;
		r->st.calls -= st0.calls;
		r->st.polled -= st0.polled;
		r->st.drains -= st0.drains;
		r->st.drained_objects -= st0.drained_objects;
		for (int i = 0; i < nworkers; i++) {
			struct ipm_thread_stats ts;
			ipm_thread_stats_get(W[i].slot, &ts);
			r->interrupts[i] = ts.interrupts - ts0[i].interrupts;
		}
	} else {
		for (int i = 0; i < nworkers; i++)
			r->interrupts[i] = atomic_load(&W[i].handled);
	}
	irq_read(irq1);
	atomic_store(&stop, 1);
	for (int i = 0; i < nworkers; i++)
		pthread_join(W[i].th, NULL);
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &W[i];
		uint64_t c = 0;
		r->irq[i] = irq1[w->cpu] - irq0[w->cpu];
		r->iters[i] = w->iters;
		r->maxgap[i] = w->maxgap;
		r->over1us[i] = w->over1us;
		memcpy(r->hist[i], w->hist, sizeof(w->hist));
		r->p50[i] = r->p99[i] = 0;
		for (unsigned k = 0; k < NBUCKET; k++) {
			c += w->hist[k];
			if (!r->p50[i] && c * 2 >= w->iters)
				r->p50[i] = bucket_lo(k + 1);
			if (!r->p99[i] && c * 100 >= w->iters * 99)
				r->p99[i] = bucket_lo(k + 1);
		}
	}
	if (kind == RUN_IPM) {
		ipm_batch_destroy(b);
		ipm_domain_destroy(routes);
		ipm_pcache_destroy(pc);
		ipm_fini();
	}
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static void fmt_ns(char *buf, size_t n, uint64_t ns)
{
	if (ns < 10000)
		snprintf(buf, n, "%lu ns", (unsigned long)ns);
	else if (ns < 10000000)
		snprintf(buf, n, "%.1f us", (double)ns / 1e3);
	else
		snprintf(buf, n, "%.1f ms", (double)ns / 1e6);
}

static void print_result(const struct result *r)
{
	char a[32], b[32], c[32];

	printf("\n== %s run: %lu operations (%lu route flushes, %lu batches of %d keys, %lu drains), "
	       "mean %.1f us each\n", r->name, (unsigned long)r->nops,
	       (unsigned long)r->ops[OP_FLUSH], (unsigned long)r->ops[OP_BATCH], BATCH_KEYS,
	       (unsigned long)r->ops[OP_DRAIN], r->op_us);
	printf("  worker cpu  interruptions  RES+CAL(cpu)      iters   gap p50    gap p99    gap max  gaps>1us\n");
	for (int i = 0; i < nworkers; i++) {
		fmt_ns(a, sizeof(a), r->p50[i]);
		fmt_ns(b, sizeof(b), r->p99[i]);
		fmt_ns(c, sizeof(c), r->maxgap[i]);
		printf("  %6d %3d  %13lu  %12lu  %9lu  %9s  %9s  %9s  %8lu\n", i, W[i].cpu,
		       (unsigned long)r->interrupts[i], (unsigned long)r->irq[i],
		       (unsigned long)r->iters[i], a, b, c, (unsigned long)r->over1us[i]);
	}
}

/* Terminal histogram of loop gaps >= 256 ns, both runs side by side,
 * summed over workers, one row per power of two. */
static void print_histogram(const struct result *n, const struct result *m)
{
	uint64_t rows[2][40] = { { 0 } }, top = 1;
	const struct result *rs[2] = { n, m };

	for (int j = 0; j < 2; j++)
		for (int i = 0; i < nworkers; i++)
			for (unsigned k = 0; k < NBUCKET; k++) {
				uint64_t lo = bucket_lo(k);
				unsigned e = lo ? 63u - (unsigned)__builtin_clzll(lo) : 0;
				if (e >= 8 && e < 40)
					rows[j][e] += rs[j]->hist[i][k];
			}
	for (int j = 0; j < 2; j++)
		for (int e = 8; e < 40; e++)
			if (rows[j][e] > top)
				top = rows[j][e];
	printf("\nloop gaps >= 256 ns, all workers (log scale bars; # naive, = ipimask)\n");
	int last = 8;
	for (int e = 8; e < 40; e++)
		if (rows[0][e] || rows[1][e])
			last = e;
	for (int e = 8; e <= last; e++) {
		char lbl[32];
		fmt_ns(lbl, sizeof(lbl), (uint64_t)1 << e);
		for (int j = 0; j < 2; j++) {
			int len = 0;
			if (rows[j][e]) {
				double l = 1.0, t = 1.0;
				for (uint64_t v = rows[j][e]; v > 1; v >>= 1)
					l += 1.0;
				for (uint64_t v = top; v > 1; v >>= 1)
					t += 1.0;
				len = (int)(40.0 * l / t);
				if (len < 1)
					len = 1;
			}
			printf("  %9s %-7s %10lu |", j ? "" : lbl, j ? "ipimask" : "naive",
			       (unsigned long)rows[j][e]);
			for (int x = 0; x < len; x++)
				putchar(j ? '=' : '#');
			putchar('\n');
		}
	}
}

static int write_plot(const char *dir, const struct result *n, const struct result *m)
{
	char path[4096];
	const struct result *rs[2] = { n, m };
	const char *names[2] = { "naive", "ipimask" };
	uint64_t irq[2] = { 0, 0 }, intr[2] = { 0, 0 };

	mkdir(dir, 0755);
	for (int j = 0; j < 2; j++) {
		snprintf(path, sizeof(path), "%s/jitter-%s.dat", dir, names[j]);
		FILE *f = fopen(path, "w");
		if (!f)
			return -errno;
		uint64_t total = 0, sum[NBUCKET] = { 0 };
		for (int i = 0; i < nworkers; i++) {
			bool seen = false;	/* count a CPU shared by workers once */
			for (int q = 0; q < i; q++)
				seen |= W[q].cpu == W[i].cpu;
			total += rs[j]->iters[i];
			if (!seen)
				irq[j] += rs[j]->irq[i];
			intr[j] += rs[j]->interrupts[i];
			for (unsigned k = 0; k < NBUCKET; k++)
				sum[k] += rs[j]->hist[i][k];
		}
		/* Both runs do the same operations: absolute counts compare. */
		fprintf(f, "# %s run, %lu operations: loop gap (ns), iterations in bucket, "
			"iterations with a gap >= it (all workers)\n", names[j], (unsigned long)rs[j]->nops);
		uint64_t above = total;
		for (unsigned k = 0; k < NBUCKET; k++) {
			if (sum[k] && total)
				fprintf(f, "%lu %lu %lu\n", (unsigned long)bucket_lo(k),
					(unsigned long)sum[k], (unsigned long)above);
			above -= sum[k];
		}
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/jitter.gp", dir);
	FILE *g = fopen(path, "w");
	if (!g)
		return -errno;
	fprintf(g,
		"# gnuplot %s/jitter.gp  (from the directory dpdk_style ran in) -> jitter.png\n"
		"dir = '%s'\n"
		"set terminal pngcairo size 1000,600 noenhanced font 'sans,11'\n"
		"set output dir.'/jitter.png'\n"
		"set title \"Polling loop gaps while a control thread flushes, invalidates, drains\\n"
		"%d workers, %lu operations per run; signals handled: naive %lu, ipimask %lu; "
		"RES+CAL on their CPUs: %lu vs %lu\"\n"
		"set logscale xy\n"
		"set xlabel 'loop gap (time between two iterations of the polling loop)'\n"
		"set ylabel 'loop iterations with a gap >= x (all workers)'\n"
		"set format x '%%.0s%%cs'\n"
		"set xrange [250e-9:*]\n"
		"set grid\n"
		"set key top right\n"
		"plot dir.'/jitter-naive.dat' using ($1*1e-9):3 with steps lw 2 lc rgb '#d62728' title 'naive: pthread_kill to every worker', \\\n"
		"     dir.'/jitter-ipimask.dat' using ($1*1e-9):3 with steps lw 2 lc rgb '#1f77b4' title 'ipimask: ipm_poll(), cond flush, batch, pcache drain'\n",
		dir, dir, nworkers, (unsigned long)n->nops, (unsigned long)intr[0],
		(unsigned long)intr[1], (unsigned long)irq[0], (unsigned long)irq[1]);
	fclose(g);
	printf("\nplot data and script written to %s/ (jitter-naive.dat, jitter-ipimask.dat, jitter.gp)\n", dir);
	if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
		char cmd[4200];
		snprintf(cmd, sizeof(cmd), "gnuplot '%s/jitter.gp'", dir);
		if (system(cmd) == 0)
			printf("rendered %s/jitter.png\n", dir);
		else
			fprintf(stderr, "dpdk_style: gnuplot failed\n");
	} else {
		printf("gnuplot not installed: apt-get install gnuplot-nox, then gnuplot %s/jitter.gp\n", dir);
	}
	return 0;
}

static struct result res[2];

int main(int argc, char **argv)
{
	cpu_set_t set;
	struct sigaction sa;
	int fails = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--workers") && v)
			nworkers = atoi(argv[++i]);
		else if (!strcmp(a, "--seconds") && v)
			run_seconds = atof(argv[++i]);
		else if (!strcmp(a, "--period-us") && v)
			period_us = (unsigned)atoi(argv[++i]);
		else if (!strcmp(a, "--deadline-us") && v)
			deadline_us = (unsigned)atoi(argv[++i]);
		else if (!strcmp(a, "--plot") && v)
			plot_dir = argv[++i];
		else if (!strcmp(a, "--quiet"))
			quiet = true;
		else {
			fprintf(stderr, "usage: dpdk_style [--workers N] [--seconds S] [--period-us P]\n"
					"                  [--deadline-us D] [--plot DIR] [--quiet]\n");
			return 2;
		}
	}
	if (sched_getaffinity(0, sizeof(set), &set))
		die("sched_getaffinity", errno);
	for (int c = 0; c < CPU_SETSIZE && ncpus < NIRQCPU; c++)
		if (CPU_ISSET(c, &set))
			cpus[ncpus++] = c;
	if (nworkers <= 0)
		nworkers = ncpus < 3 ? 2 : ncpus - 1;
	if (ncpus > 1) {	/* the control thread gets the first CPU */
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(cpus[0], &one);
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
	}
	if (nworkers > MAXW)
		nworkers = MAXW;
	if (run_seconds <= 0 || period_us == 0)
		die("bad --seconds or --period-us", EINVAL);

	for (unsigned i = 0; i < NBUFS; i++) {
		atomic_init(&bufs[i].state, BUF_FREE);
		pool_stack[i] = &bufs[i];
	}
	pool_free = NBUFS;
	pthread_spin_init(&pool_lock, PTHREAD_PROCESS_PRIVATE);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = naive_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	printf("dpdk_style: %d polling workers pinned round-robin to CPUs %s, control thread on CPU %d;\n"
	       "%lu operations per run, one every %u us (route flush / %d-key invalidation / buffer drain)\n",
	       nworkers, ncpus > 1 ? "1.." : "0", cpus[0], (unsigned long)(run_seconds * 1e6 / period_us),
	       period_us, BATCH_KEYS);
	if (nworkers + 1 > ncpus)
		printf("note: %d workers + 1 control thread on %d CPU(s): %s share CPUs, so both runs include\n"
		       "scheduler gaps (time slices of the threads sharing a CPU; RES+CAL is per CPU)\n",
		       nworkers, ncpus, ncpus > 1 ? "workers" : "all threads");

	res[0].name = "naive";
	run(RUN_NAIVE, &res[0]);
	ops_cap = res[0].nops;	/* same operations in both runs, even when capped */
	res[1].name = "ipimask";
	run(RUN_IPM, &res[1]);
	print_result(&res[0]);
	print_result(&res[1]);
	printf("  library: %lu calls, %lu polled, %lu signals sent, %lu escalations, %lu cond-skipped, "
	       "%lu drains (%lu buffers)\n",
	       (unsigned long)res[1].st.calls, (unsigned long)res[1].st.polled,
	       (unsigned long)res[1].st.signals_sent, (unsigned long)res[1].st.escalations,
	       (unsigned long)res[1].st.cond_skipped, (unsigned long)res[1].st.drains,
	       (unsigned long)res[1].st.drained_objects);
	if (!quiet)
		print_histogram(&res[0], &res[1]);

	/* Claims */
	printf("\nchecks:\n");
	for (int i = 0; i < nworkers; i++) {
		bool ok = res[0].interrupts[i] >= res[0].nops;
		printf("  [%s] naive: worker %d handled %lu signals for %lu operations (>= 1 per op)\n",
		       ok ? "ok" : "FAIL", i, (unsigned long)res[0].interrupts[i], (unsigned long)res[0].nops);
		fails += !ok;
	}
	uint64_t ipm_int = 0;
	for (int i = 0; i < nworkers; i++)
		ipm_int += res[1].interrupts[i];
	{
		bool ok = ipm_int <= res[1].st.escalations;
		printf("  [%s] ipimask: polling workers took %lu signals from the library "
		       "(escalations past the %u us deadline: %lu)\n", ok ? "ok" : "FAIL",
		       (unsigned long)ipm_int, deadline_us, (unsigned long)res[1].st.escalations);
		fails += !ok;
		if (res[1].st.escalations)
			printf("       note: a worker was descheduled for more than %u us "
			       "(a loaded machine); those escalations are the library's documented fallback\n",
			       deadline_us);
	}
	{
		bool ok = res[1].st.cond_skipped > 0;
		printf("  [%s] ipimask: cond-targeted flushes skipped %lu worker(s) that could not cache the route\n",
		       ok ? "ok" : "FAIL", (unsigned long)res[1].st.cond_skipped);
		fails += !ok;
	}
	{
		bool ok = res[1].stale == 0;
		printf("  [%s] ipimask: invalidated routes still cached after a flush returned: %lu\n",
		       ok ? "ok" : "FAIL", (unsigned long)res[1].stale);
		fails += !ok;
	}
	{
		bool ok = res[1].ops[OP_DRAIN] == 0 || res[1].drained > 0;
		printf("  [%s] ipimask: %lu drains gave back %lu buffers without interrupting anyone\n",
		       ok ? "ok" : "FAIL", (unsigned long)res[1].ops[OP_DRAIN], (unsigned long)res[1].drained);
		fails += !ok;
	}
	{
		unsigned busy = 0;
		for (unsigned i = 0; i < NBUFS; i++)
			busy += atomic_load(&bufs[i].state) != BUF_FREE;
		bool seen[NBUFS] = { false }, dup = false;
		for (unsigned i = 0; i < pool_free; i++) {
			size_t k = (size_t)(pool_stack[i] - bufs);
			dup |= seen[k];
			seen[k] = true;
		}
		bool ok = pool_free == NBUFS && !dup && busy == 0;
		printf("  [%s] every buffer back in the pool exactly once (%u of %d)\n",
		       ok ? "ok" : "FAIL", pool_free, NBUFS);
		fails += !ok;
	}
	if (plot_dir && write_plot(plot_dir, &res[0], &res[1]) < 0) {
		fprintf(stderr, "dpdk_style: cannot write to %s\n", plot_dir);
		fails++;
	}
	printf("%s\n", fails ? "dpdk_style: FAILED" : "dpdk_style: all claims hold");
	return fails ? 1 : 0;
}
