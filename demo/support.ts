// Small helpers of the demo: prerequisite check, images that share layers, formatting.
import { MediaType } from '../src/oci/mediatypes.ts'
import type { BuiltLayout, ImageDescriptor, ManifestInfo, OciLayoutWriter } from '../test/helpers/images.ts'
import { findTool } from '../test/helpers/tools.ts'

/** Debian package of each command the demo runs. */
const packages: Record<string, string> = {
  containerd: 'containerd',
  ctr: 'containerd',
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  ip: 'iproute2',
  tc: 'iproute2',
}

/** What is missing to run the demo, as a message saying exactly what to do; undefined when all is there. */
export function describeMissing (): string | undefined {
  const problems: string[] = []
  const missing = [...new Set(Object.keys(packages).filter((tool) => findTool(tool) === undefined).map((tool) => packages[tool]!))]
  if (missing.length > 0) {
    problems.push(`missing commands from Debian packages ${missing.join(', ')}: install them with\n    apt-get install -y ${missing.join(' ')}`)
  }
  if (process.getuid?.() !== 0) {
    problems.push('network namespaces, containerd and overlay mounts need root: run it as root, e.g.\n    sudo npm run demo')
  }
  if (problems.length === 0) return undefined
  return `cannot run the demo:\n  - ${problems.join('\n  - ')}`
}

/**
 * Writes an image into `layout` and names it `tag`: the base image's layers (when given) followed by new gzip layers
 * of random content of the given sizes.
 */
export async function buildImageFromLayout (layout: OciLayoutWriter, tag: string, newLayerSizes: number[], base?: ManifestInfo): Promise<BuiltLayout> {
  const layers: ImageDescriptor[] = base !== undefined ? base.layers.slice(0, 2) : []
  const diffIds: string[] = base !== undefined ? base.diffIds.slice(0, 2) : []
  for (const [i, sizeBytes] of newLayerSizes.entries()) {
    const { descriptor, diffId } = await layout.writeLayer({ sizeBytes }, MediaType.ociLayerGzip, `layer-${tag}-${i}.bin`)
    layers.push(descriptor)
    diffIds.push(diffId)
  }
  const config = await layout.writeJson({
    created: '2024-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
  }, MediaType.ociConfig)
  const strip = (d: ImageDescriptor): ImageDescriptor => ({ mediaType: d.mediaType, digest: d.digest, size: d.size })
  const descriptor = await layout.writeJson({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: strip(config),
    layers: layers.map(strip),
  }, MediaType.ociManifest)
  layout.addRef(descriptor, tag)
  const manifest: ManifestInfo = { descriptor, config, layers, diffIds }
  return { dir: layout.dir, tag, source: `oci:${layout.dir}:${tag}`, descriptor, manifests: [manifest], cleanup: async () => {} }
}

export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`
}

export function formatMs (ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`
}
