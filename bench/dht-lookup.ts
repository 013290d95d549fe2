/**
 * Lookup latency on an in-process DHT of N libp2p routers on loopback (default 50).
 *   node bench/dht-lookup.ts [nodes] [lookups]
 * Reports time to the first provider and to the end of the lookup, p50/p99, for:
 *   cold   - first lookup of a key by a node (DHT query, connections mostly new),
 *   warm   - the same lookup repeated at once (answered by the 5 s lookup cache),
 *   query  - the cold lookups again after the cache expired (DHT query over established connections).
 * All nodes share one process (and its cores), so absolute numbers are pessimistic for real clusters. Lookups are
 * measured in steady state: after the last post-join exploration (60 s after start, as in production) and once the
 * process is quiet (below 15 % of a core for 2 s), both before publishing and before measuring.
 */
import { performance } from 'node:perf_hooks'
import type { Libp2pRouter } from '../src/routing/libp2p.ts'
import { closeAll, startCluster } from '../test/helpers/routing.ts'
import { waitFor } from '../test/helpers/wait.ts'
import { quantile } from './stats.ts'

const nodes = Number(process.argv[2] ?? 50)
const lookups = Number(process.argv[3] ?? 200)

const pct = (values: number[], p: number): number => quantile(values, p / 100)

async function measure (router: Libp2pRouter, key: string): Promise<{ first: number, end: number, found: number }> {
  const start = performance.now()
  let first = NaN
  let found = 0
  for await (const _ of router.lookup(key, { count: 3 })) {
    if (found++ === 0) first = performance.now() - start
  }
  return { first, end: performance.now() - start, found }
}

function report (name: string, rows: Array<{ first: number, end: number, found: number }>): void {
  const firsts = rows.map((r) => r.first).filter((v) => !Number.isNaN(v))
  const ends = rows.map((r) => r.end)
  const f = (v: number): string => v.toFixed(1).padStart(7)
  console.log(`${name.padEnd(6)} n=${rows.length} found=${firsts.length}  first provider p50 ${f(pct(firsts, 50))} ms p99 ${f(pct(firsts, 99))} ms | lookup end p50 ${f(pct(ends, 50))} ms p99 ${f(pct(ends, 99))} ms`)
}

/** Waits until this process used less than 15 % of a core over 2 s; returns the time waited. */
async function quiet (maxMs = 240_000): Promise<number> {
  const began = performance.now()
  while (performance.now() - began < maxMs) {
    const u0 = process.cpuUsage()
    const t = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    const u = process.cpuUsage(u0)
    if ((u.user + u.system) / 1000 / (performance.now() - t) < 0.15) break
  }
  return performance.now() - began
}

const started: Libp2pRouter[] = []
try {
  const t0 = performance.now()
  const routers = await startCluster(nodes, {}, started)
  await waitFor(() => routers.every((r) => r.ready()), { timeoutMs: 60_000, what: 'all routers ready' })
  console.log(`${nodes} nodes started and ready in ${(performance.now() - t0).toFixed(0)} ms`)
  // The last exploration after joining runs 60 s after start (exploreAfterJoinMs).
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 62_000 - (performance.now() - t0))))
  console.log(`quiet after ${((performance.now() - t0 + await quiet()) / 1000).toFixed(0)} s`)
  // A fifth of the nodes (at least one, at most ten) hold keys; the others look them up.
  const providerCount = Math.max(1, Math.min(10, Math.floor(nodes / 5)))
  const providers = routers.slice(0, providerCount)
  const keys: string[] = []
  const t1 = performance.now()
  await Promise.all(providers.map(async (r, i) => {
    const own = Array.from({ length: 5 }, (_, k) => `sha256:bench-${i}-${k}`)
    keys.push(...own)
    await r.advertise(own)
    await r.idle()
  }))
  console.log(`${keys.length} keys advertised and published in ${(performance.now() - t1).toFixed(0)} ms; quiet ${(await quiet() / 1000).toFixed(0)} s later`)
  const pairs = Array.from({ length: lookups }, (_, i) => ({ router: routers[providerCount + (i % (nodes - providerCount))] as Libp2pRouter, key: keys[(i * 7) % keys.length] as string }))

  // cold: first lookup of a key by a node; warm: the same lookup right after (5 s cache window).
  const cold = []
  const warm = []
  for (const { router, key } of pairs) {
    cold.push(await measure(router, key))
    warm.push(await measure(router, key))
  }
  report('cold', cold)
  report('warm', warm)
  await new Promise((resolve) => setTimeout(resolve, 5_500)) // let the caches expire
  const query = []
  for (const { router, key } of pairs) query.push(await measure(router, key))
  report('query', query)
} finally {
  await closeAll(started)
}
