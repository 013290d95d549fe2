// Start-up failures of `spegel registry`, each seen from a real process: its exit code and its one-line message.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it, test } from 'node:test'
import { promisify } from 'node:util'
import { readOnlyDir } from '../../helpers/tmp.ts'

const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url))

/** The exit code and the one-line summary (`spegel …: message`); the JSON log lines around it are skipped. */
async function run (args: string[], env: Record<string, string>): Promise<{ code: number, summary: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 }, (err, _stdout, stderr) => {
      const summary = stderr.split('\n').filter((l) => l.startsWith('spegel')).join('\n')
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, summary })
    })
  })
}

// Configuration mistakes end the process before it touches containerd, with one line naming what is wrong.
describe('registry refuses bad filters, lists and bootstrap flags at start-up', () => {
  const base = ['registry', '--bootstrap-kind=static', '--containerd-sock=/nonexistent/containerd.sock']
  const cases: Array<[name: string, args: string[], env: Record<string, string>, code: number, summary: RegExp]> = [
    ['a lookbehind filter', ['--registry-filters', ':latest$', '(?<=a)b'], {}, 1,
      /^spegel registry: invalid registry filter "\(\?<=a\)b": error parsing regexp: invalid named capture: `\(\?<=a\)b` \(filters are Go RE2/],
    ['a backreference in REGISTRY_FILTERS', [], { REGISTRY_FILTERS: '(a)\\1' }, 1, /^spegel registry: invalid registry filter "\(a\)\\\\1": error parsing regexp: invalid escape sequence/],
    ['a bare quote in REGISTRY_FILTERS', [], { REGISTRY_FILTERS: 'a"b' }, 2, /^spegel: env REGISTRY_FILTERS: invalid CSV \(parse error on line 1, column 2: bare " in non-quoted-field\)/],
    ['a space after a comma in MIRRORED_REGISTRIES, as Spegel', [], { MIRRORED_REGISTRIES: 'https://a.io, https://b.io' }, 1,
      /^spegel registry: --mirrored-registries: invalid registry url " https:\/\/b\.io"/],
    ['both HTTP bootstrap sources', ['--bootstrap-kind=http', '--http-bootstrap-peer=http://a:1', '--http-bootstrap-url=http://a:1/id'], {}, 1,
      /^spegel registry: --http-bootstrap-url and --http-bootstrap-peer are alternatives/],
  ]
  for (const [name, args, env, code, summary] of cases) {
    it(`${name}: exit ${code}`, async () => {
      const res = await run([...base, ...args], env)
      assert.equal(res.code, code, res.summary)
      assert.match(res.summary, summary)
      assert.ok(!res.summary.includes('\n'), res.summary)
    })
  }
})

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

test('spegel registry with a read-only data dir exits 1 with the message as its last stderr line', async (t) => {
  const ro = await readOnlyDir(t)
  const dataDir = join(ro, 'data')
  const res = await promisify(execFile)(process.execPath, [cli, 'registry', `--data-dir=${dataDir}`, '--bootstrap-kind=static',
    '--registry-addr=127.0.0.1:0', '--metrics-addr=127.0.0.1:0', '--router-addr=127.0.0.1:0', `--containerd-sock=${join(ro, 'none.sock')}`],
  { timeout: 30_000, env: { ...process.env, SPEGEL_BASIC_AUTH_DIR: join(ro, 'none') } }).then(
    () => assert.fail('spegel registry should fail'),
    (err: { code?: number, stderr?: string }) => err)
  assert.equal(res.code, 1)
  const lines = (res.stderr ?? '').trimEnd().split('\n')
  // The plain line and the (asynchronous) JSON log lines may come in either order.
  const plain = lines.filter((l) => !l.startsWith('{'))
  assert.equal(plain.length, 1, `one plain line, not a stack trace:\n${res.stderr ?? ''}`)
  assert.match(plain[0] ?? '', new RegExp(`^spegel registry: data dir ${escape(dataDir)} is not writable \\((EROFS|EACCES)\\): mount a writable volume at ${escape(dataDir)}, or unset --data-dir / DATA_DIR`))
  for (const line of lines) if (line.startsWith('{')) assert.doesNotThrow(() => JSON.parse(line), line)
})
