import { isIPv6 } from 'node:net'

/** An address or endpoint is not `host:port` (the host may be empty, an IPv6 host is in brackets). */
export class InvalidAddressError extends Error {
  readonly value: string

  constructor (value: string, reason: string) {
    super(`invalid address ${JSON.stringify(value)}: ${reason}`)
    this.name = 'InvalidAddressError'
    this.value = value
  }
}

export interface HostPort {
  /** Host without brackets; '' (from `:port`) means every address (IPv4 and IPv6). */
  host: string
  port: number
}

/** A parsed listen address (`--registry-addr`, `--metrics-addr`). */
export type ListenAddress = HostPort

/**
 * Splits `host:port` like Go's net.SplitHostPort: `:8080`, `0.0.0.0:8080`, `name:8080`, `[::1]:8080`. The port must be
 * a number 0–65535 (0 lets the system choose, for tests); a bracketed host must be an IPv6 address.
 */
export function parseHostPort (value: string): HostPort {
  let host: string
  let port: string
  if (value.startsWith('[')) {
    const match = /^\[([^\]]*)\]:([^:]*)$/.exec(value)
    if (match === null) {
      throw new InvalidAddressError(value, 'expected [ipv6]:port')
    }
    host = match[1] ?? ''
    port = match[2] ?? ''
    if (!isIPv6(host)) {
      throw new InvalidAddressError(value, 'invalid IPv6 address')
    }
  } else {
    const colon = value.lastIndexOf(':')
    if (colon === -1) {
      throw new InvalidAddressError(value, 'missing port')
    }
    host = value.slice(0, colon)
    port = value.slice(colon + 1)
    if (host.includes(':')) {
      throw new InvalidAddressError(value, 'IPv6 address must be enclosed in brackets')
    }
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) {
    throw new InvalidAddressError(value, 'invalid port')
  }
  return { host, port: Number(port) }
}

/** `host:port` with brackets around an IPv6 host, for URLs and logs. */
export function joinHostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Parses a Go-style listen address (`:5000`, `0.0.0.0:5000`, `[::1]:5000`); surrounding blanks are ignored. */
export function parseListenAddress (addr: string): ListenAddress {
  return parseHostPort(addr.trim())
}

/** Options for net.Server#listen / fastify.listen; '' binds the IPv6 wildcard, which also accepts IPv4. */
export function listenOptions (addr: ListenAddress): { host: string, port: number } {
  return { host: addr.host === '' ? '::' : addr.host, port: addr.port }
}
