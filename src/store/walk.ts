import { isDigest } from '../oci/digest.ts'
import { maxFingerprintSize } from '../oci/fingerprint.ts'
import { MediaType } from '../oci/mediatypes.ts'
import { NotFoundError } from './errors.ts'
import type { ContentStore, Descriptor, StoreOptions } from './types.ts'

/** A store that can be told the media type of content it holds, as a parent manifest declares it. */
export interface MediaTypeLearner {
  learnMediaType: (descriptor: Descriptor) => void
}

export function isMediaTypeLearner (store: object): store is MediaTypeLearner {
  return typeof (store as Partial<MediaTypeLearner>).learnMediaType === 'function'
}

export interface WalkOptions extends StoreOptions {
  /**
   * Called with every child descriptor as its parent declares it, before the child is looked up. Defaults to the
   * store's learnMediaType when it has one, so the store need not read content to learn its type.
   */
  learn?: (descriptor: Descriptor) => void
  /** Manifests and indexes larger than this are not read; their children are not visited (default 4 MiB). */
  maxManifestSize?: number
  /**
   * Called with each child the store does not hold (as its parent declares it), and that parent. An index's absent
   * manifests are normal (only this node's platform was pulled); a manifest's absent config or layer is not.
   */
  onMissing?: (child: Descriptor, parent: Descriptor) => void
}

const indexTypes: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerManifestList])
const manifestTypes: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest])

/**
 * Lists the content of the image whose top manifest or index has this digest: the top itself, then, depth first,
 * each child manifest followed by its config and layers. Content the store does not hold is left out, together with
 * everything only it references. Each digest appears once. Other references (`subject`, artifact blobs) are ignored.
 * Returns [] when the top is absent.
 */
export async function walkImage (store: ContentStore, digest: string, options: WalkOptions = {}): Promise<Descriptor[]> {
  const learn = options.learn ?? (isMediaTypeLearner(store) ? (d: Descriptor) => { store.learnMediaType(d) } : undefined)
  const maxSize = options.maxManifestSize ?? maxFingerprintSize
  const signal = options.signal
  const visited = new Set<string>([digest])

  const lookup = async (d: string): Promise<Descriptor | undefined> => {
    try {
      return await store.descriptor(d, { signal })
    } catch (err) {
      if (err instanceof NotFoundError) return undefined
      throw err
    }
  }

  const visit = async (node: Descriptor): Promise<Descriptor[]> => {
    signal?.throwIfAborted()
    const isIndex = indexTypes.has(node.mediaType)
    if (!isIndex && !manifestTypes.has(node.mediaType)) return [node]
    if (node.size > maxSize) return [node]
    const doc = await readJson(store, node.digest, maxSize, signal)
    if (doc === absent) return []
    const children = isIndex ? descriptorsIn(doc, 'manifests') : [...descriptorsIn(doc, 'config'), ...descriptorsIn(doc, 'layers')]
    const fresh = children.filter((child) => {
      if (visited.has(child.digest)) return false
      visited.add(child.digest)
      return true
    })
    const subtrees = await Promise.all(fresh.map(async (child) => {
      learn?.(child)
      const found = await lookup(child.digest)
      if (found === undefined) {
        options.onMissing?.(child, node)
        return []
      }
      return await visit({ mediaType: child.mediaType !== '' ? child.mediaType : found.mediaType, digest: found.digest, size: found.size })
    }))
    return [node, ...subtrees.flat()]
  }

  const top = await lookup(digest)
  if (top === undefined) return []
  return await visit(top)
}

const absent = Symbol('absent')

/** The parsed document, undefined when it is not JSON or too big, `absent` when the store no longer holds it. */
async function readJson (store: ContentStore, digest: string, maxSize: number, signal: AbortSignal | undefined): Promise<unknown> {
  let stream
  try {
    stream = await store.open(digest, { signal })
  } catch (err) {
    if (err instanceof NotFoundError) return absent
    throw err
  }
  const chunks: Buffer[] = []
  let length = 0
  try {
    for await (const chunk of stream) {
      const buf = chunk as Buffer
      length += buf.byteLength
      if (length > maxSize) return undefined
      chunks.push(buf)
    }
  } catch (err) {
    if (err instanceof NotFoundError) return absent
    throw err
  } finally {
    stream.destroy()
  }
  try {
    return JSON.parse(Buffer.concat(chunks, length).toString('utf8'))
  } catch {
    return undefined
  }
}

/** Well-formed descriptors under `key` (an array or a single object) of a manifest or index. */
function descriptorsIn (doc: unknown, key: string): Descriptor[] {
  if (doc === null || typeof doc !== 'object') return []
  const value = (doc as Record<string, unknown>)[key]
  const list = Array.isArray(value) ? value : [value]
  const out: Descriptor[] = []
  for (const item of list) {
    if (item === null || typeof item !== 'object') continue
    const d = item as Record<string, unknown>
    if (typeof d.digest !== 'string' || !isDigest(d.digest)) continue
    if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) continue
    out.push({ mediaType: typeof d.mediaType === 'string' ? d.mediaType : '', digest: d.digest, size: d.size })
  }
  return out
}
