// `spegel doctor` against real containerd (SPEGEL_TEST_CONTAINERD: 1.6, 2.1, 2.4): a node configured the way the docs
// ask reports nothing; a node with every classic mistake (layers discarded by config and in fact, config_path unset,
// no hosts.toml) gets one finding per mistake it can see, each with its fix, and exit code 1. containerd 1.x reports
// its CRI image settings (config_path, discard_unpacked_layers) in the CRI Status; 2.x does not (its image settings
// moved to another plugin), so there those two checks say they are skipped and why, and the layers themselves and the
// hosts.toml files are what is checked.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { makeImage, startContainerd, testContainerd, writeOciArchive, type ContainerdInstance, type TestImage } from '../../helpers/containerd.ts'
import { runSpegel } from '../../helpers/spegel.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

const target = 'http://127.0.0.1:30020'

async function importImage (c: ContainerdInstance, image: TestImage): Promise<void> {
  const archive = join(c.dir, 'image.tar')
  await writeOciArchive(archive, [image])
  await c.ctr(['images', 'import', '--no-unpack', archive])
}

function doctorArgs (c: ContainerdInstance, extra: string[] = []): string[] {
  return ['doctor', `--containerd-sock=${c.socket}`, `--containerd-content-path=${c.contentPath}`, `--containerd-registry-config-path=${c.configPath}`,
    '--mirrored-registries', 'https://registry.example.com', '--mirror-targets', target, ...extra]
}

const containerd = testContainerd()
const reportsCriConfig = containerd.major < 2

describe(`spegel doctor against real containerd ${containerd.version}`, { timeout: 120_000 }, () => {
  let good: ContainerdInstance
  let bad: ContainerdInstance
  let image: TestImage

  before(async () => {
    requireKnownTool('containerd')
    image = makeImage('registry.example.com/team/app:1.0', { layerSizes: [2000, 1000] })
    good = await startContainerd()
    bad = await startContainerd({ omitConfigPath: true, extraConfig: '[plugins."io.containerd.grpc.v1.cri".containerd]\n  discard_unpacked_layers = true\n' })
    await importImage(good, image)
    await importImage(bad, image)
    // What discard_unpacked_layers leaves behind: the manifest and config, but not the layer.
    const layer = image.blobs.at(-1)
    assert.ok(layer !== undefined)
    await bad.ctr(['content', 'rm', layer.digest])
    await runSpegel(['configuration', `--containerd-registry-config-path=${good.configPath}`, '--mirrored-registries', 'https://registry.example.com', '--mirror-targets', target])
  })
  after(async () => {
    await Promise.allSettled([good?.stop(), bad?.stop()])
  })

  it('reports no findings for a correctly configured node and exits 0', async () => {
    const res = await runSpegel(doctorArgs(good), { allowNonZero: true })
    assert.equal(res.code, 0, res.stdout + res.stderr)
    assert.match(res.stdout, /^spegel doctor: no findings\n/)
    if (containerd.major >= 2) assert.match(res.stdout, new RegExp(`^containerd ${containerd.version.replaceAll('.', '\\.')}, CRI config layout io\\.containerd\\.cri\\.v1\\.images$`, 'm'))
    if (reportsCriConfig) assert.match(res.stdout, /\[ok\] +config-path: containerd reads hosts from /)
    else assert.match(res.stdout, /\[skipped\] +config-path: containerd does not report its registry config_path \(containerd 2\.x\); the hosts\.toml check still runs/)
    assert.match(res.stdout, /\[ok\] +missing-layers: 1 image\(s\) examined/)
    assert.match(res.stdout, /\[ok\] +hosts-toml: /)
  })

  it('reports each misconfiguration with its fix and exits 1', async () => {
    const res = await runSpegel(doctorArgs(bad, ['--format=json']), { allowNonZero: true })
    assert.equal(res.code, 1, res.stdout + res.stderr)
    const report = JSON.parse(res.stdout) as { findings: Array<{ check: string, problem: string, impact: string, fix: string }> }
    assert.deepEqual(report.findings.map((f) => f.check), [...(reportsCriConfig ? ['config-path', 'discard-unpacked-layers'] : []), 'missing-layers', 'hosts-toml'])
    const by = new Map(report.findings.map((f) => [f.check, f]))
    if (reportsCriConfig) {
      assert.match(by.get('config-path')?.problem ?? '', /no registry config_path/)
      assert.match(by.get('config-path')?.fix ?? '', /config_path = ".*certs\.d"/)
      assert.match(by.get('discard-unpacked-layers')?.fix ?? '', /discard_unpacked_layers = false/)
    }
    assert.match(by.get('missing-layers')?.problem ?? '', /registry\.example\.com\/team\/app:1\.0 \(1 layer\(s\) missing\)/)
    assert.match(by.get('hosts-toml')?.problem ?? '', /no hosts\.toml for registry\.example\.com/)
    assert.match(by.get('hosts-toml')?.fix ?? '', /spegel configuration .*--mirror-targets http:\/\/127\.0\.0\.1:30020/)
  })

  it('prints the text report with what, why and fix for each finding', async () => {
    const res = await runSpegel(doctorArgs(bad), { allowNonZero: true })
    assert.equal(res.code, 1)
    const findings = reportsCriConfig ? 4 : 2
    assert.match(res.stdout, new RegExp(`^spegel doctor: ${findings} findings\n`))
    assert.equal((res.stdout.match(/^What is wrong: /gm) ?? []).length, findings)
    assert.equal((res.stdout.match(/^Why it matters: /gm) ?? []).length, findings)
    assert.equal((res.stdout.match(/^Fix:$/gm) ?? []).length, findings)
  })
})
