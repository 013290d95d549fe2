// Test images generated in code (no network) and pushed to a test registry with skopeo.
//
// Images are written as an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>) by this module. Layers are
// real gzip-compressed (or plain) tar archives holding one file of random bytes, streamed to disk so a layer of
// several GB never sits in memory; containerd can pull and unpack them. skopeo copies the layout to the registry
// with --preserve-digests, so the digests computed here are the ones the registry serves, and every push is checked
// against `skopeo inspect --raw`.
//
// Fetching each kind with containerd 1.6 (`ctr`, verified by test/integration/fixtures/fixtures.test.ts):
//   image (OCI or Docker):  ctr -n k8s.io images pull --plain-http HOST/test/layers:v1   (unpacks for the host platform)
//   index, every platform:  ctr -n k8s.io images pull --plain-http --all-platforms HOST/test/multiarch:v1
//                           (fetches and unpacks both platforms: the layers hold plain files, nothing is executed)
//   index, one platform:    ctr -n k8s.io images pull --plain-http --platform linux/arm64 HOST/test/multiarch:v1
//                           (fetches the index, that platform's manifest, config and layer)
//   OCI artifact:           ctr -n k8s.io content fetch --plain-http HOST/test/artifact:v1
//                           (`images pull` fails to unpack: the artifact has no image config; `content fetch`
//                           downloads the manifest, the empty config and the layer without unpacking)
import { createHash, randomFill } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { link, mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable, Transform } from 'node:stream'
import type { TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { MediaType } from '../../src/oci/mediatypes.ts'
import { run } from './process.ts'
import { makeTempDir } from './tmp.ts'
import { requireKnownTool } from './tools.ts'

export interface Platform {
  architecture: string
  os: string
  variant?: string
}

/** A content descriptor as it appears in manifests and indexes. */
export interface ImageDescriptor {
  mediaType: string
  digest: string
  size: number
  platform?: Platform
  artifactType?: string
  annotations?: Record<string, string>
}

export interface LayerSpec {
  /** Bytes of random content in the layer's single file (the blob is a little larger: tar headers, gzip). */
  sizeBytes: number
  /** Default gzip. */
  compression?: 'gzip' | 'none'
}

/** One image manifest and the blobs it references. */
export interface ManifestInfo {
  descriptor: ImageDescriptor
  config: ImageDescriptor
  layers: ImageDescriptor[]
  /** Uncompressed tar digests, as listed in the config's rootfs.diff_ids (empty for artifacts). */
  diffIds: string[]
}

export class ImageBuildError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ImageBuildError'
  }
}

export class ImagePushError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ImagePushError'
  }
}

const emptyJson = '{}'

// ---------------------------------------------------------------------------------------------------------------
// tar

const block = 512

function octal (value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0'
}

/** A ustar header for a regular file. Sizes of 8 GiB and more use the GNU base-256 size encoding. */
export function tarFileHeader (name: string, size: number, mode = 0o644, mtime = 0): Buffer {
  if (Buffer.byteLength(name) > 100) throw new ImageBuildError(`tar entry name too long: ${name}`)
  const h = Buffer.alloc(block)
  h.write(name, 0, 100, 'utf8')
  h.write(octal(mode, 8), 100, 8, 'ascii')
  h.write(octal(0, 8), 108, 8, 'ascii')
  h.write(octal(0, 8), 116, 8, 'ascii')
  if (size < 0o77777777777) {
    h.write(octal(size, 12), 124, 12, 'ascii')
  } else {
    h[124] = 0x80
    let rest = BigInt(size)
    for (let i = 135; i > 124; i--) {
      h[i] = Number(rest & 0xffn)
      rest >>= 8n
    }
  }
  h.write(octal(mtime, 12), 136, 12, 'ascii')
  h.fill(' ', 148, 156)
  h.write('0', 156, 1, 'ascii')
  h.write('ustar\0', 257, 6, 'ascii')
  h.write('00', 263, 2, 'ascii')
  h.write('root', 265, 32, 'ascii')
  h.write('root', 297, 32, 'ascii')
  let sum = 0
  for (const byte of h) sum += byte
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return h
}

async function * randomTar (fileName: string, size: number): AsyncGenerator<Buffer> {
  yield tarFileHeader(fileName, size)
  const chunkSize = 1024 * 1024
  let left = size
  while (left > 0) {
    const n = Math.min(chunkSize, left)
    yield await new Promise<Buffer>((resolve, reject) => {
      randomFill(Buffer.allocUnsafe(n), (err, buf) => { if (err !== null) reject(err); else resolve(buf) })
    })
    left -= n
  }
  const pad = (block - (size % block)) % block
  // Padding plus the two zero blocks that end an archive.
  yield Buffer.alloc(pad + 2 * block)
}

