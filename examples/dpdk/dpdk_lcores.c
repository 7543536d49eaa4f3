/* SPDX-License-Identifier: MIT */
/*
 * dpdk_lcores.c - libipimask inside a real DPDK EAL application.
 *
 * Worker lcores (rte_eal_remote_launch) forward packets on a net_null port
 * (rx burst, look the flow's route up in the lcore's route cache, tx burst)
 * and take per-packet metadata objects from an ipm_pcache backed by an
 * rte_mempool; they are IPM_MODE_POLL threads that call ipm_poll() once per
 * loop iteration.  The main lcore meanwhile, several times:
 *   - changes routes and invalidates them with an ipm_batch (one delivery per
 *     lcore per flush, whatever the number of keys), waiting (IPM_WAIT), then
 *     checks that no lcore still caches a changed route;
 *   - drains the lcores' metadata caches with ipm_pcache_drain() (the lcores
 *     are never interrupted) and checks the objects came back.
 *
 * Claims checked (exit 1 when one does not hold): packets were forwarded;
 * no lcore caches an invalidated route after a flush returned; the lcores
 * took no signal from the library (except escalations: an lcore descheduled
 * for longer than the poll deadline, 100 ms here); drains returned objects;
 * at the end every metadata object is back in its rte_mempool.
 *
 * Runs without hugepages or NICs:
 *   dpdk_lcores --no-huge -m 256 --no-pci --no-shconf --vdev=net_null0 \
 *               --lcores=0@0,1@1,2@1 -- [--seconds S]
 * (as root; main lcore on CPU 0, two worker lcores sharing CPU 1).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <ipimask.h>

#define NROUTES		1024
#define BURST		32
#define NMETA		4096
#define MAXLC		RTE_MAX_LCORE

struct lcore_state {
	int slot;
	unsigned queue;
	uint64_t rx, tx;
	/* route cache: cached[k] = version of route k seen, 0 = not cached */
	_Atomic uint32_t cached[NROUTES];
} __rte_cache_aligned;

static struct lcore_state *lc[MAXLC];
static _Atomic uint32_t route_version[NROUTES];	/* the truth; never 0 */
static _Atomic int quit;
static struct ipm_domain *routes;
static struct ipm_pcache *meta_cache;
static struct rte_mempool *meta_pool, *mbuf_pool;
static uint16_t port;

/* ipm_inval_t: runs in ipm_poll() on the lcore (or for it). */
static void route_inval(int slot, const uint64_t *keys, unsigned nkeys, void *ctx)
{
	(void)ctx;
	for (unsigned i = 0; i < MAXLC; i++) {
		struct lcore_state *s = lc[i];
		if (!s || s->slot != slot)
			continue;
		if (nkeys == 0)
			for (unsigned k = 0; k < NROUTES; k++)
				atomic_store_explicit(&s->cached[k], 0, memory_order_relaxed);
		for (unsigned j = 0; j < nkeys; j++)
			atomic_store_explicit(&s->cached[keys[j] % NROUTES], 0, memory_order_relaxed);
	}
}

/* pcache backing store: an rte_mempool without its own cache. */
static unsigned meta_refill(void *ctx, void **objs, unsigned n)
{
	(void)ctx;
	while (n > 0 && rte_mempool_get_bulk(meta_pool, objs, n) != 0)
		n /= 2;
	return n;
}

static void meta_release(void *ctx, void *const *objs, unsigned n)
{
	(void)ctx;
	rte_mempool_put_bulk(meta_pool, (void *const *)objs, n);
}

static const struct ipm_pcache_ops meta_ops = { meta_refill, meta_release };

