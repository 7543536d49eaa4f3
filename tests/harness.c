/* SPDX-License-Identifier: MIT */
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

pid_t test_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

void futex_wait_u(atomic_uint *p, unsigned v)
{
	syscall(SYS_futex, (unsigned *)p, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

void futex_wake_u(atomic_uint *p)
{
	syscall(SYS_futex, (unsigned *)p, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	w->tid = test_gettid();
	w->slot = ipm_thread_register();
	if (w->slot < 0) {
		fprintf(stderr, "register: %d\n", w->slot);
		abort();
	}
	if (w->kind == W_POLL)
		ipm_thread_set_mode(IPM_MODE_POLL);
	if (w->kind == W_BLOCK)
		ipm_thread_offline();
	atomic_store(&w->ready, 1);
	while (!atomic_load(&w->stop)) {
		switch (w->kind) {
		case W_POLL:
			if (atomic_load(&w->pause_poll)) {
				atomic_store(&w->paused, 1);
			} else {
				atomic_store(&w->paused, 0);
				ipm_poll();
			}
			spin_relax();
			break;
		case W_BLOCK: {
			unsigned g = atomic_load(&w->block_gate);

			if (g == 0) {
				futex_wait_u(&w->block_gate, 0);
				break;
			}
			atomic_store(&w->block_gate, 0);
			ipm_thread_online();
			ipm_thread_offline();
			break;
		}
		case W_SPIN:
			sched_yield();
			break;
		case W_SPIN_HARD:
			spin_relax();
			break;
		}
		atomic_fetch_add(&w->loops, 1);
	}
	if (w->kind == W_BLOCK)
		ipm_thread_online();
	/* Exiting unregisters (and runs what is pending). */
	return NULL;
}

static void start(struct workers *ws, int n, enum worker_kind kind, bool pin, int cpu)
{
	int i, ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);

	ck_assert_int_le(n, MAX_WORKERS);
	memset(ws, 0, sizeof(*ws));
	ws->n = n;
	for (i = 0; i < n; i++) {
		struct worker *w = &ws->w[i];

		w->kind = kind;
		w->cpu = cpu >= 0 ? cpu : pin ? i % ncpu : -1;
		ck_assert_int_eq(pthread_create(&w->th, NULL, worker_main, w), 0);
	}
	for (i = 0; i < n; i++)
		ck_assert_msg(wait_int(&ws->w[i].ready, 1, 10.0), "worker %d never ready", i);
}

void workers_start(struct workers *ws, int n, enum worker_kind kind, bool pin)
{
	start(ws, n, kind, pin, -1);
}

void workers_start_on(struct workers *ws, int n, enum worker_kind kind, int cpu)
{
	start(ws, n, kind, true, cpu);
}

void workers_stop(struct workers *ws)
{
	int i;

	for (i = 0; i < ws->n; i++) {
		atomic_store(&ws->w[i].stop, 1);
		atomic_store(&ws->w[i].block_gate, 1);
		futex_wake_u(&ws->w[i].block_gate);
	}
	for (i = 0; i < ws->n; i++)
		pthread_join(ws->w[i].th, NULL);
	ws->n = 0;
}

struct worker *worker_by_slot(struct workers *ws, int slot)
{
	int i;

	for (i = 0; i < ws->n; i++)
		if (ws->w[i].slot == slot)
			return &ws->w[i];
	return NULL;
}

void worker_wake(struct worker *w)
{
	atomic_store(&w->block_gate, 1);
	futex_wake_u(&w->block_gate);
}

void worker_pause(struct worker *w)
{
	atomic_store(&w->pause_poll, 1);
	ck_assert_msg(wait_int(&w->paused, 1, 10.0), "poller did not pause");
}

void worker_resume(struct worker *w)
{
	atomic_store(&w->pause_poll, 0);
}

bool under_valgrind(void)
{
	static atomic_int cached = -1;

	if (cached < 0)
		cached = getenv("IPM_TEST_VALGRIND") != NULL;
	return cached;
}

void spin_relax(void)
{
	if (under_valgrind())
		sched_yield();
}

unsigned vg_scale(unsigned n)
{
	if (!under_valgrind())
		return n;
	return n / 10 ? n / 10 : 1;
}

bool wait_ge(atomic_ulong *p, unsigned long want, double seconds)
{
	double end = now_s() + seconds;

	while (atomic_load(p) < want) {
		if (now_s() > end)
			return false;
		sched_yield();
	}
	return true;
}

int wait_child(pid_t pid, double seconds)
{
	double end = now_s() + seconds;
	struct timespec ms = { 0, 1000 * 1000 };
	int status = 0;
	pid_t r;

	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < end)
		nanosleep(&ms, NULL);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		ck_abort_msg("child %d still running after %.0f s: killed", (int)pid, seconds);
	}
	ck_assert_int_eq(r, pid);
	return status;
}

bool wait_int(atomic_int *p, int want, double seconds)
{
	double end = now_s() + seconds;

	while (atomic_load(p) != want) {
		if (now_s() > end)
			return false;
		sched_yield();
	}
	return true;
}

void fixture_init(void)
{
	ck_assert_int_eq(ipm_init(NULL), 0);
}

void fixture_fini(void)
{
	ipm_fini();
}

int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
