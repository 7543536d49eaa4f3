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
#include "proc_interrupts.h"

#define N 2000

static char noisy_marker[64];

static void nop(int slot, void *info)
{
	(void)slot;
	(void)info;
}

static void need_cpus(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || procirq_now(PROCIRQ_RES_CAL, 1) < 0) {
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

/*
 * Up to five tries.  Each try measures CPU 1 twice for the same time: once
 * while nothing is sent (the machine's own noise: timers, other processes)
 * and once while N waited calls go to the pinned target.  The calls must
 * account for the difference.  When the noise alone exceeds the tolerance
 * in every try, the machine is too busy to tell: the test skips (77).
 */
START_TEST(library_interrupts_match_proc_interrupts)
{
	struct workers ws;
	struct ipm_thread_stats t0, t1;
	long long noise, kernel, tol = N / 10 + 50, min_noise = -1;
	uint64_t lib;
	double t, dt;
	int i, slot, try;

	need_cpus();
	pin_self(0);
	workers_start_on(&ws, 1, W_SPIN_HARD, 1);
	slot = ws.w[0].slot;
	for (try = 0; try < 5; try++) {
		ck_assert_int_eq(ipm_thread_stats_get(slot, &t0), 0);
		kernel = procirq_now(PROCIRQ_RES_CAL, 1);
		t = now_s();
		for (i = 0; i < N; i++)
			ck_assert_int_eq(ipm_on_thread(slot, nop, NULL, IPM_WAIT), 1);
		dt = now_s() - t;
		kernel = procirq_now(PROCIRQ_RES_CAL, 1) - kernel;
		ck_assert_int_eq(ipm_thread_stats_get(slot, &t1), 0);
		lib = t1.interrupts - t0.interrupts;
		ck_assert_uint_eq(lib, N);	/* one signal per waited call */

		noise = procirq_now(PROCIRQ_RES_CAL, 1);
		t = now_s();
		while (now_s() - t < dt)
			;
		noise = procirq_now(PROCIRQ_RES_CAL, 1) - noise;
		if (min_noise < 0 || noise < min_noise)
			min_noise = noise;
		fprintf(stderr, "CPU1: library %llu, RES+CAL %lld during the calls, %lld in as long without\n",
			(unsigned long long)lib, kernel, noise);
		/* A signal to a thread running on another CPU is one
		 * reschedule IPI. */
		if (llabs(kernel - noise - (long long)lib) <= tol)
			break;
	}
	if (try == 5 && min_noise > tol) {
		/* Tell main() (we run in a forked child) to report a skip. */
		FILE *f = fopen(noisy_marker, "we");

		fprintf(stderr, "machine too noisy to compare (%lld interrupts of noise)\n", min_noise);
		if (f)
			fclose(f);
		workers_stop(&ws);
		return;
	}
	ck_assert_int_lt(try, 5);
	workers_stop(&ws);
}
END_TEST

static bool never(int slot, void *info)
{
	(void)slot;
	(void)info;
	return false;
}

/*
 * Pairs of 100 ms rounds: nothing sent, then cond-false calls as fast as
 * possible.  An interruption per call would be thousands per round; noise
 * from other processes is tens.  Up to ten pairs: one quiet pair shows it.
 */
START_TEST(cond_false_cpu_sees_no_extra_interrupts)
{
	struct workers ws;
	long long idle, busy, a;
	double t;
	int pair, calls = 0, quiet_pairs = 0;

	need_cpus();
	pin_self(0);
	workers_start_on(&ws, 1, W_SPIN_HARD, 1);
	for (pair = 0; pair < 10; pair++) {
		a = procirq_now(PROCIRQ_RES_CAL, 1);
		t = now_s();
		while (now_s() - t < 0.1)
			;
		idle = procirq_now(PROCIRQ_RES_CAL, 1) - a;
		a = procirq_now(PROCIRQ_RES_CAL, 1);
		t = now_s();
		calls = 0;
		while (now_s() - t < 0.1) {
			ck_assert_int_eq(ipm_on_each_thread_cond(never, nop, NULL, IPM_WAIT), 0);
			calls++;
		}
		busy = procirq_now(PROCIRQ_RES_CAL, 1) - a;
		fprintf(stderr, "CPU1, 100 ms: %lld interrupts idle, %lld during %d cond-false calls\n",
			idle, busy, calls);
		ck_assert_int_gt(calls, 600);
		if (idle <= 20)
			quiet_pairs++;
		if (busy <= idle * 2 + 20)
			break;
	}
	if (pair == 10 && quiet_pairs == 0) {
		FILE *f = fopen(noisy_marker, "we");

		fprintf(stderr, "machine too noisy to compare\n");
		if (f)
			fclose(f);
		workers_stop(&ws);
		return;
	}
	ck_assert_int_lt(pair, 10);
	workers_stop(&ws);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("interrupts");
	TCase *tc = tcase_create("proc");

	int failed, fd;

	snprintf(noisy_marker, sizeof(noisy_marker), "/tmp/ipm-noisy-XXXXXX");
	fd = mkstemp(noisy_marker);
	if (fd >= 0) {
		close(fd);
		unlink(noisy_marker);
	}
	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, library_interrupts_match_proc_interrupts);
	tcase_add_test(tc, cond_false_cpu_sees_no_extra_interrupts);
	suite_add_tcase(s, tc);
	failed = run_suite(s);
	if (!failed && access(noisy_marker, F_OK) == 0) {
		unlink(noisy_marker);
		return 77;	/* skipped: the machine was too busy to measure */
	}
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
