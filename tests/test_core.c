/* SPDX-License-Identifier: MIT */
/*
 * test_core.c - on_each_thread_mask/cond, coalescing, concurrency, exit,
 * self, async requests, the allocation-failure fallback.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NSLOTS 1024

static atomic_uint runs[NSLOTS];
static atomic_int wrong_thread;
static pid_t slot_tid[NSLOTS];

static void record(int slot, void *info)
{
	(void)info;
	if (slot_tid[slot] && slot_tid[slot] != test_gettid())
		atomic_store(&wrong_thread, 1);
	if (ipm_self() != slot && ipm_self() >= 0)
		atomic_store(&wrong_thread, 1);
	atomic_fetch_add(&runs[slot], 1);
}

static void reset_runs(struct workers *ws)
{
	int i;

	memset(runs, 0, sizeof(runs));
	memset(slot_tid, 0, sizeof(slot_tid));
	atomic_store(&wrong_thread, 0);
	for (i = 0; ws && i < ws->n; i++)
		slot_tid[ws->w[i].slot] = ws->w[i].tid;
}

static uint64_t interrupts_of(int slot)
{
	struct ipm_thread_stats ts;

	ck_assert_int_eq(ipm_thread_stats_get(slot, &ts), 0);
	return ts.interrupts;
}

START_TEST(only_masked_threads_run)
{
	struct workers ws;
	uint64_t before[MAX_WORKERS];
	ipm_mask_t *m = ipm_mask_alloc();
	int i, n;

	workers_start(&ws, 8, W_SPIN, false);
	reset_runs(&ws);
	for (i = 0; i < ws.n; i++) {
		before[i] = interrupts_of(ws.w[i].slot);
		if (i % 2 == 0)
			ipm_mask_set(m, ws.w[i].slot);
	}
	n = ipm_on_each_thread_mask(m, record, NULL, IPM_WAIT);
	ck_assert_int_eq(n, 4);
	for (i = 0; i < ws.n; i++) {
		int s = ws.w[i].slot;

		ck_assert_uint_eq(atomic_load(&runs[s]), i % 2 == 0 ? 1 : 0);
		if (i % 2)
			ck_assert_uint_eq(interrupts_of(s), before[i]);
		else
			ck_assert_uint_gt(interrupts_of(s), before[i]);
	}
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

static bool even_slot(int slot, void *info)
{
	(void)info;
	return slot % 2 == 0;
}

START_TEST(cond_false_never_interrupted)
{
	struct workers ws;
	struct ipm_stats st0, st1;
	uint64_t before[MAX_WORKERS];
	int i, n, even = 0;

	workers_start(&ws, 8, W_SPIN, false);
	reset_runs(&ws);
	for (i = 0; i < ws.n; i++) {
		before[i] = interrupts_of(ws.w[i].slot);
		even += ws.w[i].slot % 2 == 0;
	}
	ck_assert_int_eq(ipm_stats_get(&st0), 0);
	n = ipm_on_each_thread_cond(even_slot, record, NULL, IPM_WAIT);
	ck_assert_int_eq(n, even);
	ck_assert_int_eq(ipm_stats_get(&st1), 0);
	ck_assert_uint_eq(st1.cond_skipped - st0.cond_skipped, (uint64_t)(ws.n - even));
	for (i = 0; i < ws.n; i++) {
		int s = ws.w[i].slot;

		if (s % 2) {
			ck_assert_uint_eq(atomic_load(&runs[s]), 0);
			ck_assert_uint_eq(interrupts_of(s), before[i]);
		} else {
			ck_assert_uint_eq(atomic_load(&runs[s]), 1);
		}
	}
	/* The mask variant intersects. */
	{
		ipm_mask_t *m = ipm_mask_alloc();

		/* one even and one odd slot */
		ipm_mask_set(m, 0);
		ipm_mask_set(m, 1);
		n = ipm_on_each_thread_cond_mask(even_slot, record, NULL, IPM_WAIT, m);
		ck_assert_int_eq(n, 1);
		ipm_mask_free(m);
	}
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	workers_stop(&ws);
}
END_TEST

/* The first request holds the target's handler until released, so every
 * later request finds the target's list non-empty. */
