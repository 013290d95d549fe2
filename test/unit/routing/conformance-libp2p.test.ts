import { routerConformance } from '../../routing/conformance.ts'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'
import { closeAll, loopbackIp, startCluster } from './helpers.ts'

const providerTtlMs = 1_500
const reprovideIntervalMs = 700
const lookupCacheTtlMs = 300

routerConformance('Libp2pRouter', async () => {
  const started: Libp2pRouter[] = []
  try {
    const routers = await startCluster(4, { providerTtlMs, reprovideIntervalMs, lookupCacheTtlMs }, started)
    return {
      routers,
      addressesOf: (r) => [loopbackIp(routers.indexOf(r as Libp2pRouter))],
      // Record TTL + one cleanup tick (TTL - reprovide) / 2 + lookup cache + slack.
      expire: async () => { await new Promise((resolve) => setTimeout(resolve, providerTtlMs + 400 + lookupCacheTtlMs + 500)) },
      close: async () => { await closeAll(started) },
    }
  } catch (err) {
    await closeAll(started)
    throw err
  }
})
