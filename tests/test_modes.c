/* SPDX-License-Identifier: MIT */
/*
 * test_modes.c - delivery without interruptions: polling threads, deadline
 * escalation, offline threads (remote and deferred runs), online/offline
 * churn against concurrent senders.
 */
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NSLOTS 1024

static atomic_uint runs[NSLOTS];
static atomic_int wrong_thread;
static pid_t slot_tid[NSLOTS];

static void on_own_thread(int slot, void *info)
{
	(void)info;
	if (slot_tid[slot] != test_gettid())
		atomic_store(&wrong_thread, 1);
	atomic_fetch_add(&runs[slot], 1);
}

static void anywhere(int slot, void *info)
{
	(void)info;
	atomic_fetch_add(&runs[slot], 1);
}

static void reset(struct workers *ws)
{
	int i;

	memset(runs, 0, sizeof(runs));
	atomic_store(&wrong_thread, 0);
	for (i = 0; i < ws->n; i++)
		slot_tid[ws->w[i].slot] = ws->w[i].tid;
}

static struct ipm_thread_stats tstats(int slot)
{
	struct ipm_thread_stats ts;

	ck_assert_int_eq(ipm_thread_stats_get(slot, &ts), 0);
	return ts;
}

static struct ipm_stats pstats(void)
{
	struct ipm_stats st;

	ck_assert_int_eq(ipm_stats_get(&st), 0);
	return st;
}

START_TEST(pollers_get_calls_without_signals)
{
	struct ipm_config cfg = {
		.poll_deadline_us = (under_valgrind() ? 60 : 5) * 1000 * 1000,
	};
	struct workers ws;
	struct ipm_stats st0, st1;
	ipm_mask_t *m;
	int i, k;

	/* Two cores are shared by the pollers and the sender: a poller can be
	 * descheduled for a few ms, which the default 1 ms deadline would
	 * (rightly) escalate.  "Keeps polling" is judged on a 5 s scale (60 s
	 * under valgrind, which runs one thread at a time). */
	ipm_fini();
	ck_assert_int_eq(ipm_init(&cfg), 0);
	m = ipm_mask_alloc();
	workers_start(&ws, 3, W_POLL, false);
	reset(&ws);
	st0 = pstats();
	ipm_mask_fill(m);
	for (k = 0; k < 100; k++)
		ck_assert_int_eq(ipm_on_each_thread_mask(m, on_own_thread, NULL,
							 k % 2 ? IPM_WAIT : 0), 3);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, on_own_thread, NULL, IPM_WAIT), 3);
	st1 = pstats();
	for (i = 0; i < ws.n; i++) {
		struct ipm_thread_stats ts = tstats(ws.w[i].slot);

		ck_assert_uint_eq(atomic_load(&runs[ws.w[i].slot]), 101);
		ck_assert_uint_eq(ts.interrupts, 0);
		ck_assert_uint_eq(ts.polled, 101);
	}
	ck_assert_uint_eq(st1.signals_sent - st0.signals_sent, 0);
	ck_assert_uint_eq(st1.escalations - st0.escalations, 0);
	ck_assert_uint_eq(st1.polled - st0.polled, 303);
	ck_assert_uint_eq(st1.deliveries - st0.deliveries, 303);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

START_TEST(stuck_poller_gets_its_call_by_escalation)
{
	struct workers ws;
	struct ipm_stats st0, st1;
	int s;

	workers_start(&ws, 1, W_POLL, false);
	reset(&ws);
	s = ws.w[0].slot;
	worker_pause(&ws.w[0]);	/* stops polling, keeps running */
	st0 = pstats();
	ck_assert_int_eq(ipm_on_thread(s, on_own_thread, NULL, IPM_WAIT), 1);
	st1 = pstats();
	ck_assert_uint_eq(atomic_load(&runs[s]), 1);
	ck_assert_uint_eq(st1.escalations - st0.escalations, 1);
	ck_assert_uint_eq(tstats(s).interrupts, 1);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	workers_stop(&ws);
}
END_TEST

