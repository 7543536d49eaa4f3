/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - a fork child sees only itself; the parent goes on.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static atomic_uint runs;
static void count(int slot, void *info)
{
	(void)slot;
	(void)info;
	atomic_fetch_add(&runs, 1);
}

static void *child_thread(void *arg)
{
	int *slot = arg;

	*slot = ipm_thread_register();
	/* The parent's slots were freed in the child: we get a low one. */
	ipm_thread_set_mode(IPM_MODE_POLL);
	while (atomic_load(&runs) == 0)
		ipm_poll();
	return NULL;
}

static int child(int parent_slot, ipm_mask_t *parents)
{
	ipm_mask_t *m = ipm_mask_alloc();
	pthread_t th;
	int slot = -1;

	ipm_mask_free(parents);
	/* Only the forking thread survives, registered at its old slot. */
	if (ipm_self() != parent_slot)
		return 10;
	ipm_mask_fill(m);
	if (ipm_mask_weight(m) != 1 || !ipm_mask_test(m, parent_slot))
		return 11;
	if (ipm_on_each_thread_mask(m, count, NULL, IPM_WAIT) != 0)
		return 12;
	/* The library keeps working in the child. */
	if (pthread_create(&th, NULL, child_thread, &slot))
		return 13;
	while (ipm_mask_weight(m) < 2) {
		ipm_mask_fill(m);
		sched_yield();
	}
	if (ipm_on_each_thread_mask(m, count, NULL, IPM_WAIT) != 1)
		return 14;
	pthread_join(th, NULL);
	if (slot < 0 || slot == parent_slot)
		return 15;
	if (ipm_thread_unregister() != 0)
		return 16;
	ipm_mask_free(m);
	ipm_fini();
	return 0;
}

START_TEST(fork_child_sees_only_itself)
{
	struct workers ws;
	ipm_mask_t *m = ipm_mask_alloc();
	int me = ipm_thread_register(), status;
	pid_t pid;

	ck_assert_int_ge(me, 0);
	workers_start(&ws, 4, W_SPIN, false);
	/* Leave work pending for a parked poller across the fork. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(child(me, m));
	status = wait_child(pid, 60.0);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The parent is undisturbed. */
	ipm_mask_fill(m);
	ck_assert_uint_eq(ipm_mask_weight(m), 5);
	atomic_store(&runs, 0);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, count, NULL, IPM_WAIT), 4);
	ck_assert_uint_eq(atomic_load(&runs), 4);
	ipm_mask_free(m);
	workers_stop(&ws);
}
END_TEST

/* Forking while other threads hammer the library must not deadlock the
 * child (the RCU registry is pruned, the registry lock is sane). */
static atomic_int hammer_stop;
static ipm_mask_t *hammer_masks[2];	/* reachable from a fork child too */

static void *hammer(void *arg)
{
	ipm_mask_t *m = hammer_masks[(intptr_t)arg];

	ipm_thread_register();
	while (!atomic_load(&hammer_stop)) {
		ipm_mask_fill(m);
		ipm_on_each_thread_mask(m, count, NULL, IPM_WAIT);
	}
	return NULL;
}

START_TEST(fork_while_busy)
{
	pthread_t th[2];
	int i, status;

	for (i = 0; i < 2; i++) {
		hammer_masks[i] = ipm_mask_alloc();
		ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i), 0);
	}
	for (i = 0; i < 20; i++) {
		pid_t pid = fork();

		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			int r = ipm_thread_register();

			if (r < 0)
				_exit(20);
			if (ipm_thread_unregister())
				_exit(21);
			_exit(0);
		}
		status = wait_child(pid, 60.0);
		ck_assert(WIFEXITED(status));
		ck_assert_int_eq(WEXITSTATUS(status), 0);
	}
	atomic_store(&hammer_stop, 1);
	for (i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		ipm_mask_free(hammer_masks[i]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fork");
	TCase *tc = tcase_create("fork");
	TCase *busy = tcase_create("busy");

	tcase_add_checked_fixture(tc, fixture_init, fixture_fini);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, fork_child_sees_only_itself);
	suite_add_tcase(s, tc);
	/* The fork child allocates while, in the parent, other threads were
	 * allocating at the fork: glibc's malloc is fork-safe, but the
	 * AddressSanitizer of GCC 12 (Debian 12) is not (its allocator gets
	 * its pthread_atfork handlers only in LLVM 18, llvm-project PR 75290),
	 * so the child may inherit a locked allocator and hang.  Tagged, so
	 * that tools/test.sh's ASan run can leave it out (CK_EXCLUDE_TAGS). */
	tcase_add_checked_fixture(busy, fixture_init, fixture_fini);
	tcase_set_timeout(busy, 120);
	tcase_set_tags(busy, "fork_with_allocating_threads");
	tcase_add_test(busy, fork_while_busy);
	suite_add_tcase(s, busy);
	return run_suite(s);
}