static atomic_int gate_open;
static void hold_until_released(int slot, void *info)
{
	(void)info;
	while (!atomic_load(&gate_open))
		spin_relax();
	atomic_fetch_add(&runs[slot], 1);
}

START_TEST(burst_is_coalesced)
{
	enum { N = 2000 };
	struct workers ws;
	struct ipm_stats st0, st1;
	int i, s;
	uint64_t irq0;

	workers_start(&ws, 1, W_SPIN_HARD, false);
	s = ws.w[0].slot;
	reset_runs(&ws);
	atomic_store(&gate_open, 0);
	irq0 = interrupts_of(s);
	ck_assert_int_eq(ipm_stats_get(&st0), 0);
	ck_assert_int_eq(ipm_on_thread(s, hold_until_released, NULL, 0), 1);
	for (i = 1; i < N; i++)
		ck_assert_int_eq(ipm_on_thread(s, record, NULL, 0), 1);
	atomic_store(&gate_open, 1);
	ck_assert_int_eq(ipm_on_thread(s, record, NULL, IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&runs[s]), N + 1);
	ck_assert_int_eq(ipm_stats_get(&st1), 0);
	/* N+1 requests; a handful of signals. */
	ck_assert_uint_le(st1.signals_sent - st0.signals_sent, 4);
	ck_assert_uint_ge(st1.signals_coalesced - st0.signals_coalesced, N - 4);
	ck_assert_uint_le(interrupts_of(s) - irq0, 4);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	workers_stop(&ws);
}
END_TEST

struct sender_arg {
	struct workers *ws;
	unsigned seed;
	unsigned expect[NSLOTS];
	int calls;
};

static void *random_sender(void *arg)
{
	struct sender_arg *a = arg;
	ipm_mask_t *m = ipm_mask_alloc();
	struct ipm_req *pending[16];
	int npend = 0, c, i;

	for (c = 0; c < a->calls; c++) {
		unsigned bits = (unsigned)rand_r(&a->seed);
		int r;

		ipm_mask_zero(m);
		for (i = 0; i < a->ws->n; i++)
			if (bits & (1u << (i % 31))) {
				ipm_mask_set(m, a->ws->w[i].slot);
				a->expect[a->ws->w[i].slot]++;
			}
		switch (c % 3) {
		case 0:
			r = ipm_on_each_thread_mask(m, record, NULL, IPM_WAIT);
			break;
		case 1:
			r = ipm_on_each_thread_mask(m, record, NULL, 0);
			break;
		default:
			r = ipm_call_async(&pending[npend], m, record, NULL, 0);
			if (r >= 0 && ++npend == 16) {
				for (i = 0; i < npend; i++) {
					ck_assert_int_eq(ipm_req_wait(pending[i], -1), 0);
					ipm_req_release(pending[i]);
				}
				npend = 0;
			}
			break;
		}
		ck_assert_int_eq(r, (int)ipm_mask_weight(m));
	}
	for (i = 0; i < npend; i++) {
		ck_assert_int_eq(ipm_req_wait(pending[i], -1), 0);
		ipm_req_release(pending[i]);
	}
	ipm_mask_free(m);
	return NULL;
}

START_TEST(concurrent_overlapping_masks_run_exactly_once)
{
	enum { SENDERS = 3 };
	struct workers ws;
	static struct sender_arg args[SENDERS];
	pthread_t th[SENDERS];
	ipm_mask_t *all = ipm_mask_alloc();
	int i, k;

	workers_start(&ws, 6, W_SPIN, false);
	reset_runs(&ws);
	for (k = 0; k < SENDERS; k++) {
		memset(&args[k], 0, sizeof(args[k]));
		args[k].ws = &ws;
		args[k].seed = 12345u + (unsigned)k;
		args[k].calls = 400;
		ck_assert_int_eq(pthread_create(&th[k], NULL, random_sender, &args[k]), 0);
	}
	for (k = 0; k < SENDERS; k++)
		pthread_join(th[k], NULL);
	/* Fire-and-forget ones: one more waited call to each worker flushes
	 * them (per-sender FIFO is not needed: counts are). */
	ipm_mask_fill(all);
	for (i = 0; i < ws.n; i++) {
		unsigned want = 1;

		for (k = 0; k < SENDERS; k++)
			want += args[k].expect[ws.w[i].slot];
		ck_assert_int_eq(ipm_on_thread(ws.w[i].slot, record, NULL, IPM_WAIT), 1);
		/* Fire-and-forget requests from the senders were pushed before
		 * they returned; the target ran everything popped before ours
		 * or with it. */
		ck_assert_uint_eq(atomic_load(&runs[ws.w[i].slot]), want);
	}
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(all);
	workers_stop(&ws);
}
END_TEST

