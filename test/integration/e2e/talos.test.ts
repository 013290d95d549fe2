// containerd: 2.x only (Talos ships containerd 2; its CRI tables do not exist in 1.x). scripts/run-tests.ts leaves
// this file out of the 1.x passes; run alone with SPEGEL_TEST_CONTAINERD=1.6 it fails saying so.
//
// Issue 16: the Talos machine patch, applied to a containerd that reads it. Each node's containerd is configured as
// Talos configures it (test/helpers/containerd.ts `talos`): config version 3 importing Talos's own base part
// (`discard_unpacked_layers = true`, `config_path`) and then the machine config's `/etc/cri/conf.d/*.part` files. The
// machine files come from talos-patches/spegel-machine-patch.yaml itself, and from the old guide's patch
// (../shared/reference/talos-guide-seed.md), which writes /var/etc/cri/conf.d/20-spegel.part: a path Talos never
// imports.
//
//   with our patch: node 1 pulls an image (CRI, as the kubelet does), keeps its layers, and node 2's pull of it takes
//     nothing from the upstream: node 1 serves every blob.
//   with the old guide's patch: node 1's layers are gone after the pull, so node 2 must fetch them from the upstream;
//     node 1's daemon says why within seconds of the pull (/readyz?verbose, spegel_doctor_findings), without waiting
//     for its periodic check, `spegel doctor` on node 1 names the cause and the fix, and once a peer was sent to node
//     1 for the layers in vain, node 1 stops advertising them.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { testContainerd } from '../../helpers/containerd.ts'
import { CriImages } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster } from '../../helpers/spegel-cluster.ts'
import { runSpegel } from '../../helpers/spegel.ts'
import { waitFor } from '../../helpers/wait.ts'

const containerd = testContainerd()
const patchFile = fileURLToPath(new URL('../../../talos-patches/spegel-machine-patch.yaml', import.meta.url))
/** The old guide's Step 1 patch, as users copied it. */
const oldGuidePatch = `machine:
  files:
    - path: /var/etc/cri/conf.d/20-spegel.part
      op: create
      permissions: 0o000
      content: |
        [plugins."io.containerd.cri.v1.images"]
          discard_unpacked_layers = false
`

interface MachineFile { path: string, content: string }

function machineFiles (yamlText: string): MachineFile[] {
  const doc = parse(yamlText) as { machine?: { files?: Array<{ path?: unknown, content?: unknown }> } }
  const files = doc.machine?.files ?? []
  assert.ok(files.length > 0, 'the patch has machine.files')
  return files.map((f) => {
    assert.equal(typeof f.path, 'string')
    assert.equal(typeof f.content, 'string')
    return { path: f.path as string, content: f.content as string }
  })
}

async function freshImage (cluster: SpegelCluster, repository: string): Promise<PushedImage> {
  const built = await buildImage({ layers: [{ sizeBytes: 3 * 1024 * 1024 }, { sizeBytes: 2 * 1024 * 1024 }], tag: 'v1' })
  try {
    return await pushLayout(built, cluster.upstreamHost, repository, 'v1')
  } finally {
    await built.cleanup()
  }
}

const layersOf = (image: PushedImage): string[] => image.children.filter((c) => c.mediaType.includes('layer')).map((c) => c.digest)

