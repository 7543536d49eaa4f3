/* SPDX-License-Identifier: MIT */
/*
 * test_interrupts.c - the library's per-thread `interrupts` agree with the
 * kernel's: the RES and CAL rows of /proc/interrupts for the CPU a target
 * is pinned to, within noise.  And a cond-false pinned thread's CPU sees
 * no more interrupts than an idle baseline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

#define N 2000

static void nop(int slot, void *info)
{
	(void)slot;
	(void)info;
}

static void need_cpus(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || irq_count(1) < 0) {
		fprintf(stderr, "needs 2 CPUs and /proc/interrupts RES/CAL rows\n");
		exit(77);
	}
}

static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(set), &set), 0);
}

START_TEST(library_interrupts_match_proc_interrupts)
{
	struct workers ws;
	struct ipm_thread_stats t0, t1;
	long long irq0, irq1, kernel;
	uint64_t lib;
	int i, slot;

	need_cpus();
	pin_self(0);
	workers_start(&ws, 2, W_SPIN_HARD, true);	/* CPU 0 and CPU 1 */
	slot = ws.w[1].cpu == 1 ? ws.w[1].slot : ws.w[0].slot;
	/* The CPU-0 worker is not needed: it would compete with us. */
	ck_assert_int_eq(ipm_thread_stats_get(slot, &t0), 0);
	irq0 = irq_count(1);
	for (i = 0; i < N; i++)
		ck_assert_int_eq(ipm_on_thread(slot, nop, NULL, IPM_WAIT), 1);
	irq1 = irq_count(1);
	ck_assert_int_eq(ipm_thread_stats_get(slot, &t1), 0);
	lib = t1.interrupts - t0.interrupts;
	kernel = irq1 - irq0;
	fprintf(stderr, "CPU1: library interrupts %llu, RES+CAL %lld, over %d calls\n",
		(unsigned long long)lib, kernel, N);
	ck_assert_uint_eq(lib, N);	/* one signal per waited call */
	/* A signal to a thread running on another CPU is one reschedule
	 * IPI; allow 10% + 50 for timer-driven and unrelated ones. */
	ck_assert_int_ge(kernel, (long long)lib * 9 / 10);
	ck_assert_int_le(kernel, (long long)lib * 11 / 10 + 50);
	workers_stop(&ws);
}
END_TEST

static bool never(int slot, void *info)
{
	(void)slot;
	(void)info;
	return false;
}

START_TEST(cond_false_cpu_sees_no_extra_interrupts)
{
	struct workers ws;
	long long base0, base1, irq0, irq1;
	double t;
	int i;

	need_cpus();
	pin_self(0);
	workers_start(&ws, 2, W_SPIN_HARD, true);
	/* Baseline: the same time, nothing sent. */
	base0 = irq_count(1);
	t = now_s();
	while (now_s() - t < 0.2)
		sched_yield();
	base1 = irq_count(1);
	irq0 = irq_count(1);
	t = now_s();
	for (i = 0; now_s() - t < 0.2; i++)
		ck_assert_int_eq(ipm_on_each_thread_cond(never, nop, NULL, IPM_WAIT), 0);
	irq1 = irq_count(1);
	fprintf(stderr, "CPU1: %lld interrupts idle, %lld during %d cond-false calls\n",
		base1 - base0, irq1 - irq0, i);
	ck_assert_int_gt(i, 100);
	ck_assert_int_le(irq1 - irq0, (base1 - base0) * 2 + 20);
	workers_stop(&ws);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("interrupts");
	TCase *tc = tcase_create("proc");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, library_interrupts_match_proc_interrupts);
	tcase_add_test(tc, cond_false_cpu_sees_no_extra_interrupts);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