static int lcore_main(void *arg)
{
	struct lcore_state *s = arg;
	struct rte_mbuf *pkts[BURST];
	void *meta[BURST];
	int ret;

	s->slot = ipm_thread_register();
	if (s->slot < 0) {
		fprintf(stderr, "lcore %u: ipm_thread_register: %s\n", rte_lcore_id(), strerror(-s->slot));
		return -1;
	}
	if ((ret = ipm_thread_set_mode(IPM_MODE_POLL)) != 0)
		return ret;
	ipm_domain_enter(routes);
	while (!atomic_load_explicit(&quit, memory_order_relaxed)) {
		ipm_poll();	/* one load when nothing is pending */
		uint16_t n = rte_eth_rx_burst(port, (uint16_t)s->queue, pkts, BURST);
		s->rx += n;
		for (uint16_t i = 0; i < n; i++) {
			/* the flow's route: hash of the buffer address, for the demo */
			unsigned k = (unsigned)(((uintptr_t)pkts[i] >> 6) % NROUTES);
			if (!atomic_load_explicit(&s->cached[k], memory_order_relaxed))
				atomic_store_explicit(&s->cached[k],
					atomic_load_explicit(&route_version[k], memory_order_acquire),
					memory_order_relaxed);
			meta[i] = ipm_pcache_get(meta_cache);
		}
		for (uint16_t i = 0; i < n; i++)
			if (meta[i])
				ipm_pcache_put(meta_cache, meta[i]);
		uint16_t sent = rte_eth_tx_burst(port, (uint16_t)s->queue, pkts, n);
		s->tx += sent;
		if (sent < n)
			rte_pktmbuf_free_bulk(&pkts[sent], n - sent);
	}
	ipm_domain_leave(routes);
	ipm_thread_unregister();
	return 0;
}