/** Passes bytes through while hashing (SHA-256) and counting them. */
export class HashTap extends Transform {
  readonly hash = createHash('sha256')
  bytes = 0
  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    callback(null, chunk)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// OCI image layout

/** Writes blobs into an OCI image layout directory and finally its index.json. */
export class OciLayoutWriter {
  readonly dir: string
  private readonly refs: ImageDescriptor[] = []
  private tmpCounter = 0

  constructor (dir: string) {
    this.dir = dir
  }

  async init (): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true })
    await writeFile(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  }

  blobPath (digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''))
  }

  async writeBlob (data: string | Uint8Array, mediaType: string): Promise<ImageDescriptor> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex')
    await writeFile(this.blobPath(digest), bytes)
    return { mediaType, digest, size: bytes.length }
  }

  /** Serialises `doc` once and stores exactly those bytes, so the digest matches what is pushed. */
  async writeJson (doc: unknown, mediaType: string): Promise<ImageDescriptor> {
    return await this.writeBlob(JSON.stringify(doc), mediaType)
  }

  /** Streams a tar layer with one random file to disk; returns its descriptor and diff_id. */
  async writeLayer (spec: LayerSpec, mediaType: string, fileName: string): Promise<{ descriptor: ImageDescriptor, diffId: string }> {
    const tmp = join(this.dir, `.layer-${process.pid}-${this.tmpCounter++}.tmp`)
    const tarTap = new HashTap()
    const blobTap = new HashTap()
    const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream> = [Readable.from(randomTar(fileName, spec.sizeBytes)), tarTap]
    // Random data does not compress: level 1 keeps gzip fast for large benchmark layers.
    if ((spec.compression ?? 'gzip') === 'gzip') stages.push(createGzip({ level: 1 }))
    stages.push(blobTap, createWriteStream(tmp))
    await pipeline(stages)
    const digest = 'sha256:' + blobTap.hash.digest('hex')
    const diffId = 'sha256:' + tarTap.hash.digest('hex')
    await rename(tmp, this.blobPath(digest))
    return { descriptor: { mediaType, digest, size: blobTap.bytes }, diffId }
  }

  /** Names a top-level manifest or index in index.json under `tag`. */
  addRef (descriptor: ImageDescriptor, tag: string): void {
    const { platform: _platform, ...rest } = descriptor
    this.refs.push({ ...rest, annotations: { ...descriptor.annotations, 'org.opencontainers.image.ref.name': tag } })
  }

  async finish (): Promise<void> {
    await writeFile(join(this.dir, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: this.refs,
    }))
  }
}

export interface WriteImageOptions {
  layers: LayerSpec[]
  architecture?: string
  os?: string
  /** 'oci' (default) or 'docker' (schema 2 manifest, docker config and layer media types). */
  format?: 'oci' | 'docker'
  /** Prefix of the file names inside the layers. */
  fileName?: string
}

/** Writes the config, layers and manifest of one image into `layout`; does not name it in index.json. */
export async function writeImage (layout: OciLayoutWriter, options: WriteImageOptions): Promise<ManifestInfo> {
  const docker = options.format === 'docker'
  const architecture = options.architecture ?? 'amd64'
  const os = options.os ?? 'linux'
  const layerType = docker
    ? MediaType.dockerLayerGzip
    : undefined
  const layers: ImageDescriptor[] = []
  const diffIds: string[] = []
  const base = options.fileName ?? 'data'
  for (const [i, spec] of options.layers.entries()) {
    if (docker && spec.compression === 'none') throw new ImageBuildError('docker schema 2 layers here are gzip only')
    const mediaType = layerType ?? (spec.compression === 'none' ? MediaType.ociLayer : MediaType.ociLayerGzip)
    const { descriptor, diffId } = await layout.writeLayer(spec, mediaType, `${base}-${i}.bin`)
    layers.push(descriptor)
    diffIds.push(diffId)
  }
  const config = await layout.writeJson({
    created: '2024-01-01T00:00:00Z',
    architecture,
    os,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `spegel-ts test layer ${i}` })),
  }, docker ? MediaType.dockerConfig : MediaType.ociConfig)
  const manifestType = docker ? MediaType.dockerManifest : MediaType.ociManifest
  const descriptor = await layout.writeJson({
    schemaVersion: 2,
    mediaType: manifestType,
    config: strip(config),
    layers: layers.map(strip),
  }, manifestType)
  return { descriptor: { ...descriptor, platform: { architecture, os } }, config, layers, diffIds }
}

