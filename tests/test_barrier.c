/* SPDX-License-Identifier: MIT */
/*
 * test_barrier.c - ipm_barrier_mask(), checked by a store-buffering litmus
 * test, which is also shown to fail when the barrier is left out (x86).
 *
 *   writer (caller)                reader (target)
 *   x = 1                          y = 1
 *   ipm_barrier_mask(reader)       compiler barrier only
 *   r1 = y                         r2 = x
 *
 *   Forbidden: r1 == 0 && r2 == 0.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define ITERS 100000
/* On a loaded machine a lockstep iteration can cost a time slice: the run
 * stops at this deadline, and what it ran is what is judged. */
#define LITMUS_SECONDS 45.0
#define MIN_ITERS 1000

struct litmus {
	_Alignas(64) volatile int x;
	_Alignas(64) volatile int y;
	_Alignas(64) atomic_int go;
	_Alignas(64) atomic_int done;
	_Alignas(64) volatile int r2;
	atomic_int stop;
	atomic_int slot;
	int pin;
};

static struct litmus L;

static void pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(set), &set), 0);
}

static void spin(unsigned n)
{
	volatile unsigned k;

	for (k = 0; k < n; k++)
		;
}

static void *reader(void *arg)
{
	int it;

	(void)arg;
	if (L.pin)
		pin_to(1);
	atomic_store(&L.slot, ipm_thread_register());
	for (it = 1; it <= ITERS; it++) {
		while (atomic_load_explicit(&L.go, memory_order_acquire) != it)
			if (atomic_load(&L.stop))
				return NULL;
		spin(((unsigned)it * 7919u >> 3) % 64);
		L.y = 1;
		__asm__ __volatile__("" ::: "memory");
		L.r2 = L.x;
		/* Each side resets the variable the other one stores to, so
		 * that the store needs the line from the other CPU and waits
		 * in the store buffer while the load hits: the outcome the
		 * barrier forbids is then frequent without it. */
		L.x = 0;
		atomic_store_explicit(&L.done, it, memory_order_release);
	}
	return NULL;
}

static int none(const ipm_mask_t *m)
{
	(void)m;
	__asm__ __volatile__("" ::: "memory");
	return 0;
}

/* Runs the litmus test (ITERS iterations, or fewer at the deadline; *@ran
 * says how many, at least MIN_ITERS); returns how often the forbidden
 * outcome showed. */
static int run_litmus(int (*barrier)(const ipm_mask_t *), int pin, int *ran)
{
	pthread_t th;
	ipm_mask_t *m = ipm_mask_alloc();
	int it, forbidden = 0, r1, err = 0;
	double end = now_s() + LITMUS_SECONDS;

	memset(&L, 0, sizeof(L));
	atomic_store(&L.slot, -1);
	L.pin = pin;
	if (pin)
		pin_to(0);
	ck_assert_int_eq(pthread_create(&th, NULL, reader, NULL), 0);
	while (atomic_load(&L.slot) < 0)
		sched_yield();
	ipm_mask_set(m, atomic_load(&L.slot));
	for (it = 1; it <= ITERS; it++) {
		L.y = 0;
		atomic_store_explicit(&L.go, it, memory_order_release);
		/* Vary the writer's start against the reader's (the reader
		 * sees "go" a cache miss later), so that both parts overlap
		 * in some iterations. */
		spin(((unsigned)it * 2654435761u >> 24) % 200);
		L.x = 1;
		/* No ck_assert here: Check's mark point is a write(2), itself
		 * a full barrier that would hide the reordering. */
		err |= barrier(m);
		r1 = L.y;
		while (atomic_load_explicit(&L.done, memory_order_acquire) != it)
			;
		if (r1 == 0 && L.r2 == 0)
			forbidden++;
		if ((it & 1023) == 0 && now_s() > end)
			break;
	}
	*ran = it > ITERS ? ITERS : it;
	atomic_store(&L.stop, 1);	/* the reader waits for a "go" that will not come */
	pthread_join(th, NULL);
	ipm_mask_free(m);
	ck_assert_int_eq(err, 0);
	if (*ran < ITERS)
		fprintf(stderr, "litmus: deadline after %d of %d iterations\n", *ran, ITERS);
	ck_assert_int_ge(*ran, MIN_ITERS);
	return forbidden;
}

static void need_two_cpus(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "needs 2 CPUs\n");
		exit(77);
	}
}

START_TEST(barrier_forbids_store_buffering)
{
	struct ipm_stats st;
	int ran;

	need_two_cpus();
	ck_assert_int_eq(ipm_init(NULL), 0);
	ck_assert_int_eq(run_litmus(ipm_barrier_mask, 0, &ran), 0);
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	if (ipm_features() & IPM_FEAT_MEMBARRIER)
		ck_assert_uint_ge(st.membarriers, (unsigned)ran);
	ipm_fini();
}
END_TEST

START_TEST(barrier_pinned_target_forbids_store_buffering)
{
	struct ipm_stats st;
	int ran;

	need_two_cpus();
	ck_assert_int_eq(ipm_init(NULL), 0);
	ck_assert_int_eq(run_litmus(ipm_barrier_mask, 1, &ran), 0);
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	if (ipm_features() & IPM_FEAT_MEMBARRIER_CPU) {
		ck_assert_uint_ge(st.membarriers, (unsigned)ran);	/* per-CPU calls */
		ck_assert_uint_eq(st.signals_sent, 0);
	} else {
		ck_assert_uint_eq(st.membarriers, 0);		/* the fallback */
		ck_assert_uint_ge(st.signals_sent, (unsigned)ran / 2);
	}
	ipm_fini();
}
END_TEST

START_TEST(signal_barrier_forbids_store_buffering)
{
	struct ipm_config c = { .flags = IPM_CFG_NO_MEMBARRIER };
	struct ipm_stats st;
	int ran;

	need_two_cpus();
	ck_assert_int_eq(ipm_init(&c), 0);
	ck_assert_uint_eq(ipm_features() & IPM_FEAT_MEMBARRIER, 0);
	ck_assert_int_eq(run_litmus(ipm_barrier_mask, 0, &ran), 0);
	ck_assert_int_eq(ipm_stats_get(&st), 0);
	ck_assert_uint_eq(st.membarriers, 0);
	ck_assert_uint_ge(st.signals_sent, (unsigned)ran / 2);	/* some coalesce */
	ipm_fini();
}
END_TEST

START_TEST(litmus_can_fail_without_the_barrier)
{
	int forbidden, ran;

	need_two_cpus();
	ck_assert_int_eq(ipm_init(NULL), 0);
	forbidden = run_litmus(none, 1, &ran);
	fprintf(stderr, "without a barrier: %d forbidden outcomes in %d\n", forbidden, ran);
#if defined(__x86_64__) || defined(__i386__)
	ck_assert_int_gt(forbidden, 0);
#endif
	ipm_fini();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("barrier");
	TCase *tc = tcase_create("litmus");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, barrier_forbids_store_buffering);
	tcase_add_test(tc, barrier_pinned_target_forbids_store_buffering);
	tcase_add_test(tc, signal_barrier_forbids_store_buffering);
	tcase_add_test(tc, litmus_can_fail_without_the_barrier);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
