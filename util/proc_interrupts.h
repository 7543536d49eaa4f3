/* SPDX-License-Identifier: MIT */
/*
 * proc_interrupts.h - the IPI rows of /proc/interrupts (RES, CAL, TLB), per
 * CPU: what the kernel says it sent.  Tests and benchmarks compare the
 * library's own interrupt counters against these; one reader for all of
 * them.  Not part of the library (not installed).
 */
#ifndef IPM_UTIL_PROC_INTERRUPTS_H
#define IPM_UTIL_PROC_INTERRUPTS_H

/* Row indices into struct procirq::v, and their masks for the sums. */
enum procirq_row {
	PROCIRQ_RES,	/* rescheduling interrupts (a wake-up, or a signal to a running task) */
	PROCIRQ_CAL,	/* function-call interrupts (membarrier, smp_call_function) */
	PROCIRQ_TLB,	/* TLB shootdowns */
	PROCIRQ_NROWS
};
#define PROCIRQ_MASK(row)	(1u << (row))
#define PROCIRQ_RES_CAL		(PROCIRQ_MASK(PROCIRQ_RES) | PROCIRQ_MASK(PROCIRQ_CAL))
#define PROCIRQ_ALL		(PROCIRQ_RES_CAL | PROCIRQ_MASK(PROCIRQ_TLB))

#define PROCIRQ_MAX_CPUS 1024

/* One snapshot (24 KiB: static or heap, rather than a small stack). */
struct procirq {
	int ncpus;		/* highest CPU id in the header + 1 */
	unsigned rows;		/* PROCIRQ_MASK() of the rows found */
	long long v[PROCIRQ_NROWS][PROCIRQ_MAX_CPUS];
};

extern const char *const procirq_names[PROCIRQ_NROWS];	/* "RES", "CAL", "TLB" */

/* Reads /proc/interrupts into @s.  0, or -errno when the file cannot be
 * opened, or -ENOENT when it has none of the three rows.  Columns are
 * mapped by the header's CPUn names, so offline CPUs are handled. */
int procirq_read(struct procirq *s);

/* Sum of @rows (PROCIRQ_MASK()s) for CPUs @from .. @to - 1 (@to clamped to
 * ncpus); -1 when none of @rows was found. */
long long procirq_sum(const struct procirq *s, unsigned rows, int from, int to);

/* Reads a snapshot and returns procirq_sum(@rows, @cpu, @cpu + 1); -1 on
 * any error.  Convenience for before/after counts of one CPU. */
long long procirq_now(unsigned rows, int cpu);

#endif
