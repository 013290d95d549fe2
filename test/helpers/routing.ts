// Real libp2p routers on loopback addresses for routing tests and bench/dht-lookup.ts.
import { pino } from 'pino'
import { StaticBootstrapper } from '../../src/routing/bootstrap.ts'
import type { Bootstrapper } from '../../src/routing/bootstrap.ts'
import { Libp2pRouter } from '../../src/routing/libp2p.ts'
import type { Libp2pRouterOptions } from '../../src/routing/libp2p.ts'

export const quietLogger = pino({ level: process.env.ROUTING_TEST_LOG ?? 'silent' })

/** Node i listens on its own loopback IP, so tests can check that the right addresses are reported. */
export const loopbackIp = (i: number): string => `127.0.${Math.floor(i / 250)}.${(i % 250) + 2}`

export type RouterOverrides = Partial<Omit<Libp2pRouterOptions, 'logger' | 'bootstrapper'>>

export async function startRouter (ip: string, bootstrapper: Bootstrapper, overrides: RouterOverrides = {}): Promise<Libp2pRouter> {
  return await Libp2pRouter.create({
    listenAddr: `${ip}:0`,
    allowLoopback: true,
    logger: quietLogger,
    bootstrapper,
    ...overrides,
  })
}

/**
 * n routers: the first bootstraps from nobody, the others from the first one's address without a peer id
 * (as DNS bootstrap does). Returned routers must be closed by the caller (closeAll), also on failure.
 */
export async function startCluster (n: number, overrides: RouterOverrides = {}, started: Libp2pRouter[] = []): Promise<Libp2pRouter[]> {
  const first = await startRouter(loopbackIp(0), new StaticBootstrapper([]), overrides)
  started.push(first)
  const seed = `/ip4/${loopbackIp(0)}/tcp/${tcpPort(first)}`
  const rest = await Promise.all(Array.from({ length: n - 1 }, async (_, i) => {
    const r = await startRouter(loopbackIp(i + 1), new StaticBootstrapper([seed]), overrides)
    started.push(r)
    return r
  }))
  return [first, ...rest]
}

export function tcpPort (router: Libp2pRouter): number {
  const m = /\/tcp\/(\d+)/.exec(router.multiaddrs()[0] ?? '')
  if (m === null) throw new Error(`router has no tcp address: ${router.multiaddrs().join(', ')}`)
  return Number(m[1])
}

export async function closeAll (routers: Libp2pRouter[]): Promise<void> {
  await Promise.allSettled(routers.map(async (r) => await r.close()))
}
