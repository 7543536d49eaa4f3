/* SPDX-License-Identifier: MIT */
/*
 * bench_inval.c - interrupts per invalidated key: one flush per key against
 * batches of up to @capacity keys, in the same run.
 *
 * Workers are busy threads in IPM_MODE_SIGNAL, pinned away from the control
 * thread when there is more than one CPU, each with a per-thread cache of
 * NK keys that it looks up in its loop.  The control thread invalidates
 * @keys keys twice: first one ipm_batch_flush(IPM_WAIT) per key, then one
 * per @capacity keys (the comparison the goal is about); then, for
 * information, once more with one deferred flush (no IPM_WAIT) per key.  Interrupts are counted two ways: the library's
 * per-thread "interrupts" counters (signals handled), and the RES + CAL rows
 * of /proc/interrupts on the workers' CPUs (the IPIs the kernel sent them,
 * including unrelated noise), and on every CPU.
 *
 * Usage: bench_inval [-w workers] [-k keys] [-c capacity]
 * Prints a table and one line "SUMMARY key=value ..." for scripts.
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
#include "key_cache.h"
#include "proc_interrupts.h"

#define NK		4096
#define MAX_WORKERS	64

struct worker {
	pthread_t th;
	int cpu;
	int slot;
	atomic_int ready;
	atomic_int stop;
	atomic_ulong lookups;
	struct key_cache cache;
	uint8_t valid[NK];	/* the cache's storage */
	uint64_t val[NK];
} __attribute__((aligned(64)));

static struct worker workers[MAX_WORKERS];
static struct worker *by_slot[1024];
static uint64_t truth[NK];
static struct ipm_domain *dom;
static atomic_ulong inval_calls;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int first_worker_cpu;	/* 1 when the control thread has CPU 0 to itself */

/* RES + CAL of the CPUs from @from_cpu on; -1 when /proc/interrupts cannot
 * be read.  (Control thread only: one static snapshot.) */
static long long proc_ipis(int from_cpu)
{
	static struct procirq snap;

	if (procirq_read(&snap))
		return -1;
	return procirq_sum(&snap, PROCIRQ_RES_CAL, from_cpu, PROCIRQ_MAX_CPUS);
}

/* Runs on the worker (signal handler) or for it: async-signal-safe. */
static void inval(int slot, const uint64_t *keys, unsigned n, void *ctx)
{
	(void)ctx;
	key_cache_inval(&by_slot[slot]->cache, keys, n);
	atomic_fetch_add_explicit(&inval_calls, 1, memory_order_relaxed);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned k = 0;
	uint64_t sink = 0;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	w->slot = ipm_thread_register();
	if (w->slot < 0 || w->slot >= 1024) {
		fprintf(stderr, "register: %d\n", w->slot);
		exit(1);
	}
	key_cache_init(&w->cache, NK, w->valid, w->val);
	by_slot[w->slot] = w;
	ipm_domain_enter(dom);
	atomic_store(&w->ready, 1);
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		ipm_domain_enter(dom);
		sink += key_cache_lookup(&w->cache, k, truth);
		k = (k + 1) % NK;
		atomic_fetch_add_explicit(&w->lookups, 1, memory_order_relaxed);
	}
	__asm__ __volatile__("" : : "r"(sink));
	return NULL;
}

static uint64_t lib_interrupts(int nw)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < nw; i++) {
		struct ipm_thread_stats ts;

		if (ipm_thread_stats_get(workers[i].slot, &ts) == 0)
			sum += ts.interrupts;
	}
	return sum;
}

struct result {
	unsigned long flushes;
	uint64_t lib;
	long long proc;		/* on the workers' CPUs */
	long long proc_all;	/* on every CPU (the waiter's wake-ups too) */
	unsigned long calls;
	double secs;
};

/* Invalidate @nkeys keys, @per keys per flush (@flags; a deferred run ends
 * with one IPM_WAIT flush so that everything was applied when it returns). */
static int run(struct ipm_batch *b, unsigned long nkeys, unsigned per, unsigned flags, int nw,
	       struct result *r)
{
	unsigned long i;
	uint64_t lib0 = lib_interrupts(nw);
	long long proc0 = proc_ipis(first_worker_cpu), all0 = proc_ipis(0);
	unsigned long calls0 = atomic_load(&inval_calls);
	double t0 = now_s();
	int ret;

	r->flushes = 0;
	for (i = 0; i < nkeys; i++) {
		unsigned k = (unsigned)((i * 2654435761u) % NK);

		__atomic_add_fetch(&truth[k], 1, __ATOMIC_SEQ_CST);
		ret = ipm_batch_add(b, k);
		if (ret)
			return ret;
		if ((i + 1) % per == 0 || i + 1 == nkeys) {
			if (i + 1 == nkeys)
				flags |= IPM_WAIT;
			ret = ipm_batch_flush(b, flags);
			if (ret < 0)
				return ret;
			r->flushes++;
		}
	}
	r->secs = now_s() - t0;
	r->lib = lib_interrupts(nw) - lib0;
	r->proc = proc0 < 0 ? -1 : proc_ipis(first_worker_cpu) - proc0;
	r->proc_all = all0 < 0 ? -1 : proc_ipis(0) - all0;
	r->calls = atomic_load(&inval_calls) - calls0;
	return 0;
}

static void row(const char *name, unsigned long nkeys, const struct result *r)
{
	printf("%-16s %8lu %8lu %12llu %9.4f %12lld %9.4f %12lld %10lu %8.3f\n", name, nkeys,
	       r->flushes, (unsigned long long)r->lib, (double)r->lib / (double)nkeys, r->proc,
	       r->proc < 0 ? -1.0 : (double)r->proc / (double)nkeys, r->proc_all, r->calls,
	       r->secs);
}

