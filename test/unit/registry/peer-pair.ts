// Two registries on loopback addresses sharing one port number (a peer's registry port is ours, as in Spegel): `peer`
// serves a MemoryStore and advertises its keys in a MemoryNetwork; `node` holds nothing and serves through a
// PeerMirror that finds `peer` there. Used by the tests that need real sockets between a node and its peer.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import type { FastifyInstance } from 'fastify'
import type { Metrics } from '../../../src/metrics/index.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { PeerMirror } from '../../../src/registry/mirror.ts'
import type { TagConfirmer } from '../../../src/registry/upstream.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore } from '../../../src/store/index.ts'

export interface PeerPair {
  /** The port both registries listen on. */
  port: number
  /** `http://<node ip>:<port>` and `http://<peer ip>:<port>`. */
  nodeUrl: string
  peerUrl: string
  nodeIp: string
  peerIp: string
  mirror: PeerMirror
  close: () => Promise<void>
}

/**
 * Starts the pair on 127.0.<subnet>.1 (node) and 127.0.<subnet>.2 (peer); the peer advertises `keys`; `metrics` are the
 * node's, and so are `nodeStore` (default: an empty one) and `tags` (the node's mirror confirms tags with it);
 * `redirect` runs the node with --peer-redirect.
 */
export async function startPeerPair (store: MemoryStore, keys: readonly string[], options: { subnet: number, resolveTimeoutMs?: number, metrics?: Metrics, nodeStore?: MemoryStore, tags?: TagConfirmer, redirect?: boolean }): Promise<PeerPair> {
  const logger = pino({ level: 'silent' })
  const nodeIp = `127.0.${options.subnet}.1`
  const peerIp = `127.0.${options.subnet}.2`
  const network = new MemoryNetwork()
  await new MemoryRouter(network, { id: 'peer', addresses: [peerIp] }).advertise([...keys])
  const peer: FastifyInstance = createRegistryApp({ store, logger })
  await peer.listen({ host: peerIp, port: 0 })
  const port = (peer.server.address() as AddressInfo).port
  const mirror = new PeerMirror({
    router: new MemoryRouter(network, { id: 'node', addresses: [nodeIp] }),
    registryPort: port,
    logger,
    resolveTimeoutMs: options.resolveTimeoutMs ?? 100,
    ...(options.tags !== undefined ? { tags: options.tags } : {}),
    ...(options.metrics !== undefined ? { metrics: options.metrics } : {}),
  })
  const node: FastifyInstance = createRegistryApp({
    store: options.nodeStore ?? new MemoryStore(),
    logger,
    mirror,
    ...(options.metrics !== undefined ? { metrics: options.metrics } : {}),
    ...(options.redirect === true ? { locate: async (path, signal) => await mirror.locate(path, signal) } : {}),
  })
  await node.listen({ host: nodeIp, port })
  return {
    port,
    nodeUrl: `http://${nodeIp}:${port}`,
    peerUrl: `http://${peerIp}:${port}`,
    nodeIp,
    peerIp,
    mirror,
    close: async () => {
      mirror.close()
      await node.close()
      await peer.close()
    },
  }
}
