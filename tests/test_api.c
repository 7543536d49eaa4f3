/* SPDX-License-Identifier: MIT */
/*
 * test_api.c - every public function rejects bad input with the errno the
 * header documents, before and after ipm_init; masks.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void nop(int slot, void *info)
{
	(void)slot;
	(void)info;
}

static bool yes(int slot, void *info)
{
	(void)slot;
	(void)info;
	return true;
}

START_TEST(everything_before_init_is_eperm)
{
	struct ipm_stats st;
	struct ipm_thread_stats ts;
	struct ipm_req *req = (struct ipm_req *)1;

	ck_assert_int_eq(ipm_thread_register(), -EPERM);
	ck_assert_int_eq(ipm_thread_unregister(), -EPERM);
	ck_assert_int_eq(ipm_self(), -EPERM);
	ck_assert_int_eq(ipm_thread_set_mode(IPM_MODE_POLL), -EPERM);
	ck_assert_uint_eq(ipm_poll(), 0);
	ipm_thread_offline();
	ipm_thread_online();
	ck_assert_ptr_null(ipm_mask_alloc());
	ck_assert_int_eq(ipm_mask_set_node(NULL, 0), -EPERM);
	ck_assert_int_eq(ipm_on_each_thread_mask(NULL, nop, NULL, 0), -EPERM);
	ck_assert_int_eq(ipm_on_each_thread_cond(yes, nop, NULL, 0), -EPERM);
	ck_assert_int_eq(ipm_on_each_thread_cond_mask(yes, nop, NULL, 0, NULL), -EPERM);
	ck_assert_int_eq(ipm_on_thread(0, nop, NULL, 0), -EPERM);
	ck_assert_int_eq(ipm_call_async(&req, NULL, nop, NULL, 0), -EPERM);
	ck_assert_ptr_null(req);
	ck_assert_int_eq(ipm_req_wait(NULL, 0), -EPERM);
	ck_assert_int_eq(ipm_barrier_mask(NULL), -EPERM);
	ck_assert_int_eq(ipm_stats_get(&st), -EPERM);
	ck_assert_int_eq(ipm_thread_stats_get(0, &ts), -EPERM);
	ck_assert_uint_eq(ipm_features(), 0);
	ck_assert_int_eq(ipm_signo(), -EPERM);
	ipm_fini();	/* harmless */
}
END_TEST

START_TEST(init_rejects_bad_config)
{
	struct ipm_config c = { 0 };
	struct sigaction sa;

	c.flags = 0x80000000u;
	ck_assert_int_eq(ipm_init(&c), -EINVAL);
	c.flags = 0;
	c.signo = SIGKILL;
	ck_assert_int_eq(ipm_init(&c), -EINVAL);
	c.signo = 9999;
	ck_assert_int_eq(ipm_init(&c), -EINVAL);
	c.signo = 0;
	c.max_threads = 1u << 30;
	ck_assert_int_eq(ipm_init(&c), -EINVAL);

	/* Someone else's signal. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	c.max_threads = 0;
	c.signo = SIGUSR1;
	ck_assert_int_eq(ipm_init(&c), -EBUSY);
	c.signo = SIGUSR2;
	ck_assert_int_eq(ipm_init(&c), 0);
	ck_assert_int_eq(ipm_signo(), SIGUSR2);
	ck_assert_int_eq(ipm_init(&c), -EALREADY);
	ck_assert_int_eq(ipm_init(NULL), -EALREADY);
	ipm_fini();
	/* The disposition is given back: init again works. */
	ck_assert_int_eq(ipm_init(&c), 0);
	ipm_fini();
	ck_assert_int_eq(ipm_init(NULL), 0);
	ck_assert_int_ge(ipm_signo(), SIGRTMIN);
	ck_assert_int_le(ipm_signo(), SIGRTMAX);
	ipm_fini();
}
END_TEST

START_TEST(registration_errors)
{
	struct ipm_config c = { .max_threads = 1 };

	ck_assert_int_eq(ipm_init(&c), 0);
	ck_assert_int_eq(ipm_self(), -ENOENT);
	ck_assert_int_eq(ipm_thread_unregister(), -ENOENT);
	ck_assert_int_eq(ipm_thread_set_mode(IPM_MODE_POLL), -ENOENT);
	ck_assert_int_eq(ipm_thread_register(), 0);
	ck_assert_int_eq(ipm_thread_register(), -EEXIST);
	ck_assert_int_eq(ipm_self(), 0);
	ck_assert_int_eq(ipm_thread_set_mode(7), -EINVAL);
	ck_assert_int_eq(ipm_thread_set_mode(-1), -EINVAL);
	ck_assert_int_eq(ipm_thread_unregister(), 0);
	ck_assert_int_eq(ipm_thread_unregister(), -ENOENT);
	ck_assert_int_eq(ipm_thread_register(), 0);
	ipm_fini();
}
END_TEST

static void *try_register(void *arg)
{
	*(int *)arg = ipm_thread_register();
	return NULL;
}

START_TEST(registry_full_is_enospc)
{
	struct ipm_config c = { .max_threads = 1 };
	pthread_t th;
	int r = 0;

	ck_assert_int_eq(ipm_init(&c), 0);
	ck_assert_int_eq(ipm_thread_register(), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, try_register, &r), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(r, -ENOSPC);
	ipm_fini();
}
END_TEST

