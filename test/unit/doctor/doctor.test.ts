import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import {
  criImageSettings, Doctor, formatReport, readyzDetail, splitConfigPath, talosDiscardPatch,
  type CriApi, type DoctorReport,
} from '../../../src/doctor/index.ts'
import { Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { MemoryStore } from '../../../src/store/memory.ts'

/** containerd 1.6's CRI Status info["config"], trimmed to what matters. */
function config16 (configPath: string, discard: boolean): Record<string, string> {
  return { config: JSON.stringify({ containerd: { snapshotter: 'overlayfs', discardUnpackedLayers: discard, runtimes: { runc: {} } }, registry: { configPath, mirrors: null }, cni: {} }), golang: '"go1.19"' }
}

function fakeCri (info: Record<string, string>, version = '1.6.20'): CriApi {
  return {
    version: async () => ({ runtimeName: 'containerd', runtimeVersion: version, runtimeApiVersion: 'v1' }),
    status: async () => ({ conditions: [], info }),
  }
}

/** An image whose manifest and config are present; `withLayer` decides whether its layer is. */
function storeWithImage (withLayer: boolean): MemoryStore {
  const store = new MemoryStore()
  const layer = Buffer.alloc(100, 1)
  const layerDigest = withLayer ? store.addBlob(layer, MediaType.ociLayerGzip) : 'sha256:' + '4'.repeat(64)
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })
  const configDigest = store.addBlob(config, MediaType.ociConfig)
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length }, layers: [{ mediaType: MediaType.ociLayerGzip, digest: layerDigest, size: 100 }] })
  const manifestDigest = store.addBlob(manifest, MediaType.ociManifest)
  // An index whose other platform is absent: normal, not a finding.
  const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [
    { mediaType: MediaType.ociManifest, digest: manifestDigest, size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
    { mediaType: MediaType.ociManifest, digest: 'sha256:' + '5'.repeat(64), size: 500, platform: { os: 'linux', architecture: 'arm64' } },
  ] })
  store.addImage('example.com/team/app:1.0', store.addBlob(index, MediaType.ociIndex))
  return store
}

describe('reading the CRI config', () => {
  it('finds config_path and discard_unpacked_layers in containerd 1.6 and in 2.x-style image config', () => {
    assert.deepEqual(criImageSettings(config16('/etc/containerd/certs.d', true)), {
      configPath: '/etc/containerd/certs.d', configPathSource: 'config.registry.configPath',
      discardUnpackedLayers: true, discardSource: 'config.containerd.discardUnpackedLayers',
    })
    const v2 = criImageSettings({ config: JSON.stringify({ containerd: { runtimes: {} }, cni: {} }), imageConfig: JSON.stringify({ discardUnpackedLayers: false, registry: { configPath: '/etc/cri/conf.d/hosts' } }) })
    assert.equal(v2.configPath, '/etc/cri/conf.d/hosts')
    assert.equal(v2.discardUnpackedLayers, false)
    assert.equal(v2.discardSource, 'imageConfig.discardUnpackedLayers')
    // containerd 2.x reporting only the runtime config: unknown, not "unset".
    assert.deepEqual(criImageSettings({ config: JSON.stringify({ containerd: { runtimes: {} } }), golang: 'not json' }), {})
  })

  it('splits multi-directory config_path values', () => {
    assert.deepEqual(splitConfigPath('/etc/containerd/certs.d:/etc/docker/certs.d/'), ['/etc/containerd/certs.d', '/etc/docker/certs.d'])
    assert.deepEqual(splitConfigPath(''), [])
  })
})

