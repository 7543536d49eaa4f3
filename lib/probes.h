/* SPDX-License-Identifier: MIT */
/*
 * probes.h - USDT probes (provider "libipimask"), for bpftrace/perf users
 * who want to see who interrupted whom.  Compiled to nothing when
 * <sys/sdt.h> (Debian: systemtap-sdt-dev) was absent at build time.  A
 * probe that nobody traces is a single nop.
 *
 *   send      (slot, how)        a sender handed work to slot; how: 0 signal,
 *                                1 queued for a poll, 2 deferred (offline),
 *                                3 run remotely, 4 coalesced, 5 dying
 *   signal    (slot)             the handler ran on slot (one interruption)
 *   deliver   (slot, func)       a function ran for slot
 *   complete  (req)              every target of req finished
 *   escalate  (slot)             a late poller was signalled
 *   drain     (slot, objects)    a per-thread cache was drained remotely
 *   flush     (threads, keys)    an invalidation batch was flushed
 *
 * Try: bpftrace -e 'usdt:/usr/lib/x86_64-linux-gnu/libipimask.so.0:libipimask:signal
 *       { @interrupts[arg0] = count(); }'
 */
#ifndef IPM_PROBES_H
#define IPM_PROBES_H

#ifdef IPM_HAVE_SDT
#include <sys/sdt.h>
#define IPM_PROBE1(name, a)		STAP_PROBE1(libipimask, name, a)
#define IPM_PROBE2(name, a, b)		STAP_PROBE2(libipimask, name, a, b)
#else
#define IPM_PROBE1(name, a)		do { (void)(a); } while (0)
#define IPM_PROBE2(name, a, b)		do { (void)(a); (void)(b); } while (0)
#endif

enum ipm_probe_how {
	IPM_HOW_SIGNAL, IPM_HOW_POLL, IPM_HOW_DEFERRED, IPM_HOW_REMOTE,
	IPM_HOW_COALESCED, IPM_HOW_DYING,
};

#endif
