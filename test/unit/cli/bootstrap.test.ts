import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseCommandLine } from '../../../src/cli/args.ts'
import { bootstrapperFrom } from '../../../src/cli/registry.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'
import { DnsBootstrapper, HttpBootstrapper, StaticBootstrapper } from '../../../src/routing/bootstrap.ts'

const from = (argv: string[], env: Record<string, string> = {}) => {
  const parsed = parseCommandLine(['registry', ...argv], env, commands, globalFlags)
  assert.ok(parsed.command === 'registry')
  return bootstrapperFrom(parsed.config)
}

// Spegel v0.7.4 getBootstrapper (main.go): dns ⇒ NewDNSBootstrapper(domain); http ⇒ NewHTTPBootstrapper(addr, peer);
// static ⇒ NewStaticBootstrapperFromStrings(peers); anything else ⇒ "unknown bootstrap kind".
describe('--bootstrap-kind', () => {
  const ok: Array<[argv: string[], env: Record<string, string>, kind: new (...args: never[]) => unknown]> = [
    [['--bootstrap-kind=dns', '--dns-bootstrap-domain=spegel-bootstrap.spegel.svc.cluster.local.'], {}, DnsBootstrapper],
    [['--bootstrap-kind=http', '--http-bootstrap-addr=:5002', '--http-bootstrap-peer=http://10.0.0.1:5002'], {}, HttpBootstrapper],
    [[], { BOOTSTRAP_KIND: 'http', HTTP_BOOTSTRAP_ADDR: ':5002', HTTP_BOOTSTRAP_PEER: 'http://10.0.0.1:5002' }, HttpBootstrapper],
    [['--bootstrap-kind=http', '--http-bootstrap-url=http://10.0.0.1:5002/id'], {}, HttpBootstrapper],
    [['--bootstrap-kind=http', '--http-bootstrap-addr=:5002'], {}, HttpBootstrapper],
    [['--bootstrap-kind=static', '--static-bootstrap-peers', '/ip4/10.0.0.1/tcp/5001'], {}, StaticBootstrapper],
  ]
  for (const [argv, env, kind] of ok) {
    it(`${JSON.stringify(argv)} ${JSON.stringify(env)} builds a ${kind.name}`, () => { assert.ok(from(argv, env) instanceof kind) })
  }

  const bad: Array<[argv: string[], env: Record<string, string>, message: RegExp]> = [
    [[], {}, /unknown bootstrap kind/],
    [['--bootstrap-kind=dns'], {}, /--dns-bootstrap-domain/],
    [['--bootstrap-kind=http', '--http-bootstrap-peer=http://a:1', '--http-bootstrap-url=http://a:1/id'], {}, /--http-bootstrap-url and --http-bootstrap-peer are alternatives/],
    [['--bootstrap-kind=http', '--http-bootstrap-peer=10.0.0.1:5002'], {}, /bootstrap URL/],
  ]
  for (const [argv, env, message] of bad) {
    it(`${JSON.stringify(argv)} is refused with ${String(message)}`, () => {
      assert.throws(() => from(argv, env), (err: unknown) => err instanceof Error && message.test(err.message) && !err.message.includes('\n'))
    })
  }

  it('the v0.7 peer is fetched at <peer>/id', async () => {
    const b = from(['--bootstrap-kind=http', '--http-bootstrap-peer=http://127.0.0.1:1'])
    await assert.rejects((b as HttpBootstrapper).peers(), /bootstrap URL http:\/\/127\.0\.0\.1:1\/id failed/)
  })
})
