/* SPDX-License-Identifier: MIT */
/*
 * hello.c - the smallest tour of libipimask.
 *
 * Three worker threads: one busy in IPM_MODE_SIGNAL, one busy-polling
 * (IPM_MODE_POLL, like a DPDK lcore) and one blocked (offline).  The main
 * thread runs a function on all three and shows who was interrupted: only
 * the signal-mode thread.  Exits non-zero if that does not hold.
 *
 *   cc hello.c $(pkg-config --cflags --libs ipimask) -o hello && ./hello
 */
#include <ipimask.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_int stop, ready, ran;
static atomic_int offline_gate;
static int slots[3];	/* signal, polling, blocked */

static void hello(int slot, void *info)
{
	(void)info;
	(void)slot;
	atomic_fetch_add(&ran, 1);	/* async-signal-safe */
}

static void *signal_worker(void *arg)
{
	(void)arg;
	slots[0] = ipm_thread_register();
	atomic_fetch_add(&ready, 1);
	while (!atomic_load(&stop))
		;	/* busy: work arrives by signal */
	return NULL;
}

static void *polling_worker(void *arg)
{
	(void)arg;
	slots[1] = ipm_thread_register();
	ipm_thread_set_mode(IPM_MODE_POLL);
	atomic_fetch_add(&ready, 1);
	while (!atomic_load(&stop))
		ipm_poll();	/* one load when nothing is pending */
	return NULL;
}

static void *blocked_worker(void *arg)
{
	(void)arg;
	slots[2] = ipm_thread_register();
	ipm_thread_offline();	/* about to block: never interrupt me */
	atomic_fetch_add(&ready, 1);
	while (!atomic_load(&offline_gate))
		usleep(1000);	/* stands for a blocking read() */
	ipm_thread_online();
	return NULL;
}

int main(void)
{
	static const char *const names[] = { "signal", "polling", "blocked" };
	void *(*const mains[])(void *) = { signal_worker, polling_worker, blocked_worker };
	struct ipm_thread_stats ts;
	pthread_t th[3];
	ipm_mask_t *all;
	int i, n, failed = 0;

	/* A poller that misses this deadline is signalled; generous here so
	 * that the demo holds on a loaded machine (or under valgrind). */
	struct ipm_config cfg = { .poll_deadline_us = 200000 };

	if (ipm_init(&cfg)) {
		fprintf(stderr, "ipm_init failed\n");
		return 1;
	}
	for (i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, mains[i], NULL);
	while (atomic_load(&ready) < 3)
		sched_yield();

	all = ipm_mask_alloc();
	ipm_mask_fill(all);
	/* IPM_REMOTE: the blocked thread's share runs here, on its behalf. */
	n = ipm_on_each_thread_mask(all, hello, NULL, IPM_WAIT | IPM_REMOTE);
	printf("delivered to %d threads, %d ran\n", n, atomic_load(&ran));
	failed |= n != 3 || atomic_load(&ran) != 3;

	for (i = 0; i < 3; i++) {
		ipm_thread_stats_get(slots[i], &ts);
		printf("%-8s thread (slot %d): interrupts %llu, polled %llu, run for it remotely %llu\n",
		       names[i], slots[i], (unsigned long long)ts.interrupts,
		       (unsigned long long)ts.polled, (unsigned long long)ts.remote_run);
		failed |= (i == 0) != (ts.interrupts == 1);
	}
	printf("%s: only the signal thread was interrupted\n", failed ? "FAIL" : "ok");

	atomic_store(&stop, 1);
	atomic_store(&offline_gate, 1);
	for (i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ipm_mask_free(all);
	ipm_fini();
	return failed;
}
