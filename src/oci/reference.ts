import { parseDigest } from './digest.ts'
import { InvalidNameError, InvalidReferenceError } from './errors.ts'

// Repository grammar of the OCI distribution spec: lowercase alphanumeric components separated by `.`, `_`, `__` or
// one or more `-`, joined by `/`.
const repositoryPattern = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const tagPattern = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
/** Longest repository name we accept; the spec lets registries limit it, distribution uses 255. */
export const maxRepositoryLength = 255

export function isValidRepository (repository: string): boolean {
  return repository.length > 0 && repository.length <= maxRepositoryLength && repositoryPattern.test(repository)
}

export function isValidTag (tag: string): boolean {
  return tagPattern.test(tag)
}

export function validateRepository (repository: string): void {
  if (!isValidRepository(repository)) {
    throw new InvalidNameError('invalid repository name')
  }
}

/** A parsed image name such as `docker.io/library/busybox:1.37.0` or `10.0.0.2:5000/app@sha256:…`. */
export interface ImageReference {
  registry: string
  repository: string
  tag?: string
  digest?: string
}

/** `<registry>/<repository>:<tag>`: the form containerd names images by, and the DHT key of a tag. */
export function tagReference (registry: string, repository: string, tag: string): string {
  return `${registry}/${repository}:${tag}`
}

/**
 * Parses a fully qualified image name as containerd stores it. The first path component is the registry when it is an
 * IP (with optional port), a bracketed IPv6 address, `localhost`, or contains a dot or a port; otherwise the name is
 * rejected, because containerd's names are always qualified.
 */
export function parseImageName (name: string): ImageReference {
  if (name.includes('://')) {
    throw new InvalidReferenceError(`image name ${JSON.stringify(name)} must not contain a scheme`)
  }
  let rest = name
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at !== -1) {
    digest = parseDigest(rest.slice(at + 1)).value
    rest = rest.slice(0, at)
  }
  const slash = rest.indexOf('/')
  if (slash === -1) {
    throw new InvalidReferenceError(`image name ${JSON.stringify(name)} has no registry`)
  }
  const registry = rest.slice(0, slash)
  if (!looksLikeRegistry(registry)) {
    throw new InvalidReferenceError(`image name ${JSON.stringify(name)} has no registry`)
  }
  rest = rest.slice(slash + 1)
  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const colon = rest.indexOf(':', lastSlash + 1)
  if (colon !== -1) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (!isValidTag(tag)) {
      throw new InvalidReferenceError(`image name ${JSON.stringify(name)} has an invalid tag`)
    }
  }
  if (!isValidRepository(rest)) {
    throw new InvalidReferenceError(`image name ${JSON.stringify(name)} has an invalid repository`)
  }
  if (tag === undefined && digest === undefined) {
    throw new InvalidReferenceError(`image name ${JSON.stringify(name)} has neither tag nor digest`)
  }
  const ref: ImageReference = { registry, repository: rest }
  if (tag !== undefined) ref.tag = tag
  if (digest !== undefined) ref.digest = digest
  return ref
}

function looksLikeRegistry (host: string): boolean {
  if (host === 'localhost' || host.startsWith('localhost:')) return true
  if (host.startsWith('[')) return /^\[[0-9a-fA-F:.]+\](?::\d+)?$/.test(host)
  if ((host.match(/:/g)?.length ?? 0) > 1) return false // unbracketed IPv6
  return /^[a-zA-Z0-9.-]+(?::\d+)?$/.test(host) && (host.includes('.') || host.includes(':'))
}
