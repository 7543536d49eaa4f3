/* SPDX-License-Identifier: MIT */
/*
 * barrier.c - ipm_barrier_mask() on membarrier(2), and the probe of what
 * the kernel offers.
 *
 * The ladder, cheapest disturbance first, for the running, non-polling
 * targets (polling threads get a no-op request they pick up at their next
 * ipm_poll(), whose pop is a full barrier; offline threads need nothing):
 *   1. the cpumask flag of kernel/ (IPM_FEAT_MEMBARRIER_CPUMASK): one call
 *      for the CPUs of every pinned target;
 *   2. PRIVATE_EXPEDITED_RSEQ + FLAG_CPU: one call per distinct CPU of the
 *      pinned targets, while they are few;
 *   3. PRIVATE_EXPEDITED: one call for the whole process, when targets are
 *      many or not pinned, and no polling thread would be hit by it;
 *   4. the signal path: a no-op IPM_WAIT call (the handler's pop_all is a
 *      full barrier), when membarrier is absent, denied, or would interrupt
 *      polling threads.
 *
 * Ordering scenario F (why an offline thread needs nothing):
 *
 *   caller                               T
 *   fence (SEQ_CST)                      state |= OFFLINE   [full barrier]
 *   s = T->state: OFFLINE -> skip        blocks; touches no shared data
 *
 *   T's RMW is a full barrier after its last access before blocking; when it
 *   comes back, ipm_thread_online()'s CAS is one before its next access.
 *
 * membarrier registration happens in ipm_init(), which the application
 * calls before creating threads: registering a process that already runs
 * several threads makes the kernel synchronise every CPU running it (an
 * IPI to each, the very disturbance this library avoids), and a command
 * used before registration fails with EPERM.
 */
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#ifndef MEMBARRIER_CMD_FLAG_CPU
#define MEMBARRIER_CMD_FLAG_CPU		(1 << 0)
#endif
#ifndef MEMBARRIER_CMD_FLAG_CPUMASK
#define MEMBARRIER_CMD_FLAG_CPUMASK	(1 << 1)	/* kernel/ patch 2 */
#endif

#define FEW_CPUS	4	/* per-CPU calls up to this many CPUs */

static long sys_membarrier(int cmd, unsigned flags, unsigned long a3, const void *a4)
{
	long r = syscall(__NR_membarrier, cmd, flags, a3, a4);

	return r < 0 ? -errno : r;
}

void _ipm_membarrier_probe(void)
{
	int saved = errno, cpu = sched_getcpu();
	unsigned long one[1];
	bool mask_known = false;
	long q = sys_membarrier(MEMBARRIER_CMD_QUERY, 0, 0, NULL);

	if (q < 0)
		goto out;
	if (cpu < 0)
		cpu = 0;
	one[0] = 0;
	if (cpu < (int)IPM_BITS_PER_LONG)
		one[0] = 1ul << cpu;
	if (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) {
		/* Before registering: EPERM means the kernel knows the flag
		 * (and refuses the unregistered caller), EINVAL that it does
		 * not.  0: someone registered already; it knows it too. */
		long r = sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
					MEMBARRIER_CMD_FLAG_CPUMASK, sizeof(one), one);

		mask_known = (r == 0 || r == -EPERM);
	}
	if ((q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0, NULL) == 0 &&
	    sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0, NULL) == 0)
		_ipm_lib.features |= IPM_FEAT_MEMBARRIER;
	if ((q & MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) &&
	    sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0, NULL) == 0) {
		if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
				   MEMBARRIER_CMD_FLAG_CPU, (unsigned long)cpu, NULL) == 0)
			_ipm_lib.features |= IPM_FEAT_MEMBARRIER_CPU;
		if (mask_known &&
		    sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
				   MEMBARRIER_CMD_FLAG_CPUMASK, sizeof(one), one) == 0)
			_ipm_lib.features |= IPM_FEAT_MEMBARRIER_CPUMASK;
	}
out:
	errno = saved;
}

static void noop(int slot, void *info)
{
	(void)slot;
	(void)info;
}

