/* SPDX-License-Identifier: MIT */
/*
 * watchdog.c - escalation for requests nobody waits for.
 *
 * A caller that waits escalates a late polling target itself
 * (request.c).  A fire-and-forget or asynchronous request to a poller that
 * stopped polling would otherwise wait forever, so the first such request
 * starts a watchdog thread.  While some poller has work queued, the
 * watchdog wakes every half deadline and signals pollers whose queue has
 * been non-empty for longer than the deadline; when none has, it sleeps on
 * a futex until a sender queues work for a poller again.  The poller's hot
 * path pays nothing: the sender that makes its list non-empty stamps the
 * time (it already read the clock for the request).
 *
 * Ordering scenario G: the watchdog going to sleep against a sender.
 *
 *   sender                               watchdog
 *   push(w)            [full barrier]    idle = 1            [SEQ_CST]
 *   if (idle) futex_wake(&idle)          scan(): sees w? then idle = 0
 *                                        else futex_wait(&idle, 1)
 *
 *   Either the sender sees idle == 1 and wakes it, or the watchdog's scan
 *   after setting idle sees the push.
 */
#include <limits.h>
#include <string.h>

#include "internal.h"
#include "probes.h"

static struct {
	pthread_mutex_t lock;	/* start/stop */
	pthread_t thread;
	bool running;
	uint32_t idle;		/* futex: 1 while it sleeps with nothing to watch */
	uint32_t stop;
} wd = { .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * Signal @t for the batch queued since @since, once per batch, whoever
 * asks (a waiter or the watchdog).  Counts an escalation, also where
 * IPM_CFG_NO_SIGNAL_ISOLATED forbids the signal itself.
 */
bool _ipm_escalate(struct ipm_thread *t, uint64_t since)
{
	uint64_t old = IPM_LOAD(&t->escalated_since);

	if (old == since ||
	    !__atomic_compare_exchange_n(&t->escalated_since, &old, since, false,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return false;
	_ipm_count(IPM_C_ESCALATIONS, 1);
	IPM_PROBE1(escalate, t->slot);
	if (!_ipm_may_signal(t))
		return false;
	return _ipm_send_signal(t) == 0;
}

/* One pass; returns whether some poller still has work queued. */
static bool scan(void)
{
	uint64_t now = _ipm_now_ns(), deadline = _ipm_lib.poll_deadline_ns;
	bool busy = false;
	unsigned s;

	_ipm_rcu_read_lock();
	for (s = 0; s < _ipm_lib.max_threads; s++) {
		struct ipm_thread *t = _ipm_slot_deref(s);
		uint64_t since;
		uint32_t st;

		if (!t || IPM_LOAD(&t->pending.head) == NULL)
			continue;
		st = IPM_LOAD(&t->state);
		if (!(st & IPM_ST_POLL) || (st & (IPM_ST_OFFLINE | IPM_ST_DEAD)))
			continue;
		busy = true;
		since = IPM_LOAD(&t->pending_since);
		if (now - since >= deadline)
			_ipm_escalate(t, since);
	}
	_ipm_rcu_read_unlock();
	return busy;
}

static void *watchdog_main(void *arg)
{
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!IPM_LOAD_ACQ(&wd.stop)) {
		if (scan()) {
			_ipm_futex_wait(&wd.stop, 0, (int64_t)_ipm_lib.poll_deadline_ns / 2);
			continue;
		}
		/* Scenario G. */
		__atomic_store_n(&wd.idle, 1, __ATOMIC_SEQ_CST);
		if (scan() || IPM_LOAD_ACQ(&wd.stop)) {
			IPM_STORE(&wd.idle, 0);
			continue;
		}
		_ipm_futex_wait(&wd.idle, 1, -1);
		IPM_STORE(&wd.idle, 0);
	}
	_ipm_rcu_read_lock();	/* urcu-bp: nothing to undo; keeps symmetry */
	_ipm_rcu_read_unlock();
	return NULL;
}

/* A sender queued work for a poller that nobody waits for. */
void _ipm_watchdog_note(void)
{
	if (likely(IPM_LOAD(&wd.running))) {
		if (unlikely(__atomic_load_n(&wd.idle, __ATOMIC_SEQ_CST))) {
			IPM_STORE(&wd.idle, 0);
			_ipm_futex_wake(&wd.idle, 1);
		}
		return;
	}
	if (_ipm_tls_in_handler)
		return;	/* not from a signal handler; the next sender starts it */
	pthread_mutex_lock(&wd.lock);
	if (!wd.running && _ipm_ready()) {
		wd.stop = 0;
		wd.idle = 0;
		if (pthread_create(&wd.thread, NULL, watchdog_main, NULL) == 0)
			__atomic_store_n(&wd.running, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&wd.lock);
}

/* ipm_fini. */
void _ipm_watchdog_stop(void)
{
	pthread_mutex_lock(&wd.lock);
	if (wd.running) {
		__atomic_store_n(&wd.stop, 1, __ATOMIC_RELEASE);
		_ipm_futex_wake(&wd.stop, INT_MAX);
		IPM_STORE(&wd.idle, 0);
		_ipm_futex_wake(&wd.idle, INT_MAX);
		pthread_join(wd.thread, NULL);
		wd.running = false;
	}
	pthread_mutex_unlock(&wd.lock);
}

/* The child has no watchdog thread; the next sender starts one. */
void _ipm_watchdog_fork_child(void)
{
	pthread_mutex_init(&wd.lock, NULL);
	wd.running = false;
	wd.idle = 0;
	wd.stop = 0;
}