/* Two registered threads call each other synchronously: no deadlock. */
struct mutual {
	int mode;
	atomic_int slot_a, slot_b;
	atomic_int ready;
	int iters;
};

static void *mutual_main(void *arg)
{
	struct mutual *m = arg;
	int me = ipm_thread_register(), other, i;

	ck_assert_int_ge(me, 0);
	ipm_thread_set_mode(m->mode);
	if (atomic_fetch_add(&m->ready, 1) == 0)
		atomic_store(&m->slot_a, me);
	else
		atomic_store(&m->slot_b, me);
	while (atomic_load(&m->ready) < 2)
		ipm_poll();
	other = atomic_load(&m->slot_a) == me ? atomic_load(&m->slot_b) : atomic_load(&m->slot_a);
	for (i = 0; i < m->iters; i++)
		ck_assert_int_eq(ipm_on_thread(other, record, NULL, IPM_WAIT), 1);
	/* Keep serving until the other one is done too. */
	atomic_fetch_add(&m->ready, 1);
	while (atomic_load(&m->ready) < 4)
		ipm_poll();
	return NULL;
}

static void mutual_calls(int mode)
{
	struct mutual m = { .mode = mode, .iters = 2000 };
	pthread_t a, b;

	memset(runs, 0, sizeof(runs));
	memset(slot_tid, 0, sizeof(slot_tid));
	ck_assert_int_eq(pthread_create(&a, NULL, mutual_main, &m), 0);
	ck_assert_int_eq(pthread_create(&b, NULL, mutual_main, &m), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	ck_assert_uint_eq(atomic_load(&runs[atomic_load(&m.slot_a)]), 2000);
	ck_assert_uint_eq(atomic_load(&runs[atomic_load(&m.slot_b)]), 2000);
}

START_TEST(mutual_sync_calls_signal_mode)
{
	mutual_calls(IPM_MODE_SIGNAL);
}
END_TEST

START_TEST(mutual_sync_calls_poll_mode)
{
	mutual_calls(IPM_MODE_POLL);
}
END_TEST

START_TEST(exit_runs_pending_requests)
{
	/* A long poll deadline: the watchdog must not deliver them first. */
	struct ipm_config cfg = { .poll_deadline_us = 10 * 1000 * 1000 };
	struct workers ws;
	struct ipm_req *req[10];
	int i, s;

	ipm_fini();
	ck_assert_int_eq(ipm_init(&cfg), 0);
	workers_start(&ws, 1, W_POLL, false);
	s = ws.w[0].slot;
	reset_runs(&ws);
	worker_pause(&ws.w[0]);
	for (i = 0; i < 10; i++) {
		ipm_mask_t *m = ipm_mask_alloc();

		ipm_mask_set(m, s);
		ck_assert_int_eq(ipm_call_async(&req[i], m, record, NULL, 0), 1);
		ipm_mask_free(m);
	}
	ck_assert_int_eq(ipm_req_wait(req[0], 0), -ETIMEDOUT);
	ck_assert(!ipm_req_done(req[9]));
	/* Release some before completion: they must still run, and be freed. */
	for (i = 5; i < 10; i++)
		ipm_req_release(req[i]);
	workers_stop(&ws);	/* the thread exits with 10 requests pending */
	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(ipm_req_wait(req[i], 1000000000), 0);
		ipm_req_release(req[i]);
	}
	ck_assert_uint_eq(atomic_load(&runs[s]), 10);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ck_assert_int_eq(ipm_on_thread(s, record, NULL, IPM_WAIT), -ENOENT);
}
END_TEST

