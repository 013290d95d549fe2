import { parseDigest } from '../oci/digest.ts'
import { isValidRepository, isValidTag, maxRepositoryLength, tagReference } from '../oci/reference.ts'
import { RegistryError } from './errors.ts'

/** A parsed `/v2/<name>/(manifests|blobs)/<reference>` request. */
export interface DistributionPath {
  kind: 'manifests' | 'blobs'
  repository: string
  /** Origin registry from the `ns` query parameter ('' when absent). */
  registry: string
  tag?: string
  digest?: string
}

/** The DHT key and log identifier: the digest, or `<registry>/<repository>:<tag>`. */
export function identifier (path: DistributionPath): string {
  return path.digest ?? tagReference(path.registry, path.repository, path.tag ?? '')
}

/**
 * Parses the path and query of a /v2/ request. Input is the raw request target: nothing is percent-decoded, because no
 * valid repository, tag or digest contains `%`, so an encoded character can only be an attempt at something else.
 * Returns undefined for the API version check (`/v2/`).
 */
export function parseDistributionPath (rawUrl: string): DistributionPath | undefined {
  const q = rawUrl.indexOf('?')
  const pathname = q === -1 ? rawUrl : rawUrl.slice(0, q)
  const query = q === -1 ? '' : rawUrl.slice(q + 1)
  if (pathname === '/v2' || pathname === '/v2/') return undefined
  if (!pathname.startsWith('/v2/')) throw new RegistryError(404, 'NAME_UNKNOWN', 'not a distribution API path')
  if (pathname.includes('%')) throw new RegistryError(400, 'NAME_INVALID', 'percent-encoded characters are not allowed in the path')
  if (pathname.length > maxRepositoryLength + 256) throw new RegistryError(400, 'NAME_INVALID', 'path too long')

  const rest = pathname.slice(4)
  const m = /^(.+)\/(manifests|blobs)\/([^/]+)$/.exec(rest)
  if (m === null) throw new RegistryError(404, 'NAME_UNKNOWN', 'unknown distribution API path')
  const [, repository = '', kind = '', reference = ''] = m
  if (!isValidRepository(repository)) throw new RegistryError(400, 'NAME_INVALID', 'invalid repository name')

  const registry = parseNs(query)
  const path: DistributionPath = { kind: kind as DistributionPath['kind'], repository, registry }
  if (kind === 'manifests' && !reference.includes(':')) {
    // No manifest can have this name (the OCI spec answers a manifest GET only with 200 or 404).
    if (!isValidTag(reference)) throw new RegistryError(404, 'MANIFEST_UNKNOWN', `invalid tag ${JSON.stringify(reference.slice(0, 140))}: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`)
    path.tag = reference
    return path
  }
  try {
    path.digest = parseDigest(reference).value
  } catch (err) {
    throw new RegistryError(400, 'DIGEST_INVALID', (err as Error).message)
  }
  return path
}

// Registry hosts as containerd sends them in `ns`: name or IP, optional port, IPv6 in brackets.
const hostPattern = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,62})(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,62}))*|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?$/

function parseNs (query: string): string {
  if (query === '') return ''
  let ns: string | undefined
  for (const part of query.split('&')) {
    const eq = part.indexOf('=')
    const key = eq === -1 ? part : part.slice(0, eq)
    if (key !== 'ns') continue
    try {
      ns = decodeURIComponent((eq === -1 ? '' : part.slice(eq + 1)).replace(/\+/g, ' '))
    } catch {
      throw new RegistryError(400, 'NAME_INVALID', 'malformed ns query parameter')
    }
  }
  if (ns === undefined || ns === '') return ''
  if (ns.length > 255 || !hostPattern.test(ns)) throw new RegistryError(400, 'NAME_INVALID', 'ns query parameter is not a registry host')
  return ns
}
