import type { RE2JS } from 're2js'
import { parseMirroredRegistries } from '../hosts/url.ts'
import type { ImageReference } from './reference.ts'

/** Thrown at start-up for a filter that cannot be compiled. The message is one line and names the offending value. */
export class InvalidFilterError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidFilterError'
  }
}

/** One `--registry-filters` entry: a Go (RE2) regular expression. */
export interface RegistryFilter {
  /** The expression as given. */
  source: string
  /** True when the expression matches anywhere in `subject` (Go's `Regexp.MatchString`). */
  test: (subject: string) => boolean
}

/**
 * Compiles filters with Go's regexp syntax, so a filter means here what it means to Spegel (go-arg compiles
 * `[]*regexp.Regexp` with `regexp.Compile`): `(?i)` flag groups, `\A` and `\z`, `[[:alpha:]]`, `\pL`, and repeat
 * counts up to 1000 work; lookaround and backreferences are errors. A JavaScript RegExp would fail to start on
 * `(?i)` and silently never match `\z`. re2js (its Unicode tables take about 0.6 MiB of heap) is loaded only when
 * there is a filter to compile; the chart sets none by default.
 */
export async function compileRegistryFilters (sources: readonly string[]): Promise<RegistryFilter[]> {
  if (sources.length === 0) return []
  const { RE2JS } = await import('re2js')
  return sources.map((source) => compileWith(RE2JS, source))
}

function compileWith (engine: typeof RE2JS, source: string): RegistryFilter {
  let re: RE2JS
  try {
    re = engine.compile(source)
  } catch (err) {
    // re2js reports Go's own messages ("error parsing regexp: invalid escape sequence: `\1`"); the pattern may hold a
    // newline, which would break the one-line error.
    const reason = (err instanceof Error ? err.message : String(err)).replaceAll('\r', '\\r').replaceAll('\n', '\\n')
    throw new InvalidFilterError(`invalid registry filter ${JSON.stringify(source)}: ${reason} (filters are Go RE2 regular expressions: no lookaround, no backreferences)`)
  }
  return { source, test: (subject) => re.test(subject) }
}

/**
 * Decides which requests are not mirrored, as Spegel's --mirrored-registries whitelist and --registry-filters do
 * (`pkg/oci/filter.go`). Regexes are matched against `registry/repository[:tag]` (never the digest).
 */
export class RequestFilter {
  private readonly hosts: ReadonlySet<string> | undefined
  private readonly patterns: readonly RegistryFilter[]

  /** A filter from the flags' values: `--mirrored-registries` and `--registry-filters` (compiled here). */
  static async create (options: { mirroredRegistries?: readonly string[], registryFilters?: readonly string[] } = {}): Promise<RequestFilter> {
    return new RequestFilter({ ...options, registryFilters: await compileRegistryFilters(options.registryFilters ?? []) })
  }

  constructor (options: { mirroredRegistries?: readonly string[], registryFilters?: readonly RegistryFilter[] } = {}) {
    let registries
    try {
      registries = parseMirroredRegistries(options.mirroredRegistries ?? [])
    } catch (err) {
      throw new InvalidFilterError(`--mirrored-registries: ${(err as Error).message}`)
    }
    // An empty list or a wildcard entry mirrors every registry. Hosts are kept as written (no lowercasing, no
    // default-port removal), as Go's url.URL.Host compares them against the `ns` parameter.
    this.hosts = registries.some((r) => r.wildcard) ? undefined : new Set(registries.map((r) => r.host))
    this.patterns = options.registryFilters ?? []
  }

  /**
   * True when the request must not be served (answered 404 so containerd goes upstream). A registry's request path
   * (`registry/path.ts`' DistributionPath) is such a name; its digest is never looked at.
   */
  rejects (name: Pick<ImageReference, 'registry' | 'repository' | 'tag'>): boolean {
    if (this.hosts !== undefined && !this.hosts.has(name.registry)) return true
    if (this.patterns.length === 0) return false
    const subject = `${name.registry}/${name.repository}${name.tag !== undefined && name.tag !== '' ? `:${name.tag}` : ''}`
    return this.patterns.some((p) => p.test(subject))
  }

  /** True when an image name (registry, repository, tag) should be neither served nor advertised. */
  rejectsImage (registry: string, repository: string, tag?: string): boolean {
    return this.rejects(tag !== undefined ? { registry, repository, tag } : { registry, repository })
  }
}
