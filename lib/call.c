/* SPDX-License-Identifier: MIT */
/*
 * call.c - ipm_on_each_thread_mask/_cond/_cond_mask, ipm_on_thread and
 * ipm_call_async: choosing the targets, then handing each one its work
 * (delivery.c) and waiting (request.c).
 */
#include <string.h>

#include "internal.h"

#define IPM_CALL_FLAGS	(IPM_WAIT | IPM_SELF | IPM_REMOTE)
#define STACK_WORKS	8	/* synchronous calls up to this many targets allocate nothing */
#define STACK_TARGETS	64	/* cond target sets up to this size live on the stack */

/* A synchronous request with room for STACK_WORKS targets, on the stack. */
struct stack_req {
	_Alignas(IPM_CACHELINE) unsigned char room[sizeof(struct ipm_req) +
						   STACK_WORKS * sizeof(struct ipm_work)];
};

struct call {
	const struct ipm_mask *mask;	/* NULL: every registered thread */
	ipm_cond_t cond;		/* NULL: no condition */
	ipm_func_t func;
	void *info;
	unsigned flags;
	struct ipm_req **async;		/* ipm_call_async() */
};

static unsigned slot_limit(const struct ipm_mask *m)
{
	return m && m->nbits < _ipm_lib.max_threads ? m->nbits : _ipm_lib.max_threads;
}

static inline bool slot_in(const struct ipm_mask *m, unsigned s)
{
	return !m || (m->bits[s / IPM_BITS_PER_LONG] & (1ul << (s % IPM_BITS_PER_LONG)));
}

/* Next candidate slot >= @s, or the limit. */
static unsigned next_candidate(const struct ipm_mask *m, unsigned s, unsigned limit)
{
	int n;

	if (s >= limit || !m)
		return s >= limit ? limit : s;
	n = ipm_mask_next(m, (int)s - 1);
	return (n < 0 || (unsigned)n >= limit) ? limit : (unsigned)n;
}

static struct ipm_req *req_for(const struct call *c, unsigned nwork, struct stack_req *stack)
{
	struct ipm_req *r;

	if (c->async || !(c->flags & IPM_WAIT)) {
		r = _ipm_req_alloc(nwork, IPM_REQ_REFCOUNTED);
	} else if (nwork <= STACK_WORKS) {
		r = (struct ipm_req *)(void *)stack->room;
		memset(r, 0, sizeof(*r));
		r->owner = IPM_REQ_STACK;
		r->nwork = nwork;
	} else {
		r = _ipm_req_alloc(nwork, IPM_REQ_HEAP_WAIT);
	}
	if (r) {
		_ipm_req_start(r, c->func, c->info, c->flags);
		if (c->async)
			r->refs++;	/* the handle */
	}
	return r;
}

/* After sending: wait, hand out the handle, or let it go. */
static int finish(const struct call *c, struct ipm_req *r, int delivered)
{
	int err = 0;

	if (c->async) {
		*c->async = r;
	} else if (c->flags & IPM_WAIT) {
		err = _ipm_req_wait(r, -1);
		if (r->owner == IPM_REQ_HEAP_WAIT)
			_ipm_req_free(r);
	}
	_ipm_count(IPM_C_CALLS, 1);
	_ipm_count(IPM_C_DELIVERIES, (uint64_t)delivered);
	return err ? err : delivered;
}

static int check_call(const struct call *c)
{
	if (!_ipm_ready())
		return -EPERM;
	if (!c->func || (c->flags & ~IPM_CALL_FLAGS))
		return -EINVAL;
	if (c->async && (c->flags & IPM_WAIT))
		return -EINVAL;
	return 0;
}

/* IPM_SELF: the caller runs func first, directly, when it is a target. */
static bool run_self(const struct call *c, struct ipm_thread *me)
{
	if (!(c->flags & IPM_SELF) || !me || !slot_in(c->mask, (unsigned)me->slot) ||
	    (unsigned)me->slot >= slot_limit(c->mask))
		return false;
	if (c->cond && !c->cond(me->slot, c->info))
		return false;
	c->func(me->slot, c->info);
	return true;
}