function strip (d: ImageDescriptor): ImageDescriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size }
}

export interface BuiltLayout {
  /** The OCI layout directory. */
  dir: string
  /** The name of the image in index.json. */
  tag: string
  /**
   * The skopeo source reference: `oci:DIR:TAG`, or for Docker schema 2 images `dir:DIR/docker-dir` (skopeo's OCI
   * layout reader only accepts OCI media types; its `dir:` transport copies any manifest byte for byte).
   */
  source: string
  /** The top-level manifest or index. */
  descriptor: ImageDescriptor
  /** The image manifests (one, or one per platform of an index). */
  manifests: ManifestInfo[]
  /** Removes the layout directory. */
  cleanup: () => Promise<void>
}

/**
 * Lays out one image for skopeo's `dir:` transport inside the layout (version file, manifest.json, blobs named by
 * hex digest), hard-linking the blobs so large layers are not copied.
 */
async function writeDirTransportView (layout: OciLayoutWriter, manifest: ManifestInfo): Promise<string> {
  const dir = join(layout.dir, 'docker-dir')
  await mkdir(dir)
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n')
  await link(layout.blobPath(manifest.descriptor.digest), join(dir, 'manifest.json'))
  for (const blob of [manifest.config, ...manifest.layers]) {
    await link(layout.blobPath(blob.digest), join(dir, blob.digest.replace(/^sha256:/, '')))
  }
  return dir
}

export interface BuildImageOptions extends WriteImageOptions {
  /** Default 'latest'. */
  tag?: string
}

