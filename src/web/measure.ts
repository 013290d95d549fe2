import { isValidRepository, parseImageName, tagReference, type ImageReference } from '../oci/reference.ts'
import { isIndexMediaType, manifestAccept } from '../oci/mediatypes.ts'
import type { ContentStore } from '../store/types.ts'
import type { Router } from '../routing/types.ts'
import { Header } from '../util/http.ts'

/** The image reference typed into the measure form could not be understood. */
export class InvalidImageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidImageError'
  }
}

export interface MeasureOptions {
  router: Pick<Router, 'lookup'>
  /** Tells whether the registry serves an item locally or from a peer. */
  store: Pick<ContentStore, 'descriptor' | 'resolve'>
  /** This node's registry, e.g. `http://127.0.0.1:5000`: the pull goes through it, as containerd's would. */
  registryUrl: string
  /** Longest DHT lookup (default 3 s, as Spegel). */
  lookupTimeoutMs?: number
  /** Providers collected at most (default 10). */
  maxPeers?: number
  /** Platform whose manifest is pulled from an index (default: this process's linux/<arch>). */
  platform?: { os: string, architecture: string }
}

export interface MeasuredPeer {
  id: string
  addresses: string[]
  /** Time from the start of the lookup until this provider was found. */
  ms: number
}

export interface PulledItem {
  kind: 'index' | 'manifest' | 'config' | 'layer'
  /** Digest, or the tag for a manifest asked by tag. */
  reference: string
  mediaType: string
  size: number
  ms: number
  /** Where the registry served it from: this node's containerd, or a peer. */
  source: 'local' | 'peer'
  status: number
}

export interface MeasureResult {
  image: string
  /** DHT key looked up: `<registry>/<repo>:<tag>` or the digest. */
  key: string
  lookup: { ms: number, peers: MeasuredPeer[], error?: string }
  /** Absent when no peer holds the image. */
  pull?: { items: PulledItem[], bytes: number, ms: number, error?: string }
}

/**
 * Parses what a user types, with Docker's defaults: registry `docker.io`, `library/` for single-name Docker Hub
 * repositories, tag `latest` (`nginx` → `docker.io/library/nginx:latest`).
 */
export function parseImageWithDefaults (input: string): ImageReference & { name: string } {
  const value = input.trim()
  if (value === '') throw new InvalidImageError('image is empty')
  if (value.includes('://')) throw new InvalidImageError('image must not contain a scheme')
  const at = value.indexOf('@')
  const base = at === -1 ? value : value.slice(0, at)
  const digest = at === -1 ? '' : value.slice(at)
  const slash = base.indexOf('/')
  const first = slash === -1 ? '' : base.slice(0, slash)
  const hasRegistry = first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))
  let registry = hasRegistry ? first : 'docker.io'
  let repo = hasRegistry ? base.slice(slash + 1) : base
  if (registry === 'index.docker.io') registry = 'docker.io'
  const lastSlash = repo.lastIndexOf('/')
  const colon = repo.indexOf(':', lastSlash + 1)
  let tag = ''
  if (colon !== -1) {
    tag = repo.slice(colon)
    repo = repo.slice(0, colon)
  }
  if (registry === 'docker.io' && !repo.includes('/')) repo = `library/${repo}`
  if (tag === '' && digest === '') tag = ':latest'
  if (!isValidRepository(repo)) throw new InvalidImageError(`invalid repository ${JSON.stringify(repo)}`)
  const name = `${registry}/${repo}${tag}${digest}`
  try {
    return { ...parseImageName(name), name }
  } catch (err) {
    throw new InvalidImageError((err as Error).message)
  }
}

const archOf: Readonly<Record<string, string>> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' }

/**
 * Looks the image up in the DHT and, if any peer provides it, pulls it through this node's registry the way containerd
 * would (manifest, the platform's manifest from an index, config, layers), discarding the bodies and timing each item.
 */
export async function measurePull (init: MeasureOptions, input: string, options: { signal?: AbortSignal } = {}): Promise<MeasureResult> {
  const ref = parseImageWithDefaults(input)
  const key = ref.digest ?? tagReference(ref.registry, ref.repository, ref.tag ?? 'latest')
  const result: MeasureResult = { image: ref.name, key, lookup: { ms: 0, peers: [] } }
  const started = performance.now()
  const lookupSignal = AbortSignal.any([AbortSignal.timeout(init.lookupTimeoutMs ?? 3000), ...(options.signal !== undefined ? [options.signal] : [])])
  try {
    for await (const peer of init.router.lookup(key, { count: init.maxPeers ?? 10, signal: lookupSignal })) {
      result.lookup.peers.push({ id: peer.id, addresses: peer.addresses, ms: performance.now() - started })
    }
  } catch (err) {
    options.signal?.throwIfAborted()
    if (!lookupSignal.aborted) result.lookup.error = (err as Error).message
  }
  result.lookup.ms = performance.now() - started
  if (result.lookup.peers.length === 0) return result
  result.pull = await pull(init, ref, options.signal)
  return result
}