/* Nobody waits: the watchdog escalates, once for the whole batch. */
START_TEST(stuck_poller_gets_fire_and_forget_work_by_watchdog)
{
	struct workers ws;
	struct ipm_stats st0, st1;
	double end;
	int s, i;

	workers_start(&ws, 1, W_POLL, false);
	reset(&ws);
	s = ws.w[0].slot;
	worker_pause(&ws.w[0]);
	st0 = pstats();
	for (i = 0; i < 5; i++)
		ck_assert_int_eq(ipm_on_thread(s, on_own_thread, NULL, 0), 1);
	end = now_s() + 10;
	while (atomic_load(&runs[s]) < 5 && now_s() < end)
		sched_yield();
	st1 = pstats();
	ck_assert_uint_eq(atomic_load(&runs[s]), 5);
	/* One signal per batch: the five sends normally make one batch; a
	 * slow machine (valgrind) may see the watchdog act in between. */
	ck_assert_uint_ge(st1.escalations - st0.escalations, 1);
	ck_assert_uint_le(st1.escalations - st0.escalations, 5);
	ck_assert_uint_eq(tstats(s).interrupts, st1.escalations - st0.escalations);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	worker_resume(&ws.w[0]);
	workers_stop(&ws);
}
END_TEST

START_TEST(offline_remote_runs_on_caller_without_interrupts)
{
	struct workers ws;
	struct ipm_stats st0, st1;
	ipm_mask_t *m = ipm_mask_alloc();
	int i, n;

	workers_start(&ws, 4, W_BLOCK, false);
	reset(&ws);
	ipm_mask_fill(m);
	st0 = pstats();
	for (i = 0; i < 50; i++) {
		n = ipm_on_each_thread_mask(m, anywhere, NULL, IPM_WAIT | IPM_REMOTE);
		ck_assert_int_eq(n, 4);
	}
	st1 = pstats();
	for (i = 0; i < ws.n; i++) {
		struct ipm_thread_stats ts = tstats(ws.w[i].slot);

		ck_assert_uint_eq(atomic_load(&runs[ws.w[i].slot]), 50);
		ck_assert_uint_eq(ts.interrupts, 0);
		ck_assert_uint_eq(ts.remote_run, 50);
	}
	ck_assert_uint_eq(st1.signals_sent - st0.signals_sent, 0);
	ck_assert_uint_eq(st1.remote_run - st0.remote_run, 200);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

START_TEST(offline_deferred_runs_at_online_on_the_thread)
{
	struct workers ws;
	struct ipm_req *req;
	ipm_mask_t *m = ipm_mask_alloc();
	int s, i;

	workers_start(&ws, 1, W_BLOCK, false);
	reset(&ws);
	s = ws.w[0].slot;
	ipm_mask_set(m, s);
	for (i = 0; i < 5; i++)
		ck_assert_int_eq(ipm_on_each_thread_mask(m, on_own_thread, NULL, 0), 1);
	ck_assert_int_eq(ipm_call_async(&req, m, on_own_thread, NULL, 0), 1);
	/* Nobody runs it while the thread stays blocked. */
	ck_assert_int_eq(ipm_req_wait(req, 20 * 1000 * 1000), -ETIMEDOUT);
	ck_assert_uint_eq(atomic_load(&runs[s]), 0);
	ck_assert_uint_eq(tstats(s).interrupts, 0);
	worker_wake(&ws.w[0]);
	ck_assert_int_eq(ipm_req_wait(req, -1), 0);
	ipm_req_release(req);
	ck_assert_uint_eq(atomic_load(&runs[s]), 6);
	ck_assert_uint_eq(tstats(s).deferred, 6);
	ck_assert_uint_eq(tstats(s).interrupts, 0);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

START_TEST(remote_after_deferred_keeps_order_and_runs_both)
{
	struct workers ws;
	ipm_mask_t *m = ipm_mask_alloc();
	int s;

	workers_start(&ws, 1, W_BLOCK, false);
	reset(&ws);
	s = ws.w[0].slot;
	ipm_mask_set(m, s);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, on_own_thread, NULL, 0), 1);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, anywhere, NULL, IPM_REMOTE | IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&runs[s]), 1);	/* only the remote one */
	worker_wake(&ws.w[0]);
	/* The deferred one runs when the worker comes online. */
	{
		double end = now_s() + 10;

		while (atomic_load(&runs[s]) < 2 && now_s() < end)
			sched_yield();
	}
	ck_assert_uint_eq(atomic_load(&runs[s]), 2);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, anywhere, NULL, IPM_REMOTE | IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&runs[s]), 3);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