START_TEST(call_errors)
{
	ipm_mask_t *m;
	struct ipm_req *req = (struct ipm_req *)1;
	struct ipm_thread_stats ts;

	ck_assert_int_eq(ipm_init(NULL), 0);
	m = ipm_mask_alloc();
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(ipm_on_each_thread_mask(NULL, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, NULL, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, nop, NULL, 0x100), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, nop, NULL, IPM_WAIT), 0);
	ck_assert_int_eq(ipm_on_each_thread_cond(NULL, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_cond(yes, NULL, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_cond(yes, nop, NULL, 0x100), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_cond_mask(NULL, nop, NULL, 0, m), -EINVAL);
	ck_assert_int_eq(ipm_on_thread(-1, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_thread(1024, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_thread(3, nop, NULL, 0), -ENOENT);
	ck_assert_int_eq(ipm_on_thread(3, NULL, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_on_thread(3, nop, NULL, 0x100), -EINVAL);
	ck_assert_int_eq(ipm_call_async(NULL, m, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_call_async(&req, m, nop, NULL, IPM_WAIT), -EINVAL);
	ck_assert_ptr_null(req);
	ck_assert_int_eq(ipm_call_async(&req, NULL, nop, NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_call_async(&req, m, nop, NULL, 0), 0);
	ck_assert_ptr_nonnull(req);
	ck_assert(ipm_req_done(req));
	ck_assert_int_eq(ipm_req_wait(req, -1), 0);
	ipm_req_release(req);
	ipm_req_release(NULL);
	ck_assert(ipm_req_done(NULL));
	ck_assert_int_eq(ipm_req_wait(NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_stats_get(NULL), -EINVAL);
	ck_assert_int_eq(ipm_thread_stats_get(-1, &ts), -EINVAL);
	ck_assert_int_eq(ipm_thread_stats_get(1024, &ts), -EINVAL);
	ck_assert_int_eq(ipm_thread_stats_get(0, NULL), -EINVAL);
	ck_assert_int_eq(ipm_thread_stats_get(0, &ts), -ENOENT);
	ck_assert_int_eq(ipm_mask_set_node(NULL, 0), -EINVAL);
	ck_assert_int_eq(ipm_mask_set_node(m, -1), -EINVAL);
	ck_assert_int_eq(ipm_barrier_mask(m), 0);
	ck_assert_int_eq(ipm_barrier_mask(NULL), 0);
	ipm_mask_free(m);
	ipm_mask_free(NULL);
	ipm_fini();
}
END_TEST

START_TEST(mask_operations)
{
	ipm_mask_t *m, *other;
	struct ipm_config c = { .max_threads = 200 };
	int i, n;

	ck_assert_int_eq(ipm_init(&c), 0);
	m = ipm_mask_alloc();
	ck_assert_uint_eq(ipm_mask_weight(m), 0);
	ck_assert_int_eq(ipm_mask_next(m, -1), -1);
	ipm_mask_set(m, 0);
	ipm_mask_set(m, 63);
	ipm_mask_set(m, 64);
	ipm_mask_set(m, 199);
	ipm_mask_set(m, 200);	/* out of range: ignored */
	ipm_mask_set(m, -5);
	ipm_mask_set(NULL, 3);
	ck_assert_uint_eq(ipm_mask_weight(m), 4);
	ck_assert(ipm_mask_test(m, 63));
	ck_assert(!ipm_mask_test(m, 62));
	ck_assert(!ipm_mask_test(m, 200));
	ck_assert(!ipm_mask_test(m, -1));
	ck_assert(!ipm_mask_test(NULL, 0));
	ck_assert_int_eq(ipm_mask_next(m, -1), 0);
	ck_assert_int_eq(ipm_mask_next(m, 0), 63);
	ck_assert_int_eq(ipm_mask_next(m, 63), 64);
	ck_assert_int_eq(ipm_mask_next(m, 64), 199);
	ck_assert_int_eq(ipm_mask_next(m, 199), -1);
	ck_assert_int_eq(ipm_mask_next(m, 1000), -1);
	ck_assert_int_eq(ipm_mask_next(m, -7), -1);
	ipm_mask_clear(m, 63);
	ipm_mask_clear(m, 500);
	ck_assert(!ipm_mask_test(m, 63));
	for (n = 0, i = ipm_mask_next(m, -1); i >= 0; i = ipm_mask_next(m, i))
		n++;
	ck_assert_int_eq(n, 3);
	ipm_mask_zero(m);
	ck_assert_uint_eq(ipm_mask_weight(m), 0);

	/* fill: the registered slots, nothing else. */
	ck_assert_int_eq(ipm_thread_register(), 0);
	ipm_mask_set(m, 150);
	ipm_mask_fill(m);
	ck_assert_uint_eq(ipm_mask_weight(m), 1);
	ck_assert(ipm_mask_test(m, 0));
	/* The caller's node is known after registration. */
	other = ipm_mask_alloc();
	ck_assert_int_ge(ipm_mask_set_node(other, 0), (ipm_features() & IPM_FEAT_NUMA) ? 1 : 0);
	ck_assert_int_eq(ipm_mask_set_node(other, 4000), 0);
	ipm_mask_free(other);
	ipm_fini();
	/* A mask of another ipm_init's size is refused by the barrier and
	 * still safe to use with the calls (slots beyond it: not in it). */
	c.max_threads = 100;
	ck_assert_int_eq(ipm_init(&c), 0);
	ck_assert_int_eq(ipm_thread_register(), 0);
	ck_assert_int_eq(ipm_barrier_mask(m), -EINVAL);
	ck_assert_int_eq(ipm_on_each_thread_mask(m, nop, NULL, IPM_WAIT | IPM_SELF), 1);
	ipm_mask_free(m);
	ipm_fini();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("errors");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, everything_before_init_is_eperm);
	tcase_add_test(tc, init_rejects_bad_config);
	tcase_add_test(tc, registration_errors);
	tcase_add_test(tc, registry_full_is_enospc);
	tcase_add_test(tc, call_errors);
	tcase_add_test(tc, mask_operations);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
