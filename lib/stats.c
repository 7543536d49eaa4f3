/* SPDX-License-Identifier: MIT */
/*
 * stats.c - statistics.  Process counters are kept per calling thread in
 * thread-local storage (one writer, no atomic read-modify-write on the hot
 * path) and summed on read; a thread that exits folds its counts into
 * "retired".  Per-thread counters live in the thread's record.
 */
#include <string.h>

#include "internal.h"

_Static_assert(sizeof(struct ipm_stats) == IPM_NCOUNTERS * sizeof(uint64_t),
	       "enum ipm_counter must list every field of struct ipm_stats, in order");

static __ipm_tls struct ipm_caller tls_caller;
static pthread_mutex_t callers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ipm_caller *callers;	/* linked, live threads */
static uint64_t retired[IPM_NCOUNTERS];	/* threads that exited */

struct ipm_caller *_ipm_caller(void)
{
	struct ipm_caller *me = &tls_caller;

	if (unlikely(!me->linked)) {
		pthread_mutex_lock(&callers_lock);
		me->prev = NULL;
		me->next = callers;
		if (callers)
			callers->prev = me;
		callers = me;
		me->linked = true;
		pthread_mutex_unlock(&callers_lock);
		_ipm_arm_exit_hook();
	}
	return me;
}

static void unlink_caller(struct ipm_caller *c)
{
	unsigned i;

	for (i = 0; i < IPM_NCOUNTERS; i++)
		retired[i] += IPM_LOAD(&c->c[i]);
	if (c->prev)
		c->prev->next = c->next;
	else
		callers = c->next;
	if (c->next)
		c->next->prev = c->prev;
	memset(c, 0, sizeof(*c));
}

/* Thread exit (key destructor). */
void _ipm_caller_exit(void)
{
	if (!tls_caller.linked)
		return;
	pthread_mutex_lock(&callers_lock);
	unlink_caller(&tls_caller);
	pthread_mutex_unlock(&callers_lock);
}

/* ipm_init: totals count from now. */
void _ipm_stats_reset(void)
{
	struct ipm_caller *c;

	pthread_mutex_lock(&callers_lock);
	memset(retired, 0, sizeof(retired));
	for (c = callers; c; c = c->next)
		memset(c->c, 0, sizeof(c->c));
	pthread_mutex_unlock(&callers_lock);
}

/* fork: no other thread may hold the list's lock when the child is made. */
void _ipm_stats_fork_prepare(void)
{
	pthread_mutex_lock(&callers_lock);
}

void _ipm_stats_fork_parent(void)
{
	pthread_mutex_unlock(&callers_lock);
}

/* In a fork child only the calling thread exists: fold the others. */
void _ipm_stats_fork_child(void)
{
	struct ipm_caller *c, *next;

	pthread_mutex_unlock(&callers_lock);
	for (c = callers; c; c = next) {
		next = c->next;
		if (c != &tls_caller)
			unlink_caller(c);
	}
}

int ipm_stats_get(struct ipm_stats *out)
{
	uint64_t sum[IPM_NCOUNTERS];
	struct ipm_caller *c;
	unsigned i;

	if (!_ipm_ready())
		return -EPERM;
	if (!out)
		return -EINVAL;
	pthread_mutex_lock(&callers_lock);
	memcpy(sum, retired, sizeof(sum));
	for (c = callers; c; c = c->next)
		for (i = 0; i < IPM_NCOUNTERS; i++)
			sum[i] += IPM_LOAD(&c->c[i]);
	pthread_mutex_unlock(&callers_lock);
	memcpy(out, sum, sizeof(*out));
	return 0;
}

int ipm_thread_stats_get(int slot, struct ipm_thread_stats *out)
{
	struct ipm_thread *t;
	int ret = 0;

	if (!_ipm_ready())
		return -EPERM;
	if (!out || slot < 0 || (unsigned)slot >= _ipm_lib.max_threads)
		return -EINVAL;
	_ipm_rcu_read_lock();
	t = _ipm_slot_deref((unsigned)slot);
	if (t) {
		out->interrupts = IPM_LOAD(&t->stats.interrupts);
		out->polled = IPM_LOAD(&t->stats.polled);
		out->deferred = IPM_LOAD(&t->stats.deferred);
		out->remote_run = IPM_LOAD(&t->stats.remote_run);
	} else {
		ret = -ENOENT;
	}
	_ipm_rcu_read_unlock();
	return ret;
}