static int port_setup(unsigned nq)
{
	struct rte_eth_conf conf;
	int ret;

	memset(&conf, 0, sizeof(conf));
	if ((ret = rte_eth_dev_configure(port, (uint16_t)nq, (uint16_t)nq, &conf)) < 0)
		return ret;
	for (unsigned q = 0; q < nq; q++) {
		if ((ret = rte_eth_rx_queue_setup(port, (uint16_t)q, 256, (unsigned)rte_socket_id(),
						  NULL, mbuf_pool)) < 0)
			return ret;
		if ((ret = rte_eth_tx_queue_setup(port, (uint16_t)q, 256, (unsigned)rte_socket_id(),
						  NULL)) < 0)
			return ret;
	}
	return rte_eth_dev_start(port);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct ipm_config cfg = { .poll_deadline_us = 100000 };
	struct ipm_stats st0, st1;
	double seconds = 2.0;
	unsigned nworkers = 0, lcid, flushes = 0, drains = 0;
	uint64_t stale = 0, drained = 0, rx = 0, tx = 0, lib_interrupts = 0;
	int ret, fails = 0;

	/* Before rte_eal_init() creates the lcore threads (see ipm_init()). */
	if ((ret = ipm_init(&cfg)) != 0) {
		fprintf(stderr, "ipm_init: %s\n", strerror(-ret));
		return 1;
	}
	ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
		if (geteuid() != 0) {	/* the EAL wants root here */
			printf("SKIP: the DPDK EAL could not start as a non-root user\n");
			return 77;
		}
		return 1;
	}
	argc -= ret;
	argv += ret;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);

	RTE_LCORE_FOREACH_WORKER(lcid)
		nworkers++;
	if (nworkers == 0 || rte_eth_dev_count_avail() == 0) {
		fprintf(stderr, "dpdk_lcores: need >= 1 worker lcore and a port (--vdev=net_null0)\n");
		return 1;
	}
	port = 0;
	mbuf_pool = rte_pktmbuf_pool_create("mbufs", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
					    (int)rte_socket_id());
	meta_pool = rte_mempool_create("meta", NMETA, 64, 0, 0, NULL, NULL, NULL, NULL,
				       (int)rte_socket_id(), 0);
	routes = ipm_domain_create(route_inval, NULL);
	meta_cache = ipm_pcache_create(&meta_ops, NULL, 256, 32);
	struct ipm_batch *batch = routes ? ipm_batch_create(routes, 16) : NULL;
	if (!mbuf_pool || !meta_pool || !routes || !meta_cache || !batch) {
		fprintf(stderr, "dpdk_lcores: setup failed (%s)\n", rte_strerror(rte_errno));
		return 1;
	}
	if ((ret = port_setup(nworkers)) < 0) {
		fprintf(stderr, "port setup: %s\n", rte_strerror(-ret));
		return 1;
	}
	for (unsigned k = 0; k < NROUTES; k++)
		atomic_store(&route_version[k], 1);

	unsigned q = 0;
	RTE_LCORE_FOREACH_WORKER(lcid) {
		lc[lcid] = rte_zmalloc("lcore", sizeof(*lc[lcid]), RTE_CACHE_LINE_SIZE);
		if (!lc[lcid])
			return 1;
		lc[lcid]->slot = -1;
		lc[lcid]->queue = q++;
		rte_eal_remote_launch(lcore_main, lc[lcid], lcid);
	}
	printf("dpdk_lcores: main lcore %u, %u worker lcore(s) polling port %u (%s), %.1f s\n",
	       rte_get_main_lcore(), nworkers, port, "net_null", seconds);
	usleep(100000);
	ipm_stats_get(&st0);

	uint64_t t0 = now_ns();
	unsigned seed = 1;
	while (now_ns() - t0 < (uint64_t)(seconds * 1e9)) {
		uint32_t changed[16];
		/* change 16 routes, invalidate them in one flush */
		for (int i = 0; i < 16; i++) {
			seed = seed * 1103515245u + 12345u;
			changed[i] = (seed >> 8) % NROUTES;
			atomic_fetch_add(&route_version[changed[i]], 1);
			ipm_batch_add(batch, changed[i]);
		}
		if ((ret = ipm_batch_flush(batch, IPM_WAIT)) < 0) {
			fprintf(stderr, "ipm_batch_flush: %s\n", strerror(-ret));
			return 1;
		}
		flushes++;
		/* no lcore may hold an older version of a changed route */
		RTE_LCORE_FOREACH_WORKER(lcid)
			for (int i = 0; i < 16; i++) {
				uint32_t v = atomic_load(&lc[lcid]->cached[changed[i]]);
				stale += v != 0 && v < atomic_load(&route_version[changed[i]]);
			}
		if (flushes % 4 == 0) {
			drained += ipm_pcache_drain(meta_cache, NULL);
			drains++;
		}
		usleep(2000);
	}
	ipm_stats_get(&st1);
	RTE_LCORE_FOREACH_WORKER(lcid) {
		struct ipm_thread_stats ts;
		if (ipm_thread_stats_get(lc[lcid]->slot, &ts) == 0)
			lib_interrupts += ts.interrupts;
	}
	atomic_store(&quit, 1);
	rte_eal_mp_wait_lcore();
	RTE_LCORE_FOREACH_WORKER(lcid) {
		rx += lc[lcid]->rx;
		tx += lc[lcid]->tx;
		printf("  lcore %u (slot %d): rx %lu tx %lu\n", lcid, lc[lcid]->slot,
		       (unsigned long)lc[lcid]->rx, (unsigned long)lc[lcid]->tx);
	}
	ipm_batch_destroy(batch);
	ipm_domain_destroy(routes);
	ipm_pcache_destroy(meta_cache);
	unsigned avail = rte_mempool_avail_count(meta_pool);

	uint64_t esc = st1.escalations - st0.escalations;
	printf("  %u flushes of 16 routes, %u drains (%lu objects), library: %lu signals sent, "
	       "%lu escalations, %lu polled\n", flushes, drains, (unsigned long)drained,
	       (unsigned long)(st1.signals_sent - st0.signals_sent), (unsigned long)esc,
	       (unsigned long)(st1.polled - st0.polled));
#define CHECK(cond, ...) do { bool ok_ = (cond); printf("  [%s] ", ok_ ? "ok" : "FAIL"); \
		printf(__VA_ARGS__); putchar('\n'); fails += !ok_; } while (0)
	CHECK(rx > 0 && tx > 0, "lcores forwarded packets (rx %lu, tx %lu)", (unsigned long)rx,
	      (unsigned long)tx);
	CHECK(stale == 0, "no lcore cached a changed route after its flush returned (stale: %lu)",
	      (unsigned long)stale);
	CHECK(lib_interrupts <= esc, "lcores took %lu signals from the library (escalations: %lu)",
	      (unsigned long)lib_interrupts, (unsigned long)esc);
	CHECK(drains == 0 || drained > 0, "drains took back %lu objects without interrupting the lcores",
	      (unsigned long)drained);
	CHECK(avail == NMETA, "every metadata object back in its rte_mempool (%u of %d)", avail, NMETA);

	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
	ipm_fini();
	rte_eal_cleanup();
	printf("%s\n", fails ? "dpdk_lcores: FAILED" : "dpdk_lcores: all claims hold");
	return fails ? 1 : 0;
}
