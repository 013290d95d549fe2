// The container image runs dist/spegel.mjs (one esbuild bundle) with the flags in the Dockerfile's ENTRYPOINT. This
// builds that bundle and runs it the way the image does, against a real containerd, so a bundling problem (a module
// that resolves differently, a file loaded relative to the sources) fails here rather than on a node.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { makeImage, startContainerd, writeOciArchive, type ContainerdInstance, type TestImage } from '../../helpers/containerd.ts'
import { run } from '../../helpers/process.ts'
import { startSpegelRegistry, type SpegelRegistry } from '../../helpers/spegel.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

const root = fileURLToPath(new URL('../../../', import.meta.url))
const bundle = join(root, 'dist', 'spegel.mjs')

/** The node flags the image's ENTRYPOINT passes, read from the Dockerfile so the test follows it. */
async function entrypointFlags (): Promise<string[]> {
  const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8')
  const m = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile)
  assert.ok(m !== null, 'Dockerfile has an exec-form ENTRYPOINT')
  const argv = JSON.parse(m[1] as string) as string[]
  assert.equal(argv.at(-1), '/app/dist/spegel.mjs')
  return argv.slice(1, -1)
}

describe('the bundled daemon, as the image runs it', { timeout: 120_000 }, () => {
  let node: ContainerdInstance
  let spegel: SpegelRegistry
  let image: TestImage

  before(async () => {
    requireKnownTool('containerd')
    await run('npm', ['run', 'bundle'], { cwd: root, timeoutMs: 120_000 })
    node = await startContainerd()
    image = makeImage('docker.io/library/bundled:1.0', { layerSizes: [700_000] })
    const archive = join(node.dir, 'image.tar')
    await writeOciArchive(archive, [image])
    await node.ctr(['images', 'import', '--no-unpack', archive])
  })
  after(async () => {
    await spegel?.stop()
    await node?.stop()
  })

  it('ships kad-dht\'s table of key prefixes as a file, number for number (the bundle reads it on first use)', async () => {
    const { default: prefixes } = await import(join(root, 'node_modules/@libp2p/kad-dht/dist/src/routing-table/generated-prefix-list.js')) as { default: number[] }
    const table = await readFile(join(root, 'dist', 'spegel-kad-prefixes.bin'))
    assert.equal(table.length, prefixes.length * 4)
    assert.ok(prefixes.every((n, i) => table.readUInt32LE(i * 4) === n))
    // The array literal itself is not in the bundle (388 KB of source kept in every daemon's heap).
    const modules = await Promise.all((await readdir(join(root, 'dist'))).filter((f) => f.endsWith('.mjs')).map(async (f) => await readFile(join(root, 'dist', f), 'utf8')))
    assert.ok(!modules.some((text) => text.includes(prefixes.slice(0, 8).join(','))))
    assert.ok(modules.some((text) => text.includes('spegel-kad-prefixes.bin')))
  })

  it('loads re2js only for --registry-filters: the registry command does not import it statically', async () => {
    const dist = join(root, 'dist')
    const files = (await readdir(dist)).filter((f) => f.endsWith('.mjs'))
    const texts = new Map(await Promise.all(files.map(async (f) => [f, await readFile(join(dist, f), 'utf8')] as const)))
    // One of re2js's own error messages (Go's regexp/syntax wording) marks the chunk that holds it.
    const defining = files.filter((f) => texts.get(f)?.includes('invalid or unsupported Perl syntax') === true)
    assert.equal(defining.length, 1, `one chunk holds re2js: ${defining.join(', ')}`)
    const command = files.find((f) => f.startsWith('spegel-registry-'))
    assert.ok(command !== undefined, 'the registry command is a chunk of its own')
    // The chunks a module imports statically (`import … from "./x.mjs"`, `import "./x.mjs"`; not `import("./x.mjs")`),
    // and theirs, transitively: what loading the registry command evaluates.
    const loaded = new Set<string>()
    const todo = [command]
    for (let f = todo.pop(); f !== undefined; f = todo.pop()) {
      if (loaded.has(f)) continue
      loaded.add(f)
      for (const m of (texts.get(f) ?? '').matchAll(/\bimport\s*(?:[\w$\s{},*]+?\s*from\s*)?["']\.\/([^"']+\.mjs)["']/g)) todo.push(m[1] as string)
    }
    assert.ok(loaded.size > 1, 'the registry command imports shared chunks')
    assert.ok(!loaded.has(defining[0] as string), `${defining[0]} (re2js) is loaded with the registry command`)
    assert.ok([...loaded].some((f) => texts.get(f)?.includes(`import("./${defining[0]}")`) === true), 're2js is imported on demand')
  })

  it('prints its version', async () => {
    const res = await run(process.execPath, [bundle, 'version', '--format', 'json'])
    const info = JSON.parse(res.stdout) as { build: { version: string } }
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string }
    assert.equal(info.build.version, pkg.version)
  })

  it('serves content from containerd with the image\'s node flags', async () => {
    const flags = await entrypointFlags()
    spegel = await startSpegelRegistry({
      cli: bundle,
      env: { NODE_OPTIONS: flags.join(' ') },
      containerdSocket: node.socket,
      // Empty: the bundle must find containerd's content directory through introspection (protos loaded from dist/).
      contentPath: '',
      args: ['--bootstrap-kind=static'],
    })
    const layer = image.blobs.find((b) => b.size === 700_000) ?? image.blobs[0]
    assert.ok(layer !== undefined)
    const res = await fetch(`${spegel.url}/v2/library/bundled/blobs/${layer.digest}`)
    assert.equal(res.status, 200)
    assert.equal('sha256:' + createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex'), layer.digest)
    const tag = await fetch(`${spegel.url}/v2/library/bundled/manifests/1.0?ns=docker.io`)
    assert.equal(tag.headers.get('docker-content-digest'), image.top.digest)
  })
})
