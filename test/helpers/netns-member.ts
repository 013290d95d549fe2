// One more namespace on an existing cluster's bridge (./netns.ts), for a process that is not a spegel-ts node: a Go
// libp2p peer with its own registry, a client, … It gets `<subnet>.<octet>` and `eth0`, like the nodes.
//
// The namespace is deleted by remove(), and as a last resort from a process 'exit' hook. Deleting the cluster first
// is fine too: its switch namespace takes the bridge end of the veth pair with it, and remove() still deletes ours.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { NetnsCluster, NetnsMember } from './netns.ts'
import { run } from './process.ts'
import { requireKnownTool } from './tools.ts'

export interface ExtraMember extends NetnsMember {
  /** Deletes the namespace (and with it the veth pair). Idempotent. */
  remove: () => Promise<void>
  [Symbol.asyncDispose]: () => Promise<void>
}

const live = new Set<string>()
let exitHookInstalled = false

/**
 * Adds a namespace `<cluster id>-<name>` joined to the cluster's bridge with address `<subnet>.<octet>`. The octet
 * must not be used by the cluster: nodes are 1..n, the upstream 100, the host link 254.
 */
export async function addClusterMember (cluster: NetnsCluster, name: string, octet: number): Promise<ExtraMember> {
  if (!/^[a-z0-9]{1,6}$/.test(name)) throw new Error(`member name must be 1-6 lowercase letters or digits, got ${JSON.stringify(name)}`)
  if (!Number.isInteger(octet) || octet < 1 || octet > 253 || octet === 100 || octet <= cluster.nodes.length) {
    throw new Error(`octet ${octet} is taken or invalid in ${cluster.subnet}`)
  }
  const ipBin = requireKnownTool('ip')
  const netns = `${cluster.id}-${name}`
  const address = cluster.subnet.replace(/\.0\/24$/, `.${octet}`)
  // Unique in the switch namespace (15 bytes at most).
  const port = `vx${octet}${randomBytes(2).toString('hex')}`
  const ip = async (...args: string[]): Promise<void> => { await run(ipBin, args, { timeoutMs: 20_000 }) }
  installExitHook()
  let removed = false
  const remove = async (): Promise<void> => {
    if (removed) return
    removed = true
    await run(ipBin, ['netns', 'del', netns], { allowNonZero: true, timeoutMs: 20_000 }).catch(() => {})
    live.delete(netns)
  }
  try {
    await ip('netns', 'add', netns)
    live.add(netns)
    await ip('-n', netns, 'link', 'set', 'lo', 'up')
    await ip('-n', cluster.switchNetns, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns)
    await ip('-n', cluster.switchNetns, 'link', 'set', port, 'master', 'br0')
    await ip('-n', cluster.switchNetns, 'link', 'set', port, 'up')
    await ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0')
    await ip('-n', netns, 'link', 'set', 'eth0', 'up')
  } catch (err) {
    await remove()
    throw err
  }
  return { netns, ip: address, iface: 'eth0', bridgePort: port, remove, [Symbol.asyncDispose]: remove }
}

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    const ip = requireKnownTool('ip')
    for (const ns of live) {
      try { execFileSync(ip, ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 }) } catch {}
    }
    live.clear()
  })
}
