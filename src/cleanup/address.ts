import { isIPv6 } from 'node:net'
import { InvalidAddressError } from './errors.ts'

export interface HostPort {
  /** Host without brackets; empty for `:port`. */
  host: string
  port: number
}

/**
 * Splits `host:port` like Go's net.SplitHostPort: `:8080`, `0.0.0.0:8080`, `name:8080`, `[::1]:8080`. The port must be
 * a number 0–65535 (0 lets the system choose, for tests).
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
