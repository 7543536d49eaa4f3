/* SPDX-License-Identifier: MIT */
/* proc_interrupts.c - see proc_interrupts.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_interrupts.h"

const char *const procirq_names[PROCIRQ_NROWS] = { "RES", "CAL", "TLB" };

int procirq_read(struct procirq *s)
{
	FILE *f = fopen("/proc/interrupts", "re");
	int colcpu[PROCIRQ_MAX_CPUS], ncols = 0, k, c, err = 0;
	char *line = NULL, *p, *end;
	size_t cap = 0;

	memset(s, 0, sizeof(*s));
	if (!f)
		return -errno;
	/* Header: "           CPU0       CPU1 ..." */
	if (getline(&line, &cap, f) > 0) {
		for (p = line; (p = strstr(p, "CPU")) && ncols < PROCIRQ_MAX_CPUS;) {
			long id = strtol(p + 3, &end, 10);

			if (end == p + 3 || id < 0 || id >= PROCIRQ_MAX_CPUS)
				break;
			colcpu[ncols++] = (int)id;
			if (id + 1 > s->ncpus)
				s->ncpus = (int)id + 1;
			p = end;
		}
	}
	while (getline(&line, &cap, f) > 0) {
		for (p = line; *p == ' '; p++)
			;
		for (k = 0; k < PROCIRQ_NROWS; k++)
			if (!strncmp(p, procirq_names[k], 3) && p[3] == ':')
				break;
		if (k == PROCIRQ_NROWS)
			continue;
		s->rows |= PROCIRQ_MASK(k);
		p += 4;
		for (c = 0; c < ncols; c++) {
			long long x = strtoll(p, &end, 10);

			if (end == p)
				break;
			s->v[k][colcpu[c]] = x;
			p = end;
		}
	}
	if (ferror(f))
		err = -EIO;
	else if (!s->rows)
		err = -ENOENT;
	free(line);
	fclose(f);
	return err;
}

long long procirq_sum(const struct procirq *s, unsigned rows, int from, int to)
{
	long long sum = 0;
	int k, c;

	if (!(s->rows & rows))
		return -1;
	if (to > s->ncpus)
		to = s->ncpus;
	for (k = 0; k < PROCIRQ_NROWS; k++)
		if (rows & s->rows & PROCIRQ_MASK(k))
			for (c = from < 0 ? 0 : from; c < to; c++)
				sum += s->v[k][c];
	return sum;
}

long long procirq_now(unsigned rows, int cpu)
{
	struct procirq *s = malloc(sizeof(*s));
	long long r = -1;

	if (!s)
		return -1;
	if (procirq_read(s) == 0 && cpu >= 0 && cpu < s->ncpus)
		r = procirq_sum(s, rows, cpu, cpu + 1);
	free(s);
	return r;
}