START_TEST(self_flag)
{
	struct workers ws;
	ipm_mask_t *m = ipm_mask_alloc();
	int me = ipm_thread_register();

	ck_assert_int_ge(me, 0);
	workers_start(&ws, 2, W_SPIN, false);
	reset_runs(&ws);
	slot_tid[me] = test_gettid();
	ipm_mask_fill(m);
	ck_assert_int_eq(ipm_mask_weight(m), 3);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, record, NULL, IPM_WAIT), 2);
	ck_assert_uint_eq(atomic_load(&runs[me]), 0);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, record, NULL, IPM_WAIT | IPM_SELF), 3);
	ck_assert_uint_eq(atomic_load(&runs[me]), 1);
	ck_assert_int_eq(ipm_on_thread(me, record, NULL, IPM_WAIT), 0);
	ck_assert_int_eq(ipm_on_thread(me, record, NULL, IPM_WAIT | IPM_SELF), 1);
	ck_assert_uint_eq(atomic_load(&runs[me]), 2);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
}
END_TEST

static bool only_first(int slot, void *info)
{
	return slot == *(int *)info;
}

static atomic_uint fallback_runs;
static void count_run(int slot, void *info)
{
	(void)slot;
	(void)info;
	atomic_fetch_add(&fallback_runs, 1);
}

START_TEST(cond_allocation_failure_falls_back_to_mask)
{
	enum { N = 80 };	/* more than fit in the caller's stack set */
	struct workers ws;
	struct ipm_stats st0, st1;
	int first, n;

	workers_start(&ws, N, W_BLOCK, false);
	first = ws.w[0].slot;
	ck_assert_int_eq(ipm_stats_get(&st0), 0);
	n = ipm_on_each_thread_cond(only_first, count_run, &first, IPM_WAIT | IPM_REMOTE);
	ck_assert_int_eq(n, 1);
	ck_assert_uint_eq(atomic_load(&fallback_runs), 1);

	_ipm_fault_alloc_countdown = 1;	/* the target set cannot be allocated */
	n = ipm_on_each_thread_cond(only_first, count_run, &first, IPM_WAIT | IPM_REMOTE);
	ck_assert_int_eq(n, N);
	ck_assert_uint_eq(atomic_load(&fallback_runs), 1 + N);
	ck_assert_int_eq(ipm_stats_get(&st1), 0);
	ck_assert_uint_eq(st1.mask_fallbacks - st0.mask_fallbacks, 1);
	ck_assert_uint_eq(st1.remote_run - st0.remote_run, N + 1);
	workers_stop(&ws);
}
END_TEST

/* Registration churn against broadcasting senders: every function runs on
 * the thread that owns the slot when it runs. */
static atomic_int churn_stop;
static void *churner(void *arg)
{
	(void)arg;
	while (!atomic_load(&churn_stop)) {
		int s = ipm_thread_register();
		int i;

		ck_assert_int_ge(s, 0);
		for (i = 0; i < 50; i++)
			sched_yield();
		ck_assert_int_eq(ipm_thread_unregister(), 0);
	}
	return NULL;
}

static void check_self(int slot, void *info)
{
	(void)info;
	if (ipm_self() != slot)
		atomic_store(&wrong_thread, 1);
}

START_TEST(registration_churn_never_misdelivers)
{
	pthread_t th[4];
	ipm_mask_t *m = ipm_mask_alloc();
	int i;

	atomic_store(&wrong_thread, 0);
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, churner, NULL), 0);
	for (i = 0; i < 3000; i++) {
		ipm_mask_fill(m);
		ck_assert_int_ge(ipm_on_each_thread_mask(m, check_self, NULL,
							 i % 2 ? IPM_WAIT : 0), 0);
	}
	atomic_store(&churn_stop, 1);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
}
END_TEST

static Suite *core_suite(void)
{
	Suite *s = suite_create("core");
	TCase *tc = tcase_create("delivery");

	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, only_masked_threads_run);
	tcase_add_test(tc, cond_false_never_interrupted);
	tcase_add_test(tc, burst_is_coalesced);
	tcase_add_test(tc, concurrent_overlapping_masks_run_exactly_once);
	tcase_add_test(tc, mutual_sync_calls_signal_mode);
	tcase_add_test(tc, mutual_sync_calls_poll_mode);
	tcase_add_test(tc, exit_runs_pending_requests);
	tcase_add_test(tc, self_flag);
	tcase_add_test(tc, cond_allocation_failure_falls_back_to_mask);
	tcase_add_test(tc, registration_churn_never_misdelivers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(core_suite());
}
