// Container images without Docker, for the Kubernetes test: each layer is a directory tree staged on disk, packed by
// tar(1) and gzip, hashed as it streams to the OCI layout (diff_id over the tar, digest over the gzip); the layout is
// then pushed with skopeo (test/helpers/images.ts pushLayout).
import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { chmod, copyFile, mkdir, rename, symlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { HashTap, OciLayoutWriter, type BuiltLayout, type ImageDescriptor } from '../helpers/images.ts'
import { makeTempDir } from '../helpers/tmp.ts'
import { requireKnownTool } from '../helpers/tools.ts'

/** One entry of a layer: a copy of a host file, a file with the given content, or a symbolic link. */
export type LayerEntry =
  | { path: string, from: string, mode?: number }
  | { path: string, content: string | Buffer, mode?: number }
  | { path: string, symlink: string }

export interface ImageConfig {
  entrypoint?: string[]
  cmd?: string[]
  env?: Record<string, string>
  workingDir?: string
  user?: string
}

async function stage (dir: string, entries: readonly LayerEntry[]): Promise<void> {
  for (const entry of entries) {
    const target = join(dir, entry.path)
    await mkdir(dirname(target), { recursive: true })
    if ('symlink' in entry) {
      await symlink(entry.symlink, target)
    } else if ('from' in entry) {
      await copyFile(entry.from, target)
      await chmod(target, entry.mode ?? 0o755)
    } else {
      await writeFile(target, entry.content)
      await chmod(target, entry.mode ?? 0o644)
    }
  }
}

/** Packs `dir` into a gzip layer blob of `layout`; returns its descriptor and diff_id. */
async function packLayer (layout: OciLayoutWriter, dir: string, index: number): Promise<{ descriptor: ImageDescriptor, diffId: string }> {
  const tarBin = requireKnownTool('tar')
  const tmp = join(layout.dir, `.layer-${index}.tmp`)
  const tar = spawn(tarBin, ['--sort=name', '--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '-C', dir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  tar.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((resolve) => tar.once('close', resolve))
  const tarTap = new HashTap()
  const blobTap = new HashTap()
  await pipeline(tar.stdout, tarTap, createGzip({ level: 1 }), blobTap, createWriteStream(tmp))
  const code = await exited
  if (code !== 0) throw new Error(`tar of ${dir} exited ${String(code)}: ${stderr}`)
  const digest = 'sha256:' + blobTap.hash.digest('hex')
  await rename(tmp, layout.blobPath(digest))
  return { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: blobTap.bytes }, diffId: 'sha256:' + tarTap.hash.digest('hex') }
}

/** Builds a linux/amd64 image from layers of entries, as an OCI layout tagged `tag`, ready for pushLayout. */
export async function buildRootfsImage (layers: ReadonlyArray<readonly LayerEntry[]>, config: ImageConfig, tag = 'latest'): Promise<BuiltLayout> {
  const tmp = await makeTempDir('spegel-k8s-image')
  try {
    const layout = new OciLayoutWriter(join(tmp.path, 'layout'))
    await layout.init()
    const descriptors: ImageDescriptor[] = []
    const diffIds: string[] = []
    for (const [i, entries] of layers.entries()) {
      const dir = join(tmp.path, `layer-${i}`)
      await mkdir(dir)
      await stage(dir, entries)
      const { descriptor, diffId } = await packLayer(layout, dir, i)
      descriptors.push(descriptor)
      diffIds.push(diffId)
    }
    const env = Object.entries(config.env ?? { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' }).map(([k, v]) => `${k}=${v}`)
    const configDescriptor = await layout.writeJson({
      created: '2026-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: {
        Env: env,
        ...(config.entrypoint !== undefined ? { Entrypoint: config.entrypoint } : {}),
        ...(config.cmd !== undefined ? { Cmd: config.cmd } : {}),
        ...(config.workingDir !== undefined ? { WorkingDir: config.workingDir } : {}),
        ...(config.user !== undefined ? { User: config.user } : {}),
      },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `spegel-ts k8s test layer ${i}` })),
    }, 'application/vnd.oci.image.config.v1+json')
    const manifestType = 'application/vnd.oci.image.manifest.v1+json'
    const manifest = await layout.writeJson({ schemaVersion: 2, mediaType: manifestType, config: configDescriptor, layers: descriptors }, manifestType)
    const top = { ...manifest, platform: { architecture: 'amd64', os: 'linux' } }
    layout.addRef(top, tag)
    await layout.finish()
    return {
      dir: layout.dir,
      tag,
      source: `oci:${layout.dir}:${tag}`,
      descriptor: top,
      manifests: [{ descriptor: top, config: configDescriptor, layers: descriptors, diffIds }],
      cleanup: tmp.cleanup,
    }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

/** A busybox userland (busybox-static): /bin/busybox and a link per applet the test images use. */
export function busyboxEntries (busybox: string): LayerEntry[] {
  const applets = ['sh', 'sleep', 'cat', 'ls', 'wget', 'true', 'echo', 'nslookup']
  return [
    { path: 'bin/busybox', from: busybox, mode: 0o755 },
    ...applets.map((a) => ({ path: `bin/${a}`, symlink: 'busybox' })),
    { path: 'tmp/.keep', content: '' },
    { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' },
    { path: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
  ]
}