describe('Doctor', () => {
  let dir = ''
  let hosts = ''
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spegel-doctor-'))
    hosts = join(dir, 'certs.d')
    await mkdir(join(hosts, 'example.com'), { recursive: true })
    await writeFile(join(hosts, 'example.com', 'hosts.toml'), "server = 'https://example.com'\n\n[host.'http://10.0.0.1:30020']\ncapabilities = ['pull', 'resolve']\n")
  })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  const init = (): ConstructorParameters<typeof Doctor>[1] => ({ registryConfigPath: hosts, mirroredRegistries: ['https://example.com'], mirrorTargets: ['http://10.0.0.1:30020'] })

  it('reports nothing for a correct node, and sets the findings gauge to 0 for every check', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const doctor = new Doctor({ store: storeWithImage(true), cri: fakeCri(config16(`${hosts}:/etc/docker/certs.d`, false)), metrics }, init())
    const report = await doctor.run()
    assert.deepEqual(report.findings, [])
    assert.deepEqual(report.results.map((r) => [r.check, r.status]), [
      ['containerd', 'ok'], ['config-path', 'ok'], ['discard-unpacked-layers', 'ok'], ['missing-layers', 'ok'], ['hosts-toml', 'ok'],
      // Only the daemon counts containerd's requests to the mirror.
      ['mirror-traffic', 'skipped'],
    ])
    assert.equal(doctor.lastReport, report)
    const text = await metrics.registry.metrics()
    for (const check of ['containerd', 'config-path', 'discard-unpacked-layers', 'missing-layers', 'hosts-toml', 'mirror-traffic']) {
      assert.match(text, new RegExp(`^spegel_doctor_findings\\{check="${check}"\\} 0$`, 'm'))
    }
    assert.match(formatReport(report), /^spegel doctor: no findings\n/)
  })

  it('reports each misconfiguration with what, why and the fix', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const doctor = new Doctor({ store: storeWithImage(false), cri: fakeCri(config16('', true)), metrics }, { ...init(), mirrorTargets: ['http://10.0.0.9:30020'] })
    const report = await doctor.run()
    assert.deepEqual(report.findings.map((f) => f.check), ['config-path', 'discard-unpacked-layers', 'missing-layers', 'hosts-toml'])
    for (const f of report.findings) {
      assert.ok(f.problem.length > 10 && f.impact.length > 10 && f.fix.length > 10, f.check)
    }
    const byCheck = new Map(report.findings.map((f) => [f.check, f]))
    assert.match(byCheck.get('config-path')?.fix ?? '', /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.registry\]\n {2}config_path = ".*certs\.d"/)
    assert.match(byCheck.get('discard-unpacked-layers')?.fix ?? '', /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\n {2}discard_unpacked_layers = false/)
    assert.match(byCheck.get('missing-layers')?.problem ?? '', /example\.com\/team\/app:1\.0 \(1 layer\(s\) missing\)/)
    assert.match(byCheck.get('missing-layers')?.fix ?? '', /ctr -n k8s\.io content fetch example\.com\/team\/app:1\.0/)
    assert.match(byCheck.get('hosts-toml')?.problem ?? '', /does not name this node's mirror http:\/\/10\.0\.0\.9:30020 \(hosts: http:\/\/10\.0\.0\.1:30020\)/)
    assert.match(await metrics.registry.metrics(), /^spegel_doctor_findings\{check="missing-layers"\} 1$/m)
    const text = formatReport(report)
    assert.match(text, /^spegel doctor: 4 findings\n/)
    assert.match(text, /\[FINDING\] config-path/)
    assert.match(text, /What is wrong: .*\nWhy it matters: .*\nFix:\n {2}/)
  })

  it('names config_path directories that do not include the mirror configuration', async () => {
    const report = await new Doctor({ store: storeWithImage(true), cri: fakeCri(config16('/etc/containerd/certs.d:/etc/docker/certs.d', false)) }, init()).run()
    const f = report.findings.find((x) => x.check === 'config-path')
    assert.ok(f !== undefined)
    assert.match(f.problem, /reads hosts from \/etc\/containerd\/certs\.d:\/etc\/docker\/certs\.d, but the mirror configuration is written to /)
    assert.match(f.fix, /spegel\.containerdRegistryConfigPath=\/etc\/containerd\/certs\.d/)
  })

  it('uses the containerd 2.x table and, on Talos, prints the machine-config patch', async () => {
    const cri = fakeCri({ imageConfig: JSON.stringify({ discardUnpackedLayers: true, registry: { configPath: '/etc/cri/conf.d/hosts' } }) }, 'v2.1.4')
    const v2 = await new Doctor({ store: storeWithImage(true), cri, plugins: async () => [{ type: 'io.containerd.cri.v1', id: 'images' }] }, { ...init(), talos: false }).run()
    assert.equal(v2.layout, 'cri.v1.images')
    assert.match(v2.findings.find((f) => f.check === 'discard-unpacked-layers')?.fix ?? '', /\[plugins\."io\.containerd\.cri\.v1\.images"\]\n {2}discard_unpacked_layers = false/)

    const talos = await new Doctor({ store: storeWithImage(false), cri }, { registryConfigPath: '/etc/cri/conf.d/hosts', hostsOptional: true }).run()
    assert.equal(talos.talos, true)
    const fix = talos.findings.find((f) => f.check === 'discard-unpacked-layers')?.fix ?? ''
    assert.ok(fix.includes(talosDiscardPatch))
    assert.match(fix, /path: \/etc\/cri\/conf\.d\/20-customization\.part/)
    assert.match(fix, /--mode=reboot/)
    assert.doesNotMatch(talosDiscardPatch, /\/var\/etc|grpc\.v1\.cri/)
    assert.equal(talos.results.find((r) => r.check === 'hosts-toml')?.status, 'skipped')
  })

  it('skips what containerd does not report instead of guessing; an unreachable containerd is a finding', async () => {
    const unknown = await new Doctor({ store: storeWithImage(true), cri: fakeCri({ config: '{"containerd":{}}' }, '2.0.0') }, init()).run()
    assert.equal(unknown.results.find((r) => r.check === 'config-path')?.status, 'skipped')
    assert.equal(unknown.results.find((r) => r.check === 'discard-unpacked-layers')?.status, 'skipped')
    assert.deepEqual(unknown.findings, [])

    const down = new MemoryStore()
    down.listImages = async () => { throw new Error('connection refused') }
    const report = await new Doctor({ store: down, cri: fakeCri({}) }, init()).run()
    assert.deepEqual(report.findings.map((f) => f.check), ['containerd'])
    assert.match(report.findings[0]?.problem ?? '', /connection refused/)
  })

  it('reads hosts.toml below --host-root while comparing the node\'s own paths', async () => {
    const report = await new Doctor({ store: storeWithImage(true), cri: fakeCri(config16('/certs.d', false)) }, { ...init(), registryConfigPath: '/certs.d', hostRoot: dir }).run()
    assert.deepEqual(report.findings, [])
    assert.match(report.results.find((r) => r.check === 'hosts-toml')?.summary ?? '', /^hosts\.toml in \/certs\.d sends example\.com to http:\/\/10\.0\.0\.1:30020$/)
  })

  it('with every registry mirrored, a registry directory that does not name the mirror is a finding (containerd reads it instead of _default)', async (t) => {
    const certs = join(dir, 'shadow.d')
    t.after(async () => { await rm(certs, { recursive: true, force: true }) })
    const write = async (name: string, text: string): Promise<void> => {
      await mkdir(join(certs, name), { recursive: true })
      await writeFile(join(certs, name, 'hosts.toml'), text)
    }
    await write('_default', "[host.'http://10.0.0.1:30020']\ncapabilities = ['pull', 'resolve']\n")
    await write('registry.corp', "server = 'https://registry.corp'\n\n[host.'http://10.0.0.1:30020']\ncapabilities = ['pull']\n\n[host.'https://registry.corp']\nca = 'ca.crt'\n")
    await write('_backup/ghcr.io', "server = 'https://ghcr.io'\n")
    const run = async (mirrorTargets?: string[]): Promise<DoctorReport> =>
      await new Doctor({ store: storeWithImage(true), cri: fakeCri(config16(certs, false)) }, { registryConfigPath: certs, mirroredRegistries: [], ...(mirrorTargets !== undefined ? { mirrorTargets } : {}) }).run()
    assert.deepEqual((await run()).findings, [], 'every registry directory names the mirror')
    // Talos rewrote a registry's directory after the configuration ran.
    await write('quay.io', "server = 'https://quay.io'\n\n[host.'https://quay-cache.corp']\ncapabilities = ['pull']\n")
    for (const report of [await run(), await run(['http://10.0.0.1:30020'])]) {
      assert.deepEqual(report.findings.map((f) => f.problem), [`${join(certs, 'quay.io', 'hosts.toml')} does not name this node's mirror http://10.0.0.1:30020, and containerd reads it for quay.io instead of _default.`])
    }
  })

  it('reports a missing hosts directory unless it is optional (the daemon does not mount it)', async () => {
    const missing = { registryConfigPath: join(dir, 'nope'), mirroredRegistries: [] }
    const strict = await new Doctor({ store: storeWithImage(true), cri: fakeCri(config16(join(dir, 'nope'), false)) }, missing).run()
    assert.match(strict.findings.find((f) => f.check === 'hosts-toml')?.problem ?? '', /no hosts\.toml for every registry \(_default\)/)
    const optional = await new Doctor({ store: storeWithImage(true), cri: fakeCri(config16(join(dir, 'nope'), false)) }, { ...missing, hostsOptional: true }).run()
    assert.deepEqual(optional.findings, [])
  })
})

