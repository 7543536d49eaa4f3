/* SPDX-License-Identifier: MIT */
/*
 * test_cpumask_barrier.c - the library on a kernel with kernel/'s
 * MEMBARRIER_CMD_FLAG_CPUMASK (run in the QEMU guest by kernel/run-qemu.sh;
 * statically linked, TAP output, no Check).
 *
 * Three registered threads spin, pinned to CPUs 1..3; the caller is on
 * CPU 0.  ipm_barrier_mask() to k of them must use one cpumask membarrier
 * per call, and interrupt exactly the k targeted CPUs: each gets one CAL
 * interrupt per call, the others none.  Prints the table.  Without the
 * flag (an unpatched kernel, or the host) the test is skipped (exit 77).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipimask.h"
#include "proc_interrupts.h"

#define NW	3
#define CALLS	200

static atomic_int stop, ready;
static int slots[NW];

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		printf("Bail out! sched_setaffinity(%d): %s\n", cpu, strerror(errno));
		exit(1);
	}
}

static void *spinner(void *arg)
{
	int i = (int)(intptr_t)arg;

	pin(i + 1);
	slots[i] = ipm_thread_register();	/* samples the pinned CPU */
	atomic_fetch_add(&ready, 1);
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		;
	return NULL;
}

/* CAL interrupts per CPU, from /proc/interrupts. */
static int read_cal(long long *cal, int ncpu)
{
	static struct procirq snap;
	int c;

	if (procirq_read(&snap) || !(snap.rows & PROCIRQ_MASK(PROCIRQ_CAL)))
		return -1;
	for (c = 0; c < ncpu; c++)
		cal[c] = snap.v[PROCIRQ_CAL][c];
	return 0;
}

int main(void)
{
	long long before[8], after[8];
	struct ipm_stats s0, s1;
	pthread_t th[NW];
	int k, i, c, t = 0, failed = 0;

	if (sysconf(_SC_NPROCESSORS_ONLN) < NW + 1) {
		printf("1..0 # SKIP needs %d CPUs\n", NW + 1);
		return 77;
	}
	pin(0);
	if (ipm_init(NULL)) {
		printf("Bail out! ipm_init\n");
		return 1;
	}
	if (!(ipm_features() & IPM_FEAT_MEMBARRIER_CPUMASK)) {
		printf("1..0 # SKIP the kernel lacks MEMBARRIER_CMD_FLAG_CPUMASK (features %#x)\n",
		       ipm_features());
		ipm_fini();
		return 77;
	}
	printf("1..%d\n", 2 * NW);
	for (i = 0; i < NW; i++)
		pthread_create(&th[i], NULL, spinner, (void *)(intptr_t)i);
	while (atomic_load(&ready) < NW)
		sched_yield();

	printf("# barrier to k of %d spinning threads (CPUs 1..%d), %d calls each: CAL per CPU\n",
	       NW, NW, CALLS);
	printf("#   k   CPU1   CPU2   CPU3   membarrier calls\n");
	for (k = 1; k <= NW; k++) {
		ipm_mask_t *m = ipm_mask_alloc();
		bool ok = true;

		for (i = 0; i < k; i++)
			ipm_mask_set(m, slots[i]);
		ipm_stats_get(&s0);
		if (read_cal(before, NW + 1)) {
			printf("Bail out! no CAL row in /proc/interrupts\n");
			return 1;
		}
		for (i = 0; i < CALLS; i++)
			if (ipm_barrier_mask(m))
				ok = false;
		read_cal(after, NW + 1);
		ipm_stats_get(&s1);
		printf("# %3d %6lld %6lld %6lld   %llu\n", k, after[1] - before[1],
		       after[2] - before[2], after[3] - before[3],
		       (unsigned long long)(s1.membarriers - s0.membarriers));
		printf("%s %d - k=%d: one cpumask membarrier per call, no signal\n",
		       ok && s1.membarriers - s0.membarriers == CALLS &&
		       s1.signals_sent == s0.signals_sent ? "ok" : "not ok", ++t, k);
		failed |= !(ok && s1.membarriers - s0.membarriers == CALLS);
		for (c = 1; c <= NW; c++) {
			long long d = after[c] - before[c];
			bool targeted = c <= k;

			/* Targeted: one IPI per call (a CPU that ran something
			 * else for a moment is skipped by the kernel); the
			 * others: none but stray timer-driven ones. */
			if (targeted ? d < CALLS * 9 / 10 : d > CALLS / 20)
				ok = false;
		}
		printf("%s %d - k=%d: CAL only on the %d targeted CPU(s)\n", ok ? "ok" : "not ok",
		       ++t, k, k);
		failed |= !ok;
		ipm_mask_free(m);
	}
	atomic_store(&stop, 1);
	for (i = 0; i < NW; i++)
		pthread_join(th[i], NULL);
	ipm_fini();
	return failed;
}
