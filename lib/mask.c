/* SPDX-License-Identifier: MIT */
/*
 * mask.c - sets of slots.  A mask is sized for the max_threads of the
 * ipm_init() it was allocated under; operations on slots beyond its size
 * are ignored (set/clear) or false (test).
 */
#include <string.h>

#include "internal.h"

#define WORD(slot)	((unsigned)(slot) / IPM_BITS_PER_LONG)
#define BIT(slot)	(1ul << ((unsigned)(slot) % IPM_BITS_PER_LONG))

static inline unsigned mask_words(const struct ipm_mask *m)
{
	return (m->nbits + IPM_BITS_PER_LONG - 1) / IPM_BITS_PER_LONG;
}

ipm_mask_t *ipm_mask_alloc(void)
{
	struct ipm_mask *m;

	if (!_ipm_ready())
		return NULL;
	m = calloc(1, sizeof(*m) + _ipm_lib.mask_words * sizeof(unsigned long));
	if (m)
		m->nbits = _ipm_lib.max_threads;
	return m;
}

void ipm_mask_free(ipm_mask_t *m)
{
	free(m);
}

static inline bool in_range(const struct ipm_mask *m, int slot)
{
	return m && slot >= 0 && (unsigned)slot < m->nbits;
}

void ipm_mask_set(ipm_mask_t *m, int slot)
{
	if (in_range(m, slot))
		m->bits[WORD(slot)] |= BIT(slot);
}

void ipm_mask_clear(ipm_mask_t *m, int slot)
{
	if (in_range(m, slot))
		m->bits[WORD(slot)] &= ~BIT(slot);
}

bool ipm_mask_test(const ipm_mask_t *m, int slot)
{
	return in_range(m, slot) && (m->bits[WORD(slot)] & BIT(slot));
}

void ipm_mask_zero(ipm_mask_t *m)
{
	if (m)
		memset(m->bits, 0, mask_words(m) * sizeof(unsigned long));
}

unsigned ipm_mask_weight(const ipm_mask_t *m)
{
	unsigned i, w = 0;

	if (!m)
		return 0;
	for (i = 0; i < mask_words(m); i++)
		w += (unsigned)__builtin_popcountl(m->bits[i]);
	return w;
}

int ipm_mask_next(const ipm_mask_t *m, int prev)
{
	unsigned start, i;
	unsigned long word;

	if (!m || prev < -1)
		return -1;
	start = (unsigned)(prev + 1);
	if (start >= m->nbits)
		return -1;
	i = WORD(start);
	word = m->bits[i] & (~0ul << (start % IPM_BITS_PER_LONG));
	for (;;) {
		if (word) {
			unsigned s = i * IPM_BITS_PER_LONG + (unsigned)__builtin_ctzl(word);

			return s < m->nbits ? (int)s : -1;
		}
		if (++i >= mask_words(m))
			return -1;
		word = m->bits[i];
	}
}

/* Registered slots now; read under RCU so the records stay valid. */
void ipm_mask_fill(ipm_mask_t *m)
{
	unsigned s, n;

	if (!m || !_ipm_ready())
		return;
	ipm_mask_zero(m);
	n = m->nbits < _ipm_lib.max_threads ? m->nbits : _ipm_lib.max_threads;
	_ipm_rcu_read_lock();
	for (s = 0; s < n; s++)
		if (_ipm_slot_deref(s))
			m->bits[WORD(s)] |= BIT(s);
	_ipm_rcu_read_unlock();
}

int ipm_mask_set_node(ipm_mask_t *m, int node)
{
	unsigned s, n;
	int added = 0;

	if (!_ipm_ready())
		return -EPERM;
	if (!m || node < 0)
		return -EINVAL;
	n = m->nbits < _ipm_lib.max_threads ? m->nbits : _ipm_lib.max_threads;
	_ipm_rcu_read_lock();
	for (s = 0; s < n; s++) {
		struct ipm_thread *t = _ipm_slot_deref(s);

		if (t && IPM_LOAD(&t->node) == node && !(m->bits[WORD(s)] & BIT(s))) {
			m->bits[WORD(s)] |= BIT(s);
			added++;
		}
	}
	_ipm_rcu_read_unlock();
	return added;
}
