// The real libp2p router against the shared Router conformance suite (4 routers on loopback addresses).
import { routerConformance } from '../../routing/conformance.ts'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'
import { closeAll, loopbackIp, startCluster } from '../../helpers/routing.ts'

routerConformance('Libp2pRouter', async () => {
  const started: Libp2pRouter[] = []
  try {
    // A short record TTL so the withdraw test sees records expire within seconds; re-provided ones outlive it.
    const routers = await startCluster(4, { providerTtlMs: 1_500, reprovideIntervalMs: 700, lookupCacheTtlMs: 300 }, started)
    return {
      routers,
      addressesOf: (r) => [loopbackIp(routers.indexOf(r as Libp2pRouter))],
      close: async () => { await closeAll(started) },
    }
  } catch (err) {
    await closeAll(started)
    throw err
  }
}, { expireWithinMs: 15_000 })
