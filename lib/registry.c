/* SPDX-License-Identifier: MIT */
/*
 * registry.c - the thread registry: slots, registration, automatic
 * unregistration at thread exit, fork.
 *
 * Lifetime of a record (the RCU part):
 *
 *   sender                               owner (ipm_thread_unregister)
 *   rcu_read_lock()
 *   t = slots[s]                         state |= DEAD
 *   push(work, &t->pending)              run_pending(t)
 *   kick(t): sees DEAD, nothing          slots[s] = NULL
 *   rcu_read_unlock()                    synchronize_rcu()  <- waits for the sender
 *                                        run_pending(t)     <- runs its work
 *                                        slot s free; free(t)
 *
 * A sender that read slots[s] holds its read-side critical section over the
 * push and the kick, so the second run_pending() sees every push made to the
 * old record, and the slot is reused only when no sender can reach the old
 * record: a late sender never reaches the slot's next owner with work meant
 * for the previous one.
 */
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-bp.h>

#include "internal.h"

__ipm_tls struct ipm_thread *_ipm_tls_self;
__ipm_tls uint32_t _ipm_tls_gen;

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static __ipm_tls bool exit_armed;

void _ipm_rcu_read_lock(void)
{
	urcu_bp_read_lock();
}

void _ipm_rcu_read_unlock(void)
{
	urcu_bp_read_unlock();
}

void _ipm_rcu_synchronize(void)
{
	urcu_bp_synchronize_rcu();
}

static void thread_exit(void *arg)
{
	(void)arg;
	exit_armed = false;
	if (_ipm_ready() && _ipm_self())
		ipm_thread_unregister();
	_ipm_caller_exit();
}

static void make_exit_key(void)
{
	if (pthread_key_create(&exit_key, thread_exit))
		_ipm_die("pthread_key_create");
}

/* Make sure thread_exit() runs when the calling thread exits. */
void _ipm_arm_exit_hook(void)
{
	if (exit_armed)
		return;
	pthread_once(&exit_key_once, make_exit_key);
	pthread_setspecific(exit_key, (void *)1);
	exit_armed = true;
}

void _ipm_sample_cpu(struct ipm_thread *t)
{
	int cpu = sched_getcpu();

	IPM_STORE(&t->cpu, cpu);
	if (cpu >= 0 && cpu < _ipm_lib.ncpu_node)
		IPM_STORE(&t->node, _ipm_lib.cpu_node[cpu]);
	else
		IPM_STORE(&t->node, cpu >= 0 ? 0 : -1);
}

/*
 * Affinity: the barrier targets a pinned thread's CPU, and
 * IPM_CFG_NO_SIGNAL_ISOLATED spares threads confined to isolated CPUs.
 * Sampled at registration and by ipm_thread_set_mode(): a thread that
 * changes its affinity later calls ipm_thread_set_mode() again.
 */
void _ipm_sample_affinity(struct ipm_thread *t)
{
	cpu_set_t set, iso;
	int i, pinned = -1;

	if (sched_getaffinity(0, sizeof(set), &set)) {
		IPM_STORE(&t->pinned_cpu, -1);
		t->isolated = false;
		return;
	}
	if (CPU_COUNT(&set) == 1)
		for (i = 0; i < CPU_SETSIZE; i++)
			if (CPU_ISSET(i, &set)) {
				pinned = i;
				break;
			}
	CPU_AND(&iso, &set, &_ipm_lib.isolated_cpus);
	t->isolated = CPU_EQUAL(&iso, &set);
	IPM_STORE(&t->pinned_cpu, pinned);
}

int _ipm_registry_init(void)
{
	unsigned words = _ipm_lib.mask_words;

	_ipm_lib.slots = calloc(_ipm_lib.max_threads, sizeof(*_ipm_lib.slots));
	_ipm_lib.used = calloc(words, sizeof(unsigned long));
	if (!_ipm_lib.slots || !_ipm_lib.used) {
		free(_ipm_lib.slots);
		free(_ipm_lib.used);
		return -ENOMEM;
	}
	_ipm_lib.nregistered = 0;
	_ipm_lib.slots_high = 0;
	return 0;
}

/*
 * ipm_fini(): the caller has unregistered.  Records of threads still
 * registered are unpublished; their requests are cancelled (the waiters
 * see -ECANCELED) once no sender can reach them.
 */
void _ipm_registry_fini(void)
{
	struct ipm_thread *t;
	unsigned s;

	struct ipm_thread **left = calloc(_ipm_lib.max_threads, sizeof(*left));
	unsigned n = 0, i;

	pthread_mutex_lock(&_ipm_lib.reg_lock);
	for (s = 0; s < _ipm_lib.max_threads; s++) {
		t = _ipm_lib.slots[s];
		if (!t)
			continue;
		__atomic_fetch_or(&t->state, IPM_ST_DEAD, __ATOMIC_SEQ_CST);
		__atomic_store_n(&_ipm_lib.slots[s], NULL, __ATOMIC_RELEASE);
		if (left)
			left[n++] = t;
	}
	pthread_mutex_unlock(&_ipm_lib.reg_lock);
	_ipm_rcu_synchronize();
	/* No sender reaches these records any more: cancel what they hold.
	 * The threads themselves may still run; their records are leaked
	 * rather than freed under them (their next ipm_* call sees the
	 * generation change and treats them as unregistered). */
	for (i = 0; i < n; i++)
		_ipm_cancel_pending(left[i]);
	free(left);
	free(_ipm_lib.slots);
	free(_ipm_lib.used);
	_ipm_lib.slots = NULL;
	_ipm_lib.used = NULL;
}