/*
 * Churn: a thread flips online/offline as fast as it can while senders
 * send with and without IPM_REMOTE.  Every request runs exactly once;
 * none runs on another thread while the target is online.
 */
static atomic_int churn_stop, churn_online, overlap;
static atomic_int churn_slot = -1;
static pid_t churn_tid;

static void *churn_thread(void *arg)
{
	(void)arg;
	churn_tid = test_gettid();
	atomic_store(&churn_slot, ipm_thread_register());
	/* churn_online may say "offline" early, never late: cleared before
	 * ipm_thread_offline() (from there on a sender may claim us and run
	 * our work), set after ipm_thread_online() has returned (it waits for
	 * a claimer to finish). */
	while (!atomic_load(&churn_stop)) {
		atomic_store(&churn_online, 0);
		ipm_thread_offline();
		sched_yield();
		ipm_thread_online();
		atomic_store(&churn_online, 1);
		ipm_poll();
	}
	return NULL;
}

static atomic_uint churn_runs;
static void churn_func(int slot, void *info)
{
	(void)slot;
	(void)info;
	/* On another thread, the target must be offline (claimed). */
	if (test_gettid() != churn_tid && atomic_load(&churn_online))
		atomic_store(&overlap, 1);
	atomic_fetch_add(&churn_runs, 1);
}

static void *churn_sender(void *arg)
{
	int i, s = atomic_load(&churn_slot);
	unsigned flags = (unsigned)(uintptr_t)arg;

	for (i = 0; i < 3000; i++)
		ck_assert_int_eq(ipm_on_thread(s, churn_func, NULL,
					       flags | (i % 4 == 0 ? IPM_WAIT : 0)), 1);
	return NULL;
}

START_TEST(online_offline_churn_against_senders)
{
	pthread_t t, s1, s2;
	struct ipm_stats st;

	ck_assert_int_eq(pthread_create(&t, NULL, churn_thread, NULL), 0);
	while (atomic_load(&churn_slot) < 0)
		sched_yield();
	ck_assert_int_eq(pthread_create(&s1, NULL, churn_sender, (void *)(uintptr_t)IPM_REMOTE), 0);
	ck_assert_int_eq(pthread_create(&s2, NULL, churn_sender, (void *)(uintptr_t)0), 0);
	pthread_join(s1, NULL);
	pthread_join(s2, NULL);
	/* Flush the fire-and-forget ones through the target. */
	ck_assert_int_eq(ipm_on_thread(atomic_load(&churn_slot), churn_func, NULL, IPM_WAIT), 1);
	ck_assert_uint_eq(atomic_load(&churn_runs), 6001);
	atomic_store(&churn_stop, 1);
	pthread_join(t, NULL);
	ck_assert_int_eq(atomic_load(&overlap), 0);
	ck_assert_int_eq(ipm_stats_get(&st), 0);
}
END_TEST

static void *send_to_slot(void *arg)
{
	int slot = (int)(intptr_t)arg;

	ck_assert_int_eq(ipm_on_thread(slot, anywhere, NULL, 0), 1);
	return NULL;
}

