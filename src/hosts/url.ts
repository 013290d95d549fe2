import { isIPv6 } from 'node:net'
import { InvalidRegistryUrlError, MirrorTargetsRequiredError } from './errors.ts'

/** Values of `--mirrored-registries` that mean "every registry" (containerd's `_default` host directory). */
export const wildcardRegistries: readonly string[] = ['_default', '*']
/** containerd's host directory for registries without their own directory. */
export const defaultHostDirectory = '_default'

/**
 * A validated registry URL. `host` is the authority exactly as given (`foo.bar:5000`, `[fc00::2]:30020`): it names
 * the containerd host directory, which containerd looks up by the registry host as written in image references, so it
 * must not be normalised (no lowercasing, no default-port removal).
 */
export interface RegistryUrl {
  /** True for `_default` / `*`; then `host` is `_default` and `href` is empty. */
  wildcard: boolean
  scheme: 'http' | 'https' | ''
  host: string
  /** `scheme://host` without a trailing slash, as Go's url.URL.String() prints it. */
  href: string
}

const wildcardRegistryUrl: RegistryUrl = Object.freeze({ wildcard: true, scheme: '', host: defaultHostDirectory, href: '' })

// Scheme per RFC 3986; Go lowercases it, so do we.
const schemePattern = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s
const bracketedHostPattern = /^\[([^\]]+)\](?::([^:]*))?$/
const plainHostPattern = /^([^:]*)(?::([^:]*))?$/
// Registry hosts are DNS names or IPv4 addresses; `_` is accepted because Go's url.Parse accepts it and some internal
// names use it.
const hostnamePattern = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/

/**
 * Parses one `http(s)://host[:port]` URL the way Spegel validates registry URLs: http or https only, a host is
 * required, and there must be no path (not even `/`), query, fragment or userinfo.
 */
export function parseRegistryUrl (value: string): RegistryUrl {
  const match = schemePattern.exec(value)
  if (match === null) {
    throw new InvalidRegistryUrlError(value, 'scheme must be http or https')
  }
  const scheme = (match[1] ?? '').toLowerCase()
  if (scheme !== 'http' && scheme !== 'https') {
    throw new InvalidRegistryUrlError(value, 'scheme must be http or https')
  }
  const rest = match[2] ?? ''
  const end = rest.search(/[/?#]/)
  const authority = end === -1 ? rest : rest.slice(0, end)
  const remainder = end === -1 ? '' : rest.slice(end)
  if (remainder.startsWith('/')) {
    throw new InvalidRegistryUrlError(value, 'path has to be empty')
  }
  if (remainder.startsWith('?')) {
    throw new InvalidRegistryUrlError(value, 'query has to be empty')
  }
  if (remainder.startsWith('#')) {
    throw new InvalidRegistryUrlError(value, 'fragment has to be empty')
  }
  if (authority.includes('@')) {
    throw new InvalidRegistryUrlError(value, 'user has to be empty')
  }
  if (authority === '') {
    throw new InvalidRegistryUrlError(value, 'host is required')
  }
  validateAuthority(value, authority)
  if (authority.startsWith('_backup')) {
    // The host names a directory next to our backup; these names are ours.
    throw new InvalidRegistryUrlError(value, 'host name is reserved')
  }
  return { wildcard: false, scheme, host: authority, href: `${scheme}://${authority}` }
}

function validateAuthority (value: string, authority: string): void {
  let port: string | undefined
  if (authority.startsWith('[')) {
    const bracketed = bracketedHostPattern.exec(authority)
    if (bracketed === null || !isIPv6(bracketed[1] ?? '')) {
      throw new InvalidRegistryUrlError(value, 'invalid IPv6 host')
    }
    port = bracketed[2]
  } else {
    const plain = plainHostPattern.exec(authority)
    if (plain === null) {
      throw new InvalidRegistryUrlError(value, 'IPv6 host must be enclosed in brackets')
    }
    if (!hostnamePattern.test(plain[1] ?? '')) {
      throw new InvalidRegistryUrlError(value, 'invalid host')
    }
    port = plain[2]
  }
  if (port !== undefined) {
    const number = /^[0-9]{1,5}$/.test(port) ? Number(port) : NaN
    if (!(number >= 1 && number <= 65535)) {
      throw new InvalidRegistryUrlError(value, 'invalid port')
    }
  }
}

/**
 * Brackets an unbracketed IPv6 host (`http://fc00::2:30020` → `http://[fc00::2]:30020`). The Helm chart builds the
 * first mirror target from `$(NODE_IP)`, which is a bare address on IPv6 nodes. As in Spegel the last `:` group is
 * taken to be the port; the value is left alone unless what precedes it is a valid IPv6 address.
 */
export function encapsulateIPv6Host (rawUrl: string): string {
  const schemeEnd = rawUrl.indexOf('://')
  if (schemeEnd === -1) {
    return rawUrl
  }
  const rest = rawUrl.slice(schemeEnd + 3)
  const slash = rest.indexOf('/')
  const host = slash === -1 ? rest : rest.slice(0, slash)
  const colons = host.split(':').length - 1
  if (colons < 2 || host.includes('[')) {
    return rawUrl
  }
  const lastColon = host.lastIndexOf(':')
  const ip = host.slice(0, lastColon)
  if (!isIPv6(ip)) {
    return rawUrl
  }
  return `${rawUrl.slice(0, schemeEnd + 3)}[${ip}]${host.slice(lastColon)}${slash === -1 ? '' : rest.slice(slash)}`
}

/**
 * Parses `--mirrored-registries`. An empty list means every registry (`_default`); `_default` or `*` may appear at
 * most once and yields the wildcard entry.
 */
export function parseMirroredRegistries (values: readonly string[]): RegistryUrl[] {
  if (values.length === 0) {
    return [wildcardRegistryUrl]
  }
  const result: RegistryUrl[] = []
  let hasWildcard = false
  for (const value of values) {
    if (wildcardRegistries.includes(value)) {
      if (hasWildcard) {
        throw new InvalidRegistryUrlError(value, 'registries should not contain two wildcards')
      }
      hasWildcard = true
      result.push(wildcardRegistryUrl)
      continue
    }
    result.push(parseRegistryUrl(value))
  }
  return result
}

/**
 * Parses `--mirror-targets`: at least one, no wildcard. The first target gets the IPv6 bracket fix-up (see
 * {@link encapsulateIPv6Host}); the others are taken as written.
 */
export function parseMirrorTargets (values: readonly string[]): RegistryUrl[] {
  if (values.length === 0) {
    throw new MirrorTargetsRequiredError()
  }
  return values.map((value, index) => {
    if (wildcardRegistries.includes(value)) {
      throw new InvalidRegistryUrlError(value, 'wildcard registries are not allowed as mirror targets')
    }
    return parseRegistryUrl(index === 0 ? encapsulateIPv6Host(value) : value)
  })
}