static int take_free_slot(void)
{
	unsigned w, b;

	for (w = 0; w < _ipm_lib.mask_words; w++) {
		unsigned long free_bits = ~_ipm_lib.used[w];

		if (!free_bits)
			continue;
		b = (unsigned)__builtin_ctzl(free_bits);
		if (w * IPM_BITS_PER_LONG + b >= _ipm_lib.max_threads)
			return -ENOSPC;
		_ipm_lib.used[w] |= 1ul << b;
		return (int)(w * IPM_BITS_PER_LONG + b);
	}
	return -ENOSPC;
}

static void release_slot(unsigned s)
{
	_ipm_lib.used[s / IPM_BITS_PER_LONG] &= ~(1ul << (s % IPM_BITS_PER_LONG));
}

int ipm_thread_register(void)
{
	struct ipm_thread *t;
	sigset_t set;
	int slot;

	if (!_ipm_ready())
		return -EPERM;
	if (_ipm_self())
		return -EEXIST;
	t = aligned_alloc(IPM_CACHELINE, sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	__cds_lfs_init(&t->pending);
	t->tid = gettid();
	_ipm_sample_affinity(t);
	_ipm_sample_cpu(t);

	pthread_mutex_lock(&_ipm_lib.reg_lock);
	slot = take_free_slot();
	if (slot < 0) {
		pthread_mutex_unlock(&_ipm_lib.reg_lock);
		free(t);
		return slot;
	}
	t->slot = slot;
	_ipm_lib.nregistered++;
	if ((unsigned)slot >= _ipm_lib.slots_high)
		IPM_STORE(&_ipm_lib.slots_high, (unsigned)slot + 1);
	/* The handler must find the record before any sender can. */
	_ipm_tls_gen = _ipm_lib.gen;
	_ipm_tls_self = t;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&_ipm_lib.slots[slot], t, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&_ipm_lib.reg_lock);

	sigemptyset(&set);
	sigaddset(&set, _ipm_lib.signo);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	_ipm_arm_exit_hook();
	return slot;
}

int ipm_thread_unregister(void)
{
	struct ipm_thread *t;

	if (!_ipm_ready())
		return -EPERM;
	t = _ipm_self();
	if (!t)
		return -ENOENT;
	ipm_thread_online();
	/* Pairs with the full barrier of the sender's push (delivery.c, B). */
	__atomic_fetch_or(&t->state, IPM_ST_DEAD, __ATOMIC_SEQ_CST);
	_ipm_run_pending(t);

	pthread_mutex_lock(&_ipm_lib.reg_lock);
	__atomic_store_n(&_ipm_lib.slots[t->slot], NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&_ipm_lib.reg_lock);

	_ipm_rcu_synchronize();
	_ipm_run_pending(t);
	/* Last: nothing runs on the caller's behalf after it (pcache.c, D). */
	_ipm_pcache_thread_exit(t->slot);

	/* A late signal now finds no record and returns. */
	_ipm_tls_self = NULL;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	_ipm_batch_thread_gone(t->slot);	/* leaves every domain */

	pthread_mutex_lock(&_ipm_lib.reg_lock);
	release_slot((unsigned)t->slot);
	_ipm_lib.nregistered--;
	pthread_mutex_unlock(&_ipm_lib.reg_lock);
	free(t);
	return 0;
}

int ipm_self(void)
{
	struct ipm_thread *t;

	if (!_ipm_ready())
		return -EPERM;
	t = _ipm_self();
	return t ? t->slot : -ENOENT;
}

/* ------------------------------------------------------------------------ */
/* fork: the child has one thread, the one that called fork().               */
/* ------------------------------------------------------------------------ */

/* Lock order: registry, callers' counters, then urcu-bp's registry. */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&_ipm_lib.reg_lock);
	_ipm_stats_fork_prepare();
	urcu_bp_before_fork();
}

static void atfork_parent(void)
{
	urcu_bp_after_fork_parent();
	_ipm_stats_fork_parent();
	pthread_mutex_unlock(&_ipm_lib.reg_lock);
}

static void atfork_child(void)
{
	struct ipm_thread *me = _ipm_self(), *t;
	unsigned s;

	urcu_bp_after_fork_child();
	_ipm_lib.pid = getpid();
	_ipm_stats_fork_child();
	_ipm_watchdog_fork_child();
	/* Taken by our own prepare handler: the child's only thread owns it. */
	pthread_mutex_unlock(&_ipm_lib.reg_lock);
	if (!_ipm_lib.initialized)
		return;
	for (s = 0; s < _ipm_lib.max_threads; s++) {
		t = _ipm_lib.slots[s];
		if (!t || t == me)
			continue;
		/* Its thread does not exist here; its requests belong to
		 * senders of the parent, which the parent serves. */
		_ipm_lib.slots[s] = NULL;
		release_slot(s);
		_ipm_lib.nregistered--;
		free(t);
	}
	if (me) {
		/* Requests queued for us belong to the parent's senders. */
		__cds_lfs_pop_all(&me->pending);
		me->kept_head = me->kept_tail = NULL;
		me->tid = gettid();
		__atomic_and_fetch(&me->state, IPM_ST_POLL | IPM_ST_OFFLINE, __ATOMIC_SEQ_CST);
	}
}

static void install_atfork(void)
{
	if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child))
		_ipm_die("pthread_atfork");
}

/* Once per process: atfork handlers cannot be removed, so they check state. */
void _ipm_registry_atfork_once(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, install_atfork);
}