/** Builds a single-platform image in a new OCI layout directory. */
export async function buildImage (options: BuildImageOptions): Promise<BuiltLayout> {
  const tmp = await makeTempDir('spegel-image')
  try {
    const layout = new OciLayoutWriter(tmp.path)
    await layout.init()
    const manifest = await writeImage(layout, options)
    const tag = options.tag ?? 'latest'
    layout.addRef(manifest.descriptor, tag)
    await layout.finish()
    let source = `oci:${tmp.path}:${tag}`
    if (options.format === 'docker') source = `dir:${await writeDirTransportView(layout, manifest)}`
    return { dir: tmp.path, tag, source, descriptor: manifest.descriptor, manifests: [manifest], cleanup: tmp.cleanup }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

/** Builds an OCI index with one image per platform, each with its own config and layers. */
export async function buildIndex (options: { platforms: Array<Platform & { layers: LayerSpec[] }>, tag?: string }): Promise<BuiltLayout> {
  const tmp = await makeTempDir('spegel-index')
  try {
    const layout = new OciLayoutWriter(tmp.path)
    await layout.init()
    const manifests: ManifestInfo[] = []
    for (const p of options.platforms) {
      manifests.push(await writeImage(layout, { layers: p.layers, architecture: p.architecture, os: p.os, fileName: `data-${p.os}-${p.architecture}` }))
    }
    const index = await layout.writeJson({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: manifests.map((m) => ({ ...strip(m.descriptor), platform: m.descriptor.platform })),
    }, MediaType.ociIndex)
    const tag = options.tag ?? 'latest'
    layout.addRef(index, tag)
    await layout.finish()
    return { dir: tmp.path, tag, source: `oci:${tmp.path}:${tag}`, descriptor: index, manifests, cleanup: tmp.cleanup }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

export const spdxMediaType = 'application/spdx+json'

/** Builds an OCI artifact: artifactType set, the empty config, one small SPDX-like JSON layer. */
export async function buildArtifact (options: { tag?: string, artifactType?: string } = {}): Promise<BuiltLayout> {
  const tmp = await makeTempDir('spegel-artifact')
  try {
    const layout = new OciLayoutWriter(tmp.path)
    await layout.init()
    const config = await layout.writeBlob(emptyJson, MediaType.ociEmpty)
    const sbom = await layout.writeJson({
      spdxVersion: 'SPDX-2.3',
      dataLicense: 'CC0-1.0',
      SPDXID: 'SPDXRef-DOCUMENT',
      name: 'spegel-ts-test-sbom',
      // A random namespace makes every generated artifact unique.
      documentNamespace: `https://spegel-ts.invalid/spdx/${createHash('sha256').update(String(Math.random()) + String(Date.now())).digest('hex')}`,
      creationInfo: { created: '2024-01-01T00:00:00Z', creators: ['Tool: spegel-ts-tests'] },
      packages: [{ SPDXID: 'SPDXRef-Package-test', name: 'test', versionInfo: '1.0.0', downloadLocation: 'NOASSERTION' }],
    }, spdxMediaType)
    const artifactType = options.artifactType ?? spdxMediaType
    const descriptor = await layout.writeJson({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      artifactType,
      config: { ...config, data: Buffer.from(emptyJson).toString('base64') },
      layers: [{ ...sbom, annotations: { 'org.opencontainers.image.title': 'sbom.spdx.json' } }],
    }, MediaType.ociManifest)
    const tag = options.tag ?? 'latest'
    layout.addRef({ ...descriptor, artifactType }, tag)
    await layout.finish()
    const manifest: ManifestInfo = { descriptor: { ...descriptor, artifactType }, config, layers: [sbom], diffIds: [] }
    return { dir: tmp.path, tag, source: `oci:${tmp.path}:${tag}`, descriptor: manifest.descriptor, manifests: [manifest], cleanup: tmp.cleanup }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

// ---------------------------------------------------------------------------------------------------------------
// pushing

/** An image as pushed to a registry, with every digest a client can fetch for it. */
export interface PushedImage {
  /** Repository name, e.g. `test/layers`. */
  repository: string
  tag: string
  /** `HOST/REPOSITORY:TAG` */
  ref: string
  /** `HOST/REPOSITORY@DIGEST` */
  digestRef: string
  /** Digest, media type and size of the top-level manifest or index. */
  digest: string
  mediaType: string
  size: number
  artifactType?: string
  /** The image manifests: one, or one per platform of an index. */
  manifests: ManifestInfo[]
  /** Every descriptor below the top one (child manifests of an index, configs, layers), each once. */
  children: ImageDescriptor[]
}

export interface PushOptions {
  /** Run skopeo in this network namespace (where the registry is reachable). */
  netns?: string
  signal?: AbortSignal
  /** Default: 2 minutes plus 1 s per 10 MB of content. */
  timeoutMs?: number
}

function skopeoArgs (): string[] {
  // No policy.json may exist on a test machine; the registry is plain HTTP.
  return ['--insecure-policy']
}

/** Reads a manifest back with `skopeo inspect --raw` (exact bytes as the registry serves them). */
export async function inspectRaw (ref: string, options: { netns?: string, signal?: AbortSignal } = {}): Promise<Buffer> {
  const skopeo = requireKnownTool('skopeo')
  const { stdout } = await run(skopeo, [...skopeoArgs(), 'inspect', '--raw', '--tls-verify=false', `docker://${ref}`], {
    netns: options.netns,
    signal: options.signal,
    timeoutMs: 60_000,
  })
  // skopeo prints the raw bytes and nothing else: no trailing newline is added.
  return Buffer.from(stdout, 'utf8')
}

/**
 * Copies a built layout to `registryHost/repository:tag` with skopeo, keeping every digest, and checks that the
 * registry serves the top-level manifest with the expected digest and media type.
 */
export async function pushLayout (built: BuiltLayout, registryHost: string, repository: string, tag: string, options: PushOptions = {}): Promise<PushedImage> {
  const skopeo = requireKnownTool('skopeo')
  const ref = `${registryHost}/${repository}:${tag}`
  const top = built.descriptor
  const isIndex = top.mediaType === MediaType.ociIndex || top.mediaType === MediaType.dockerManifestList
  const children = childDescriptors(built)
  const contentBytes = children.reduce((n, d) => n + d.size, 0)
  const args = [
    ...skopeoArgs(), 'copy', '--quiet', '--dest-tls-verify=false',
    // Fail rather than let skopeo convert a manifest or recompress a layer: the digests computed here must hold.
    '--preserve-digests',
    // Without --all skopeo copies only the host platform's manifest out of an index.
    ...(isIndex ? ['--all'] : []),
    built.source, `docker://${ref}`,
  ]
  try {
    await run(skopeo, args, {
      netns: options.netns,
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? 120_000 + Math.ceil(contentBytes / 10_000_000) * 1000,
    })
  } catch (err) {
    throw new ImagePushError(`cannot push ${ref}: ${err instanceof Error ? err.message : String(err)}`)
  }
  const raw = await inspectRaw(ref, options)
  const served = 'sha256:' + createHash('sha256').update(raw).digest('hex')
  if (served !== top.digest) {
    throw new ImagePushError(`${ref}: registry serves manifest ${served}, pushed ${top.digest}`)
  }
  const mediaType = (JSON.parse(raw.toString('utf8')) as { mediaType?: string }).mediaType
  if (mediaType !== top.mediaType) {
    throw new ImagePushError(`${ref}: registry serves media type ${String(mediaType)}, expected ${top.mediaType}`)
  }
  return {
    repository,
    tag,
    ref,
    digestRef: `${registryHost}/${repository}@${top.digest}`,
    digest: top.digest,
    mediaType: top.mediaType,
    size: top.size,
    ...(top.artifactType !== undefined ? { artifactType: top.artifactType } : {}),
    manifests: built.manifests,
    children,
  }
}

function childDescriptors (built: BuiltLayout): ImageDescriptor[] {
  const seen = new Set<string>()
  const out: ImageDescriptor[] = []
  const add = (d: ImageDescriptor): void => {
    if (seen.has(d.digest)) return
    seen.add(d.digest)
    out.push(d)
  }
  const isIndex = built.descriptor.mediaType === MediaType.ociIndex
  for (const m of built.manifests) {
    if (isIndex) add(m.descriptor)
    add(m.config)
    for (const l of m.layers) add(l)
  }
  return out
}

export interface TestImageSet {
  /** `test/layers:v1`: OCI image, three random gzip layers. */
  layers: PushedImage
  /** `test/multiarch:v1`: OCI index with linux/amd64 and linux/arm64 images, each with its own config and layer. */
  multiarch: PushedImage
  /** `test/docker:v1`: Docker schema 2 image (docker manifest, config and layer media types). */
  docker: PushedImage
  /** `test/artifact:v1`: OCI artifact (artifactType, empty config, one SPDX JSON layer). */
  artifact: PushedImage
  /** All four, in the order above. */
  all: PushedImage[]
}

export interface PushTestImagesOptions extends PushOptions {
  /** Content sizes of the three test/layers:v1 layers (default 1, 2 and 3 MiB). */
  layerSizes?: number[]
  /** Tag for every image (default v1). */
  tag?: string
}

const MiB = 1024 * 1024

/** Generates the standard test images and pushes them to `registryHost` (`HOST:PORT`). */
export async function pushTestImages (registryHost: string, options: PushTestImagesOptions = {}): Promise<TestImageSet> {
  const tag = options.tag ?? 'v1'
  const builds: BuiltLayout[] = []
  try {
    const layersBuild = await buildImage({ layers: (options.layerSizes ?? [1 * MiB, 2 * MiB, 3 * MiB]).map((sizeBytes) => ({ sizeBytes })), tag })
    builds.push(layersBuild)
    const multiarchBuild = await buildIndex({
      tag,
      platforms: [
        { os: 'linux', architecture: 'amd64', layers: [{ sizeBytes: 256 * 1024 }] },
        { os: 'linux', architecture: 'arm64', layers: [{ sizeBytes: 384 * 1024 }] },
      ],
    })
    builds.push(multiarchBuild)
    const dockerBuild = await buildImage({ layers: [{ sizeBytes: 512 * 1024 }, { sizeBytes: 128 * 1024 }], tag, format: 'docker' })
    builds.push(dockerBuild)
    const artifactBuild = await buildArtifact({ tag })
    builds.push(artifactBuild)

    const layers = await pushLayout(layersBuild, registryHost, 'test/layers', tag, options)
    const multiarch = await pushLayout(multiarchBuild, registryHost, 'test/multiarch', tag, options)
    const docker = await pushLayout(dockerBuild, registryHost, 'test/docker', tag, options)
    const artifact = await pushLayout(artifactBuild, registryHost, 'test/artifact', tag, options)
    return { layers, multiarch, docker, artifact, all: [layers, multiarch, docker, artifact] }
  } finally {
    // The registry holds the content now.
    for (const b of builds) await b.cleanup()
  }
}

export interface PushLargeBlobOptions extends PushOptions {
  /** Default `bench/large`. */
  repository?: string
  /** Default v1. */
  tag?: string
  /** Default 'none': random data does not compress, and plain tar is fastest to generate. */
  compression?: 'gzip' | 'none'
}

/** Pushes a single-layer OCI image whose layer holds `sizeBytes` random bytes, streamed to disk, for benchmarks. */
export async function pushLargeBlobImage (registryHost: string, sizeBytes: number, options: PushLargeBlobOptions = {}): Promise<PushedImage> {
  const tag = options.tag ?? 'v1'
  const built = await buildImage({ layers: [{ sizeBytes, compression: options.compression ?? 'none' }], tag })
  try {
    return await pushLayout(built, registryHost, options.repository ?? 'bench/large', tag, options)
  } finally {
    await built.cleanup()
  }
}