static int send_many(const struct call *c)
{
	struct ipm_thread *stack_targets[STACK_TARGETS], **tg = stack_targets;
	struct ipm_thread *me = _ipm_self();
	unsigned limit = slot_limit(c->mask), cap, n = 0, skipped = 0, s, i;
	struct stack_req stack;
	bool fallback = false;
	struct ipm_req *r;
	int self = 0;

	_ipm_reap_zombies();
	if (run_self(c, me))
		self = 1;

	_ipm_rcu_read_lock();
	/* Upper bound of the targets; threads registering from now on are
	 * not targets of this call. */
	cap = c->mask ? ipm_mask_weight(c->mask) : IPM_LOAD(&_ipm_lib.nregistered);

	if (c->cond) {
		/* The target set, in caller-local storage (seed 001). */
		if (cap > STACK_TARGETS) {
			tg = _ipm_malloc(cap * sizeof(*tg));
			if (!tg) {
				/* Fall back to every candidate, like the
				 * kernel's on_each_cpu() fallback. */
				fallback = true;
				_ipm_count(IPM_C_MASK_FALLBACKS, 1);
			}
		}
		if (!fallback) {
			for (s = next_candidate(c->mask, 0, limit); s < limit && n < cap;
			     s = next_candidate(c->mask, s + 1, limit)) {
				struct ipm_thread *t = _ipm_slot_deref(s);

				if (!t || t == me)
					continue;
				if (!c->cond((int)s, c->info)) {
					skipped++;
					continue;
				}
				tg[n++] = t;
			}
			cap = n;
		}
	}

	r = req_for(c, cap, &stack);
	if (!r) {
		_ipm_rcu_read_unlock();
		if (tg != stack_targets)
			free(tg);
		return -ENOMEM;
	}

	n = 0;
	if (c->cond && !fallback) {
		for (i = 0; i < cap; i++) {
			r->work[n].req = r;
			_ipm_deliver(tg[i], &r->work[n++]);
		}
	} else {
		for (s = next_candidate(c->mask, 0, limit); s < limit && n < cap;
		     s = next_candidate(c->mask, s + 1, limit)) {
			struct ipm_thread *t = _ipm_slot_deref(s);

			if (!t || t == me)
				continue;
			r->work[n].req = r;
			_ipm_deliver(t, &r->work[n++]);
		}
	}
	_ipm_req_sent(r, n);
	_ipm_rcu_read_unlock();

	if (tg != stack_targets)
		free(tg);
	if (skipped)
		_ipm_count(IPM_C_COND_SKIPPED, skipped);
	return finish(c, r, (int)n + self);
}

int ipm_on_each_thread_mask(const ipm_mask_t *mask, ipm_func_t func, void *info,
			    unsigned flags)
{
	struct call c = { .mask = mask, .func = func, .info = info, .flags = flags };
	int ret = check_call(&c);

	if (ret)
		return ret;
	if (!mask)
		return -EINVAL;
	return send_many(&c);
}

int ipm_on_each_thread_cond_mask(ipm_cond_t cond, ipm_func_t func, void *info,
				 unsigned flags, const ipm_mask_t *mask)
{
	struct call c = { .mask = mask, .cond = cond, .func = func, .info = info,
			  .flags = flags };
	int ret = check_call(&c);

	if (ret)
		return ret;
	if (!cond)
		return -EINVAL;
	return send_many(&c);
}

int ipm_on_each_thread_cond(ipm_cond_t cond, ipm_func_t func, void *info, unsigned flags)
{
	return ipm_on_each_thread_cond_mask(cond, func, info, flags, NULL);
}

int ipm_call_async(struct ipm_req **req, const ipm_mask_t *mask, ipm_func_t func,
		   void *info, unsigned flags)
{
	struct call c = { .mask = mask, .func = func, .info = info, .flags = flags,
			  .async = req };
	int ret;

	if (req)
		*req = NULL;
	ret = check_call(&c);
	if (ret)
		return ret;
	if (!req || !mask)
		return -EINVAL;
	return send_many(&c);
}

/* The one-target fast path: no mask walk, no target set. */
int ipm_on_thread(int slot, ipm_func_t func, void *info, unsigned flags)
{
	struct call c = { .func = func, .info = info, .flags = flags };
	struct ipm_thread *me, *t;
	struct stack_req stack;
	struct ipm_req *r;
	int ret = check_call(&c);

	if (ret)
		return ret;
	if (slot < 0 || (unsigned)slot >= _ipm_lib.max_threads)
		return -EINVAL;
	me = _ipm_self();
	if (me && me->slot == slot) {
		if (!(flags & IPM_SELF))
			return 0;
		func(slot, info);
		_ipm_count(IPM_C_CALLS, 1);
		_ipm_count(IPM_C_DELIVERIES, 1);
		return 1;
	}
	_ipm_reap_zombies();
	_ipm_rcu_read_lock();
	t = _ipm_slot_deref((unsigned)slot);
	if (!t) {
		_ipm_rcu_read_unlock();
		return -ENOENT;
	}
	r = req_for(&c, 1, &stack);
	if (!r) {
		_ipm_rcu_read_unlock();
		return -ENOMEM;
	}
	r->work[0].req = r;
	_ipm_deliver(t, &r->work[0]);
	_ipm_req_sent(r, 1);
	_ipm_rcu_read_unlock();
	return finish(&c, r, 1);
}
