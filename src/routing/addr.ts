import { isIP } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { parseHostPort } from '../util/addr.ts'
import type { Multiaddr } from '@multiformats/multiaddr'

/**
 * TCP listen multiaddrs for `--router-addr`: an IP literal listens on that IP; an empty host or a hostname listens
 * on both `/ip6/::` and `/ip4/0.0.0.0` (as Spegel; libp2p-tcp binds `::` IPv6-only, so both can share the port).
 */
export function routerListenAddrs (addr: string): string[] {
  const { host, port } = parseHostPort(addr)
  switch (isIP(host)) {
    case 4: return [`/ip4/${host}/tcp/${port}`]
    case 6: return [`/ip6/${host}/tcp/${port}`]
    default: return [`/ip6/::/tcp/${port}`, `/ip4/0.0.0.0/tcp/${port}`]
  }
}

/** The IP of an `/ip4/…` or `/ip6/…` multiaddr, undefined for DNS names and other forms. */
export function multiaddrIp (ma: Multiaddr | string): string | undefined {
  const first = (typeof ma === 'string' ? multiaddr(ma) : ma).getComponents()[0]
  if (first === undefined || (first.name !== 'ip4' && first.name !== 'ip6')) return undefined
  return first.value
}

export function isLoopbackIp (ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip.startsWith('::ffff:127.')
}

/** fe80::/10 addresses need a zone to be dialled, useless to other nodes. */
export function isLinkLocalIp (ip: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(ip) || ip.startsWith('169.254.')
}

/** Whether an IP may be handed to other nodes: never link-local, loopback only when allowed (tests). */
export function isShareableIp (ip: string, allowLoopback: boolean): boolean {
  if (isLinkLocalIp(ip)) return false
  if (ip === '0.0.0.0' || ip === '::') return false
  return allowLoopback || !isLoopbackIp(ip)
}

/** Unique shareable IPs of a list of multiaddrs, in order. */
export function uniqueIps (addrs: Iterable<Multiaddr>, allowLoopback: boolean): string[] {
  const ips: string[] = []
  for (const ma of addrs) {
    const ip = multiaddrIp(ma)
    if (ip !== undefined && isShareableIp(ip, allowLoopback) && !ips.includes(ip)) ips.push(ip)
  }
  return ips
}
