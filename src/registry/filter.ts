import type { DistributionPath } from './path.ts'

/** Thrown at start-up for a filter that cannot be compiled. */
export class InvalidFilterError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidFilterError'
  }
}

/**
 * Decides which requests are not mirrored, as Spegel's --mirrored-registries whitelist and --registry-filters do.
 * Regexes are matched against `registry/repository[:tag]` (never the digest).
 */
export class RequestFilter {
  private readonly hosts: ReadonlySet<string> | undefined
  private readonly patterns: readonly RegExp[]

  constructor (init: { mirroredRegistries?: readonly string[], registryFilters?: readonly string[] } = {}) {
    const hosts = new Set<string>()
    let wildcard = false
    for (const entry of init.mirroredRegistries ?? []) {
      if (entry === '_default' || entry === '*') { wildcard = true; continue }
      try {
        hosts.add(new URL(entry).host)
      } catch {
        throw new InvalidFilterError(`invalid mirrored registry ${JSON.stringify(entry)}: want a URL such as https://docker.io`)
      }
    }
    this.hosts = wildcard || hosts.size === 0 ? undefined : hosts
    this.patterns = (init.registryFilters ?? []).map((source) => {
      try {
        return new RegExp(source)
      } catch (err) {
        throw new InvalidFilterError(`invalid registry filter ${JSON.stringify(source)}: ${(err as Error).message}`)
      }
    })
  }

  /** True when the request must not be served (answered 404 so containerd goes upstream). */
  rejects (path: DistributionPath): boolean {
    if (this.hosts !== undefined && !this.hosts.has(path.registry)) return true
    if (this.patterns.length === 0) return false
    const subject = `${path.registry}/${path.repository}${path.tag !== undefined ? `:${path.tag}` : ''}`
    return this.patterns.some((p) => p.test(subject))
  }

  /** True when an image name (registry, repository, tag) should be neither served nor advertised. */
  rejectsImage (registry: string, repository: string, tag?: string): boolean {
    const path: DistributionPath = { kind: 'manifests', registry, repository }
    if (tag !== undefined) path.tag = tag
    return this.rejects(path)
  }
}