START_TEST(switching_to_signal_runs_what_polling_left)
{
	/* Long deadline: the watchdog must not escalate us meanwhile. */
	struct ipm_config cfg = { .poll_deadline_us = 10 * 1000 * 1000 };
	pthread_t th;
	int s, i;

	ipm_fini();
	ck_assert_int_eq(ipm_init(&cfg), 0);
	s = ipm_thread_register();
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(ipm_thread_set_mode(IPM_MODE_POLL), 0);
	memset(runs, 0, sizeof(runs));
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(pthread_create(&th, NULL, send_to_slot, (void *)(intptr_t)s), 0);
		pthread_join(th, NULL);
	}
	/* Polling, not polled yet: nothing ran, nothing interrupted us. */
	ck_assert_uint_eq(atomic_load(&runs[s]), 0);
	ck_assert_uint_eq(tstats(s).interrupts, 0);
	ck_assert_int_eq(ipm_thread_set_mode(IPM_MODE_SIGNAL), 0);
	ck_assert_uint_eq(atomic_load(&runs[s]), 3);
	ck_assert_uint_eq(tstats(s).interrupts, 0);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
}
END_TEST

/*
 * IPM_CFG_NO_SIGNAL_ISOLATED: a thread confined to isolated CPUs is never
 * signalled; a late poll is counted as an escalation but not signalled.
 * The machine has no isolated CPU: the test marks CPU 1 isolated in the
 * library's table before the worker registers there.
 */
START_TEST(isolated_threads_are_never_signalled)
{
	struct ipm_config cfg = { .flags = IPM_CFG_NO_SIGNAL_ISOLATED, .poll_deadline_us = 1000 };
	struct workers ws;
	struct ipm_stats st0, st1;
	struct ipm_req *req;
	ipm_mask_t *m;
	int s;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	ipm_fini();
	ck_assert_int_eq(ipm_init(&cfg), 0);
	CPU_SET(1, &_ipm_lib.isolated_cpus);
	m = ipm_mask_alloc();
	workers_start_on(&ws, 1, W_POLL, 1);
	reset(&ws);
	s = ws.w[0].slot;
	ipm_mask_set(m, s);
	worker_pause(&ws.w[0]);
	st0 = pstats();
	ck_assert_int_eq(ipm_call_async(&req, m, on_own_thread, NULL, 0), 1);
	ck_assert_int_eq(ipm_req_wait(req, 30 * 1000 * 1000), -ETIMEDOUT);
	st1 = pstats();
	ck_assert_uint_ge(st1.escalations - st0.escalations, 1);	/* reported */
	ck_assert_uint_eq(st1.signals_sent - st0.signals_sent, 0);	/* not signalled */
	ck_assert_uint_eq(tstats(s).interrupts, 0);
	worker_resume(&ws.w[0]);
	ck_assert_int_eq(ipm_req_wait(req, -1), 0);
	ipm_req_release(req);
	ck_assert_uint_eq(atomic_load(&runs[s]), 1);
	ck_assert_int_eq(atomic_load(&wrong_thread), 0);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("modes");
	TCase *tc = tcase_create("modes");

	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, pollers_get_calls_without_signals);
	tcase_add_test(tc, stuck_poller_gets_its_call_by_escalation);
	tcase_add_test(tc, stuck_poller_gets_fire_and_forget_work_by_watchdog);
	tcase_add_test(tc, offline_remote_runs_on_caller_without_interrupts);
	tcase_add_test(tc, offline_deferred_runs_at_online_on_the_thread);
	tcase_add_test(tc, remote_after_deferred_keeps_order_and_runs_both);
	tcase_add_test(tc, online_offline_churn_against_senders);
	tcase_add_test(tc, switching_to_signal_runs_what_polling_left);
	tcase_add_test(tc, isolated_threads_are_never_signalled);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
