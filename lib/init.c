/* SPDX-License-Identifier: MIT */
/*
 * init.c - ipm_init()/ipm_fini(): configuration, the signal, feature probes.
 */
#include <numa.h>
#include <string.h>

#include "internal.h"

struct ipm_lib _ipm_lib = { .reg_lock = PTHREAD_MUTEX_INITIALIZER };
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

#define IPM_CFG_ALL	(IPM_CFG_NO_MEMBARRIER | IPM_CFG_NO_SIGNAL_ISOLATED)

static bool is_default(const struct sigaction *sa)
{
	return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == SIG_DFL;
}

/* The signal: the one asked for if nobody else has it, else the highest
 * free real-time signal (applications tend to count up from SIGRTMIN). */
static int choose_signal(int want, struct sigaction *old)
{
	int sig;

	if (want) {
		if (want < 1 || want > SIGRTMAX || want == SIGKILL || want == SIGSTOP)
			return -EINVAL;
		if (sigaction(want, NULL, old))
			return -EINVAL;
		return is_default(old) ? want : -EBUSY;
	}
	for (sig = SIGRTMAX; sig >= SIGRTMIN; sig--)
		if (sigaction(sig, NULL, old) == 0 && is_default(old))
			return sig;
	return -EBUSY;
}

/* A CPU list as in /sys/devices/system/cpu/isolated: "1-3,5". */
static void read_cpu_list(const char *path, cpu_set_t *set)
{
	char buf[4096], *p, *end;
	FILE *f = fopen(path, "re");
	long a, b;
	size_t len;

	if (!f)
		return;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	for (p = buf; *p;) {
		a = strtol(p, &end, 10);
		if (end == p)
			break;
		b = a;
		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		for (; a <= b && a < CPU_SETSIZE; a++)
			if (a >= 0)
				CPU_SET((int)a, set);
		p = end;
		if (*p == ',')
			p++;
		else
			break;
	}
}

/*
 * The CPU -> node table, once: libnuma's numa_node_of_cpu() is not safe to
 * call from several threads at once (its lazily built masks race).
 */
static int read_cpu_nodes(void)
{
	int n = numa_num_possible_cpus(), cpu;

	free(_ipm_lib.cpu_node);
	_ipm_lib.cpu_node = NULL;
	_ipm_lib.ncpu_node = 0;
	if (numa_available() < 0 || n <= 0)
		return 0;
	_ipm_lib.cpu_node = malloc((size_t)n * sizeof(int));
	if (!_ipm_lib.cpu_node)
		return -ENOMEM;
	for (cpu = 0; cpu < n; cpu++) {
		int node = numa_node_of_cpu(cpu);

		_ipm_lib.cpu_node[cpu] = node < 0 ? 0 : node;
	}
	_ipm_lib.ncpu_node = n;
	_ipm_lib.features |= IPM_FEAT_NUMA;
	return 0;
}

int ipm_init(const struct ipm_config *cfg)
{
	struct ipm_config c = { 0 };
	struct sigaction sa;
	int sig, ret;

	if (cfg)
		c = *cfg;
	pthread_mutex_lock(&init_lock);
	ret = -EALREADY;
	if (_ipm_lib.initialized)
		goto out;
	ret = -EINVAL;
	if ((c.flags & ~IPM_CFG_ALL) || c.max_threads > IPM_MAX_THREADS_LIMIT)
		goto out;
	sig = choose_signal(c.signo, &_ipm_lib.old_action);
	ret = sig;
	if (sig < 0)
		goto out;

	_ipm_lib.signo = sig;
	_ipm_lib.cfg_flags = c.flags;
	_ipm_lib.max_threads = c.max_threads ? c.max_threads : IPM_DEFAULT_THREADS;
	_ipm_lib.mask_words = (_ipm_lib.max_threads + IPM_BITS_PER_LONG - 1) / IPM_BITS_PER_LONG;
	_ipm_lib.poll_deadline_ns = 1000ull * (c.poll_deadline_us ? c.poll_deadline_us
							   : IPM_DEFAULT_DEADLINE_US);
	ret = _ipm_registry_init();
	if (ret)
		goto out;

	CPU_ZERO(&_ipm_lib.isolated_cpus);
	read_cpu_list("/sys/devices/system/cpu/isolated", &_ipm_lib.isolated_cpus);
	read_cpu_list("/sys/devices/system/cpu/nohz_full", &_ipm_lib.isolated_cpus);

	_ipm_lib.features = 0;
	ret = read_cpu_nodes();
	if (ret) {
		_ipm_registry_fini();
		goto out;
	}
	if (!(c.flags & IPM_CFG_NO_MEMBARRIER))
		_ipm_membarrier_probe();

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = _ipm_signal_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL)) {
		ret = -errno;
		_ipm_registry_fini();
		goto out;
	}
	_ipm_stats_reset();
	_ipm_registry_atfork_once();
	__atomic_add_fetch(&_ipm_lib.gen, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&_ipm_lib.initialized, true, __ATOMIC_RELEASE);
	ret = 0;
out:
	pthread_mutex_unlock(&init_lock);
	return ret;
}

void ipm_fini(void)
{
	struct sigaction ign;

	pthread_mutex_lock(&init_lock);
	if (!_ipm_lib.initialized)
		goto out;
	ipm_thread_unregister();
	_ipm_watchdog_stop();
	__atomic_store_n(&_ipm_lib.initialized, false, __ATOMIC_RELEASE);
	__atomic_add_fetch(&_ipm_lib.gen, 1, __ATOMIC_RELAXED);
	_ipm_registry_fini();
	/* SIG_IGN discards a signal still pending, whose default action
	 * would otherwise kill the process; then the old disposition. */
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigaction(_ipm_lib.signo, &ign, NULL);
	sigaction(_ipm_lib.signo, &_ipm_lib.old_action, NULL);
	_ipm_reap_zombies();
	_ipm_lib.features = 0;
	free(_ipm_lib.cpu_node);
	_ipm_lib.cpu_node = NULL;
	_ipm_lib.ncpu_node = 0;
out:
	pthread_mutex_unlock(&init_lock);
}

unsigned ipm_features(void)
{
	return _ipm_ready() ? _ipm_lib.features : 0;
}

int ipm_signo(void)
{
	return _ipm_ready() ? _ipm_lib.signo : -EPERM;
}