describe(`Talos-shaped containerd ${containerd.version}: the machine patch`, { timeout: 300_000 }, () => {
  before(() => {
    if (containerd.major < 2) throw new Error(`this test needs containerd 2.x (Talos ships it); SPEGEL_TEST_CONTAINERD=${containerd.name} names ${containerd.version}`)
    requireNetnsSupport()
  })

  describe('with talos-patches/spegel-machine-patch.yaml', () => {
    let cluster: SpegelCluster
    before(async () => {
      const files = machineFiles(await readFile(patchFile, 'utf8'))
      assert.ok(files.some((f) => f.path === '/etc/cri/conf.d/20-customization.part'), 'the patch writes the part Talos merges')
      cluster = await startSpegelCluster({ nodes: 2, prefix: 'talos-ok', talos: { files } })
    })
    after(async () => { await cluster?.stop() })

    it('node 1 keeps the layers it pulled, and node 2 gets every blob from node 1, none from the upstream', async () => {
      const [n1, n2] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]]
      const image = await freshImage(cluster, 'talos/kept')
      await new CriImages(n1.containerd.socket).pull(image.ref)
      const held = await n1.contentDigests()
      for (const layer of layersOf(image)) assert.ok(held.has(layer), `node 1 kept layer ${layer} (discard_unpacked_layers = false took effect)`)
      for (const c of image.children) await cluster.waitServable(n2, image.repository, 'blobs', c.digest, { timeoutMs: 30_000 })
      const before = cluster.upstream.blobBytesServed({ repository: image.repository })
      await new CriImages(n2.containerd.socket).pull(image.ref)
      await cluster.upstream.waitForQuiet({ quietMs: 500 })
      assert.equal(cluster.upstream.blobBytesServed({ repository: image.repository }) - before, 0, 'the upstream sent node 2 no blob')
      const n2held = await n2.contentDigests()
      for (const c of image.children) assert.ok(n2held.has(c.digest), `node 2 holds ${c.digest}`)
    })
  })

  describe('with the old guide\'s /var/etc/cri/conf.d/20-spegel.part', () => {
    let cluster: SpegelCluster
    before(async () => {
      cluster = await startSpegelCluster({ nodes: 2, prefix: 'talos-old', talos: { files: machineFiles(oldGuidePatch) } })
    })
    after(async () => { await cluster?.stop() })

    it('node 1 loses its layers, node 2 pulls them from the upstream, and node 1\'s daemon and spegel doctor say why', async () => {
      const [n1, n2] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]]
      const image = await freshImage(cluster, 'talos/discarded')
      // The daemon's first doctor run (at start) has seen no image: nothing to find yet.
      const start = await (await fetch(`http://${n1.ip}:${metricsPort}/metrics`)).text()
      assert.match(start, /^spegel_doctor_findings\{check="missing-layers"\} 0$/m)

      await new CriImages(n1.containerd.socket).pull(image.ref)
      const pulledAt = performance.now()
      await waitFor(async () => {
        const held = await n1.contentDigests()
        return layersOf(image).every((l) => !held.has(l))
      }, { timeoutMs: 30_000, what: 'containerd to discard node 1\'s unpacked layers (Talos\'s base part, which the old path does not override)' })

      // Within seconds of the pull, not at the doctor's next periodic run (10 minutes).
      await waitFor(async () => (await (await fetch(`http://${n1.ip}:${metricsPort}/metrics`)).text()).includes('spegel_doctor_findings{check="missing-layers"} 1'), {
        timeoutMs: 20_000, what: 'node 1\'s daemon to report the missing layers',
      })
      const seconds = (performance.now() - pulledAt) / 1000
      const readyz = await (await fetch(`${n1.mirrorUrl}/readyz?verbose`)).text()
      assert.match(readyz, /\[-\]doctor missing-layers: /, readyz)
      assert.match(readyz, /missing-layers: \d+ image\(s\) have their manifest but not all their layers: .*talos\/discarded:v1 \(2 layer\(s\) missing\)/, readyz)
      assert.ok(seconds < 20, `reported ${seconds.toFixed(1)} s after the pull`)

      const doctor = await runSpegel(['doctor', `--containerd-sock=${n1.containerd.socket}`, `--containerd-content-path=${n1.containerd.contentPath}`,
        `--containerd-registry-config-path=${n1.hostsDir}`, '--mirrored-registries', `http://${cluster.upstreamHost}`, '--mirror-targets', n1.mirrorUrl, '--format=json'], { allowNonZero: true })
      assert.equal(doctor.code, 1, doctor.stdout + doctor.stderr)
      const report = JSON.parse(doctor.stdout) as { findings: Array<{ check: string, problem: string, fix: string }> }
      const missing = report.findings.find((f) => f.check === 'missing-layers')
      assert.ok(missing !== undefined, doctor.stdout)
      assert.match(missing.fix, /\[plugins\."io\.containerd\.cri\.v1\.images"\]\n\s*discard_unpacked_layers = false/, 'the fix is the containerd 2 table')

      // What the old path costs: node 1 advertised the image, but cannot serve its layers; node 2's pull still
      // succeeds (containerd falls back to the upstream) and the layers come from the upstream.
      const before = cluster.upstream.blobBytesServed({ repository: image.repository })
      await new CriImages(n2.containerd.socket).pull(image.ref)
      await cluster.upstream.waitForQuiet({ quietMs: 500 })
      const layerBytes = image.children.filter((c) => layersOf(image).includes(c.digest)).reduce((n, c) => n + c.size, 0)
      assert.ok(cluster.upstream.blobBytesServed({ repository: image.repository }) - before >= layerBytes, 'the upstream sent node 2 the layers node 1 no longer had')
      // Node 2 was sent to node 1 for the layers and got 404: node 1 withdraws them (containerd removed them without
      // an event), so peers stop being sent there. Its manifest and config stay advertised.
      await waitFor(async () => {
        const metrics = await (await fetch(`http://${n1.ip}:${metricsPort}/metrics`)).text()
        const line = metrics.split('\n').find((l) => l.startsWith('spegel_advertised_content_digests{'))
        return line !== undefined && Number(line.split(' ').at(-1)) === image.children.length - layersOf(image).length + 1
      }, { timeoutMs: 10_000, what: 'node 1 to withdraw the layers it no longer has' })
    })
  })
})