int main(int argc, char **argv)
{
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN), nw = ncpu > 1 ? ncpu - 1 : 1, i, opt, ret;
	unsigned long nkeys = 32000;
	unsigned cap = 32;
	struct ipm_batch *one, *many;
	struct result u, bt, df;
	double lib_ratio, proc_ratio, all_ratio;
	cpu_set_t set;

	while ((opt = getopt(argc, argv, "w:k:c:")) != -1) {
		switch (opt) {
		case 'w':
			nw = atoi(optarg);
			break;
		case 'k':
			nkeys = strtoul(optarg, NULL, 10);
			break;
		case 'c':
			cap = (unsigned)atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-w workers] [-k keys] [-c capacity]\n", argv[0]);
			return 2;
		}
	}
	if (nw < 1 || nw > MAX_WORKERS || nkeys == 0 || cap < 1 || cap > IPM_BATCH_MAX_CAPACITY) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	ret = ipm_init(NULL);
	if (ret) {
		fprintf(stderr, "ipm_init: %s\n", strerror(-ret));
		return 1;
	}
	dom = ipm_domain_create(inval, NULL);
	one = ipm_batch_create(dom, 1);
	many = ipm_batch_create(dom, cap);
	if (!dom || !one || !many) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	/* The control thread on CPU 0, workers on the others (round robin). */
	if (ncpu > 1) {
		first_worker_cpu = 1;
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	for (i = 0; i < nw; i++) {
		workers[i].cpu = ncpu > 1 ? 1 + i % (ncpu - 1) : -1;
		if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i])) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	}
	for (i = 0; i < nw; i++)
		while (!atomic_load(&workers[i].ready))
			sched_yield();

	/* Warm up (the caches fill, the first signal paths fault in). */
	if (run(many, 1000, cap, IPM_WAIT, nw, &u) || run(one, 1000, 1, IPM_WAIT, nw, &u))
		return 1;
	ret = run(one, nkeys, 1, IPM_WAIT, nw, &u);
	if (!ret)
		ret = run(many, nkeys, cap, IPM_WAIT, nw, &bt);
	if (!ret)
		ret = run(one, nkeys, 1, 0, nw, &df);
	if (ret) {
		fprintf(stderr, "flush: %s\n", strerror(-ret));
		return 1;
	}
	for (i = 0; i < nw; i++)
		atomic_store(&workers[i].stop, 1);
	for (i = 0; i < nw; i++)
		pthread_join(workers[i].th, NULL);

	lib_ratio = bt.lib ? (double)u.lib / (double)bt.lib : 0.0;
	proc_ratio = (u.proc > 0 && bt.proc > 0) ? (double)u.proc / (double)bt.proc : 0.0;
	all_ratio = (u.proc_all > 0 && bt.proc_all > 0) ? (double)u.proc_all / (double)bt.proc_all
							 : 0.0;
	printf("bench_inval: %d worker(s) (IPM_MODE_SIGNAL, busy), %d CPU(s), %lu keys, "
	       "capacity %u, IPM_WAIT flushes\n", nw, ncpu, nkeys, cap);
	printf("RES+CAL: /proc/interrupts on the workers' CPUs (%s); all-CPU RES+CAL also counts\n"
	       "the control thread's futex wake-ups\n", first_worker_cpu ? "1 and up" : "all");
	printf("%-16s %8s %8s %12s %9s %12s %9s %12s %10s %8s\n", "mode", "keys", "flushes",
	       "lib_intr", "lib/key", "RES+CAL", "proc/key", "all-CPU", "inval_calls", "secs");
	row("one flush/key", nkeys, &u);
	row("batch", nkeys, &bt);
	printf("%-16s %8s %8s %12s %8.1fx %12s %8.1fx %11.1fx\n", "reduction", "", "", "",
	       lib_ratio, "", proc_ratio, all_ratio);
	printf("(for comparison: one deferred flush per key, no IPM_WAIT, capacity 1; the\n"
	       " workers' pending sets merge them and collapse into full flushes)\n");
	row("deferred/key", nkeys, &df);
	printf("SUMMARY workers=%d cpus=%d keys=%lu capacity=%u flushes_unbatched=%lu "
	       "flushes_batched=%lu lib_intr_unbatched=%llu lib_intr_batched=%llu "
	       "lib_per_key_unbatched=%.4f lib_per_key_batched=%.4f lib_reduction=%.1f "
	       "proc_ipi_unbatched=%lld proc_ipi_batched=%lld proc_per_key_unbatched=%.4f "
	       "proc_per_key_batched=%.4f proc_reduction=%.1f proc_all_unbatched=%lld proc_all_batched=%lld "
	       "proc_all_reduction=%.1f secs_unbatched=%.3f secs_batched=%.3f "
	       "lib_per_key_deferred=%.4f proc_per_key_deferred=%.4f\n",
	       nw, ncpu, nkeys, cap, u.flushes, bt.flushes, (unsigned long long)u.lib,
	       (unsigned long long)bt.lib, (double)u.lib / (double)nkeys,
	       (double)bt.lib / (double)nkeys, lib_ratio, u.proc, bt.proc,
	       (double)u.proc / (double)nkeys, (double)bt.proc / (double)nkeys, proc_ratio,
	       u.proc_all, bt.proc_all, all_ratio, u.secs, bt.secs, (double)df.lib / (double)nkeys, (double)df.proc / (double)nkeys);

	ipm_batch_destroy(one);
	ipm_batch_destroy(many);
	ipm_domain_destroy(dom);
	ipm_fini();
	return 0;
}
