import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, it } from 'node:test'
import { distro, goArch, goOs, readOsRelease } from '../../../src/version.ts'

const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url))
const run = async (...args: string[]): Promise<string> => (await promisify(execFile)(process.execPath, [cli, ...args], { env: { ...process.env, SPEGEL_COMMIT: 'abc123' } })).stdout

describe('spegel version', () => {
  it('--format=json has the shape of Spegel\'s version.Info, keys in Go\'s order', async () => {
    const text = await run('version', '--format=json')
    const info = JSON.parse(text) as { build: Record<string, string>, runtime: Record<string, string> }
    const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
    assert.deepEqual(Object.keys(info), ['build', 'runtime'])
    assert.deepEqual(Object.keys(info.build), ['goVersion', 'version', 'commit'])
    assert.deepEqual(Object.keys(info.runtime), ['distro', 'os', 'arch'])
    assert.equal(info.build.version, pkg.version)
    assert.equal(info.build.commit, 'abc123')
    assert.equal(info.build.goVersion, `node${process.versions.node}`)
    assert.equal(info.runtime.os, goOs(process.platform))
    assert.equal(info.runtime.arch, goArch(process.arch))
    assert.equal(info.runtime.distro, distro(readOsRelease()))
  })

  it('text is "spegel version <version> <commit>"', async () => {
    const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
    assert.equal(await run('version'), `spegel version ${pkg.version} abc123\n`)
  })

  // Spegel's getDistro (internal/version): the PRETTY_NAME line, trimmed, without its surrounding quotes.
  const osReleases: Array<[osRelease: string | undefined, distro: string]> = [
    ['PRETTY_NAME="Distroless"\nID=debian\n', 'Distroless'],
    ['NAME="Debian GNU/Linux"\n  PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"  \n', 'Debian GNU/Linux 12 (bookworm)'],
    ['PRETTY_NAME=Alpine\n', 'Alpine'],
    ['ID=debian\n', 'unknown'],
    [undefined, 'unknown'],
  ]
  for (const [osRelease, expected] of osReleases) {
    it(`distro of ${JSON.stringify(osRelease)} is ${expected}`, () => { assert.equal(distro(osRelease), expected) })
  }

  // Node's names → Go's GOOS/GOARCH, which is what Spegel reports.
  const names: Array<[node: string, go: string]> = [['x64', 'amd64'], ['arm64', 'arm64'], ['arm', 'arm'], ['ia32', '386'], ['s390x', 's390x'], ['riscv64', 'riscv64']]
  for (const [node, go] of names) it(`arch ${node} is ${go}`, () => { assert.equal(goArch(node), go) })
  it('arch ppc64 is ppc64le on little-endian machines', () => {
    assert.equal(goArch('ppc64', true), 'ppc64le')
    assert.equal(goArch('ppc64', false), 'ppc64')
  })
  it('os win32 is windows, linux and darwin stay', () => {
    assert.deepEqual(['win32', 'linux', 'darwin'].map(goOs), ['windows', 'linux', 'darwin'])
  })
})