describe('/readyz?verbose', () => {
  it('appends the doctor lines only when asked, keeping the status and the plain body', async () => {
    let report: DoctorReport | undefined
    // Not ready (the router has no peers yet): the detail must not change that.
    const app = createRegistryApp({ store: new MemoryStore(), logger: pino({ level: 'silent' }), ready: () => false, readinessDetail: () => readyzDetail(report) })
    const plain = await app.inject('/readyz')
    assert.equal(plain.statusCode, 503)
    assert.equal(plain.body, 'not ready')
    const early = await app.inject('/readyz?verbose')
    assert.equal(early.statusCode, 503)
    assert.match(early.body, /^not ready\n\[\?\]doctor: not run yet\n$/)
    report = await new Doctor({ store: storeWithImage(false), cri: fakeCri(config16('/x', false)) }, { registryConfigPath: '/x', hostsOptional: true }).run()
    const verbose = await app.inject('/readyz?verbose=1')
    assert.match(verbose.body, /\[\+\]doctor config-path: ok/)
    assert.match(verbose.body, /\[-\]doctor missing-layers: layers missing/)
    assert.match(verbose.body, /\[\+\]doctor hosts-toml: skipped/)
    await app.close()
  })
})

describe('Doctor: mirror traffic (daemon only)', () => {
  const cri = fakeCri(config16('/etc/containerd/certs.d', false))
  const options = { registryConfigPath: '/etc/containerd/certs.d', hostsOptional: true, mirroredRegistries: ['https://docker.io', 'https://ghcr.io'] }
  const traffic = (report: { results: Array<{ check: string, status: string, summary: string }> }) => report.results.find((r) => r.check === 'mirror-traffic')
  const pull = (store: MemoryStore, name: string, seed: string): void => { store.addImage(name, store.addBlob(`manifest of ${name} ${seed}`, MediaType.ociManifest)) }

  it('finds containerd pulling images from mirrored registries without one request to the mirror', async () => {
    const store = new MemoryStore()
    pull(store, 'docker.io/library/old:1', 'a')
    let requests = 0
    const metrics = new Metrics({ defaultMetrics: false })
    const doctor = new Doctor({ store, cri, metrics, mirrorRequests: () => requests }, options)
    const first = await doctor.run()
    assert.equal(traffic(first)?.status, 'ok')
    assert.match(traffic(first)?.summary ?? '', /1 image\(s\) were here before/)
    // Two new images, the same image under a second name, and one from a registry that is not mirrored: below 3.
    pull(store, 'docker.io/library/app:1', 'b')
    pull(store, 'ghcr.io/org/tool:2', 'c')
    store.addImage('docker.io/library/app@sha256:' + 'b'.repeat(64), (await store.resolve('docker.io/library/app:1')))
    pull(store, 'quay.io/other/thing:3', 'd')
    const second = await doctor.run()
    assert.equal(traffic(second)?.status, 'ok')
    assert.match(traffic(second)?.summary ?? '', /^2 new image\(s\)/)
    pull(store, 'docker.io/library/third:1', 'e')
    const third = await doctor.run()
    assert.equal(traffic(third)?.status, 'finding')
    const [f] = third.findings
    assert.equal(f?.check, 'mirror-traffic')
    assert.match(f?.problem ?? '', /containerd stored 3 new images since the daemon started \(.*docker\.io\/library\/app:1.*\) without sending this mirror a single request/)
    assert.match(f?.fix ?? '', /config_path/)
    assert.match(await metrics.registry.metrics(), /^spegel_doctor_findings\{check="mirror-traffic"\} 1$/m)
    // One request from containerd is proof enough that it uses the mirror.
    requests = 1
    const fourth = await doctor.run()
    assert.equal(traffic(fourth)?.status, 'ok')
    assert.match(traffic(fourth)?.summary ?? '', /sent the mirror 1 request/)
  })

  it('gives the Talos fix on Talos', async () => {
    const store = new MemoryStore()
    const doctor = new Doctor({ store, cri, mirrorRequests: () => 0 }, { ...options, registryConfigPath: '/etc/cri/conf.d/hosts', talos: true })
    await doctor.run()
    for (const [i, name] of ['docker.io/a/b:1', 'docker.io/a/c:1', 'ghcr.io/a/d:1'].entries()) pull(store, name, String(i))
    const report = await doctor.run()
    assert.match(report.findings.find((f) => f.check === 'mirror-traffic')?.fix ?? '', /spegel\.containerdRegistryConfigPath=\/etc\/cri\/conf\.d\/hosts/)
  })
})