/* Membarrier calls for the CPUs of pinned targets; false: not done. */
static bool barrier_cpus(const cpu_set_t *cpus)
{
	unsigned f = _ipm_lib.features;
	unsigned long bits[CPU_SETSIZE / IPM_BITS_PER_LONG] = { 0 };
	int n = CPU_COUNT(cpus), i, top = 0;

	if (n == 0)
		return true;
	if (f & IPM_FEAT_MEMBARRIER_CPUMASK) {
		for (i = 0; i < CPU_SETSIZE; i++)
			if (CPU_ISSET(i, cpus)) {
				bits[i / IPM_BITS_PER_LONG] |= 1ul << (i % IPM_BITS_PER_LONG);
				top = i;
			}
		if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
				   MEMBARRIER_CMD_FLAG_CPUMASK,
				   (unsigned long)(top / IPM_BITS_PER_LONG + 1) * sizeof(long),
				   bits) == 0) {
			_ipm_count(IPM_C_MEMBARRIERS, 1);
			return true;
		}
	}
	if ((f & IPM_FEAT_MEMBARRIER_CPU) && n <= FEW_CPUS) {
		for (i = 0; i < CPU_SETSIZE; i++) {
			if (!CPU_ISSET(i, cpus))
				continue;
			if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
					   MEMBARRIER_CMD_FLAG_CPU, (unsigned long)i, NULL))
				return false;
			_ipm_count(IPM_C_MEMBARRIERS, 1);
		}
		return true;
	}
	return false;
}

/* Add @s to the signal-path mask, allocated on first use. */
static bool add(ipm_mask_t **m, unsigned s)
{
	if (!*m)
		*m = ipm_mask_alloc();
	if (!*m)
		return false;
	ipm_mask_set(*m, (int)s);
	return true;
}

/* The slots to look at: the mask's bits, or up to the highest slot in use. */
static unsigned first(const ipm_mask_t *mask)
{
	int s = mask ? ipm_mask_next(mask, -1) : 0;

	return s < 0 ? _ipm_lib.max_threads : (unsigned)s;
}

static unsigned next(const ipm_mask_t *mask, unsigned s)
{
	int n;

	if (!mask)
		return s + 1 < IPM_LOAD(&_ipm_lib.slots_high) ? s + 1 : _ipm_lib.max_threads;
	n = ipm_mask_next(mask, (int)s);
	return n < 0 ? _ipm_lib.max_threads : (unsigned)n;
}

int ipm_barrier_mask(const ipm_mask_t *mask)
{
	struct ipm_thread *me = _ipm_self();
	ipm_mask_t *signal_path = NULL;
	bool unpinned = false, pollers = false, expedited = false;
	unsigned s, limit;
	cpu_set_t cpus;
	int ret = 0;

	if (!_ipm_ready())
		return -EPERM;
	if (mask && mask->nbits != _ipm_lib.max_threads)
		return -EINVAL;
	CPU_ZERO(&cpus);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* the caller's own */

	limit = _ipm_lib.max_threads;
	_ipm_rcu_read_lock();
	for (s = first(mask); s < limit; s = next(mask, s)) {
		struct ipm_thread *t;
		uint32_t st;
		int cpu;

		t = _ipm_slot_deref(s);
		if (!t || t == me)
			continue;
		st = IPM_LOAD(&t->state);
		if ((st & IPM_ST_OFFLINE) && !(st & IPM_ST_DEAD))
			continue;	/* scenario F */
		if ((st & IPM_ST_POLL) && !(st & IPM_ST_KICKME)) {
			pollers = true;
			if (!add(&signal_path, s))
				goto nomem;
			continue;
		}
		cpu = IPM_LOAD(&t->pinned_cpu);
		if (cpu >= 0 && cpu < CPU_SETSIZE &&
		    (_ipm_lib.features & IPM_FEAT_MEMBARRIER_CPU)) {
			CPU_SET(cpu, &cpus);
			continue;
		}
		unpinned = true;
		if (!add(&signal_path, s))
			goto nomem;
	}
	_ipm_rcu_read_unlock();

	/* PRIVATE_EXPEDITED interrupts every CPU running the process, the
	 * pollers' too: only when no poller is among the targets. */
	if ((_ipm_lib.features & IPM_FEAT_MEMBARRIER) && !pollers &&
	    (unpinned || (CPU_COUNT(&cpus) > FEW_CPUS &&
			  !(_ipm_lib.features & IPM_FEAT_MEMBARRIER_CPUMASK))) &&
	    sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0, NULL) == 0) {
		_ipm_count(IPM_C_MEMBARRIERS, 1);
		expedited = true;
	}
	if (!expedited && !barrier_cpus(&cpus)) {
		/* membarrier refused: the pinned targets take the signal path. */
		_ipm_rcu_read_lock();
		for (s = first(mask); s < limit; s = next(mask, s)) {
			struct ipm_thread *t = _ipm_slot_deref(s);
			int cpu;

			if (!t || t == me)
				continue;
			cpu = IPM_LOAD(&t->pinned_cpu);
			if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &cpus) &&
			    !add(&signal_path, s))
				goto nomem;
		}
		_ipm_rcu_read_unlock();
	}
	if (!expedited && signal_path)
		ret = ipm_on_each_thread_mask(signal_path, noop, NULL, IPM_WAIT);
	ipm_mask_free(signal_path);
	return ret < 0 ? ret : 0;
nomem:
	_ipm_rcu_read_unlock();
	ipm_mask_free(signal_path);
	return -ENOMEM;
}