async function pull (init: MeasureOptions, ref: ImageReference, signal: AbortSignal | undefined): Promise<NonNullable<MeasureResult['pull']>> {
  const out: NonNullable<MeasureResult['pull']> = { items: [], bytes: 0, ms: 0 }
  const started = performance.now()
  const base = init.registryUrl.replace(/\/+$/, '')
  const ns = `?ns=${encodeURIComponent(ref.registry)}`
  const platform = init.platform ?? { os: 'linux', architecture: archOf[process.arch] ?? process.arch }
  try {
    const topRef = ref.digest ?? ref.tag ?? 'latest'
    const top = await fetchManifest(init, `${base}/v2/${ref.repository}/manifests/${topRef}${ns}`, topRef, ref, signal)
    out.items.push(top.item)
    let manifest = top
    if (isIndexMediaType(top.item.mediaType)) {
      top.item.kind = 'index'
      const children = (top.doc as { manifests?: Array<{ digest?: string, platform?: { os?: string, architecture?: string } }> }).manifests ?? []
      const child = children.find((m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture) ?? children[0]
      if (child?.digest === undefined) throw new Error('the index lists no manifest')
      manifest = await fetchManifest(init, `${base}/v2/${ref.repository}/manifests/${child.digest}${ns}`, child.digest, ref, signal)
      out.items.push(manifest.item)
    }
    const doc = manifest.doc as { config?: { digest?: string, mediaType?: string }, layers?: Array<{ digest?: string, mediaType?: string }> }
    const blobs = [
      ...(doc.config?.digest !== undefined ? [{ kind: 'config' as const, digest: doc.config.digest, mediaType: doc.config.mediaType ?? '' }] : []),
      ...(doc.layers ?? []).filter((l) => l.digest !== undefined).map((l) => ({ kind: 'layer' as const, digest: l.digest as string, mediaType: l.mediaType ?? '' })),
    ]
    for (const blob of blobs) {
      const source = await sourceOf(init, blob.digest, undefined, signal)
      const t = performance.now()
      const res = await fetch(`${base}/v2/${ref.repository}/blobs/${blob.digest}${ns}`, { ...(signal !== undefined ? { signal } : {}) })
      let size = 0
      if (res.body !== null) for await (const chunk of res.body) size += chunk.byteLength
      out.items.push({ kind: blob.kind, reference: blob.digest, mediaType: blob.mediaType, size, ms: performance.now() - t, source, status: res.status })
      if (res.status !== 200) throw new Error(`blob ${blob.digest}: HTTP ${res.status}`)
    }
  } catch (err) {
    signal?.throwIfAborted()
    const failed = (err as { item?: PulledItem }).item
    if (failed !== undefined) out.items.push(failed)
    out.error = (err as Error).message
  }
  out.bytes = out.items.reduce((n, i) => n + i.size, 0)
  out.ms = performance.now() - started
  return out
}

async function fetchManifest (init: MeasureOptions, url: string, reference: string, ref: ImageReference, signal: AbortSignal | undefined): Promise<{ item: PulledItem, doc: unknown }> {
  const source = await sourceOf(init, reference.startsWith('sha256:') ? reference : undefined, reference.startsWith('sha256:') ? undefined : tagReference(ref.registry, ref.repository, reference), signal)
  const t = performance.now()
  const res = await fetch(url, { headers: { [Header.accept]: manifestAccept }, ...(signal !== undefined ? { signal } : {}) })
  const body = Buffer.from(await res.arrayBuffer())
  const item: PulledItem = { kind: 'manifest', reference, mediaType: res.headers.get(Header.contentType) ?? '', size: body.byteLength, ms: performance.now() - t, source, status: res.status }
  if (res.status !== 200) {
    throw Object.assign(new Error(`manifest ${reference}: HTTP ${res.status}`), { item })
  }
  let doc: unknown
  try {
    doc = JSON.parse(body.toString('utf8'))
  } catch {
    throw new Error(`manifest ${reference} is not JSON`)
  }
  return { item, doc }
}

/** Where the local registry will take an item from: here if containerd holds it, otherwise a peer. */
async function sourceOf (init: MeasureOptions, digest: string | undefined, tag: string | undefined, signal: AbortSignal | undefined): Promise<'local' | 'peer'> {
  try {
    const d = digest ?? await init.store.resolve(tag ?? '', { ...(signal !== undefined ? { signal } : {}) })
    await init.store.descriptor(d, { ...(signal !== undefined ? { signal } : {}) })
    return 'local'
  } catch {
    // Absent (or the store cannot tell): the registry will ask its peers.
    return 'peer'
  }
}
