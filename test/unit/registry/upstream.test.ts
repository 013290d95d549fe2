import assert from 'node:assert/strict'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { readUpstreamAccess } from '../../../src/hosts/index.ts'
import { parseRegistryUrl } from '../../../src/hosts/url.ts'
import { parseBearerChallenge, TagConfirmer } from '../../../src/registry/upstream.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'
import { makeCertDir, type TestCertDir } from '../../helpers/tls.ts'

const good = 'sha256:' + 'a'.repeat(64)
const other = 'sha256:' + 'b'.repeat(64)

/**
 * A registry as Docker Hub answers a manifest HEAD: 401 with a bearer challenge without a token, the digest with one.
 * Repositories: `public/app` (anonymous token), `private/app` (no token for anonymous), `open/app` (no auth), `broken/app`
 * (500). Unit-test fake; the integration tests use a real registry.
 */
function fakeRegistry (tls?: { cert: Buffer, key: Buffer }): { server: Server, requests: string[] } {
  const requests: string[] = []
  const handler: RequestListener = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x')
    requests.push(`${req.method} ${url.pathname}${url.search}${req.headers.authorization !== undefined ? ' auth' : ''}`)
    const scheme = tls !== undefined ? 'https' : 'http'
    if (url.pathname === '/token') {
      if (url.searchParams.get('scope') === 'repository:private/app:pull') { res.writeHead(401).end(); return }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'anon' }))
      return
    }
    const m = /^\/v2\/(.+)\/manifests\/(.+)$/.exec(url.pathname)
    if (m === null || req.method !== 'HEAD') { res.writeHead(404).end(); return }
    const [, repo, tag] = m
    if (repo === 'broken/app') { res.writeHead(500).end(); return }
    if (repo !== 'open/app' && req.headers.authorization !== 'Bearer anon') {
      const realm = `${scheme}://${req.headers.host ?? ''}/token`
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake",scope="repository:${repo}:pull"` }).end()
      return
    }
    if (tag !== 'v1') { res.writeHead(404).end(); return }
    res.writeHead(200, { 'docker-content-digest': good, 'content-type': 'application/vnd.oci.image.index.v1+json' }).end()
  }
  return { server: tls !== undefined ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createServer(handler), requests }
}

describe('confirming a tag with its upstream registry', () => {
  const { server, requests } = fakeRegistry()
  let host = ''
  let confirmer: TagConfirmer
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`
    confirmer = new TagConfirmer({ registries: [parseRegistryUrl(`http://${host}`)], cacheTtlMs: 60_000 })
  })
  after(async () => { await new Promise((resolve) => server.close(resolve)) })
  const check = async (repo: string, tag: string, digest: string): ReturnType<TagConfirmer['check']> =>
    await confirmer.check(host, repo, tag, digest, AbortSignal.timeout(5_000))

  it('confirms the digest the upstream names, with an anonymous token when challenged', async () => {
    requests.length = 0
    assert.deepEqual(await check('public/app', 'v1', good), { outcome: 'confirmed' })
    assert.deepEqual(requests, [
      'HEAD /v2/public/app/manifests/v1',
      'GET /token?service=fake&scope=repository%3Apublic%2Fapp%3Apull',
      'HEAD /v2/public/app/manifests/v1 auth',
    ])
    assert.deepEqual(await check('open/app', 'v1', good), { outcome: 'confirmed' })
  })

  it('says when the upstream names another digest', async () => {
    assert.deepEqual(await check('public/app', 'v1', other), { outcome: 'differs', upstream: good })
  })

  it('cannot confirm a private repository or a tag the upstream does not have', async () => {
    assert.deepEqual(await check('private/app', 'v1', good), { outcome: 'unconfirmable', status: 401 })
    assert.deepEqual(await check('open/app', 'v2', good), { outcome: 'unconfirmable', status: 404 })
  })

  it('calls an upstream that fails or cannot be reached unreachable, and does not ask it again for a while', async () => {
    const local = new TagConfirmer({ registries: [parseRegistryUrl(`http://${host}`)], downTtlMs: 300 })
    requests.length = 0
    assert.equal((await local.check(host, 'broken/app', 'v1', good, AbortSignal.timeout(5_000))).outcome, 'unreachable')
    const again = await local.check(host, 'public/app', 'v1', good, AbortSignal.timeout(5_000))
    assert.equal(again.outcome, 'unreachable', 'the registry is taken as down')
    assert.match(again.outcome === 'unreachable' ? again.reason : '', /not asked again/)
    assert.deepEqual(requests, ['HEAD /v2/broken/app/manifests/v1'], 'one request while it is down')
    await new Promise((resolve) => setTimeout(resolve, 350))
    assert.deepEqual(await local.check(host, 'public/app', 'v1', good, AbortSignal.timeout(5_000)), { outcome: 'confirmed' }, 'asked again afterwards')
    const down = new TagConfirmer({ registries: [parseRegistryUrl('http://127.0.0.1:1')] })
    assert.equal((await down.check('127.0.0.1:1', 'a/b', 'v1', good, AbortSignal.timeout(5_000))).outcome, 'unreachable', 'connection refused')
  })

  it('keeps an answer for a while: a node asks once per tag and digest', async () => {
    requests.length = 0
    assert.deepEqual(await check('public/app', 'v1', good), { outcome: 'confirmed' })
    assert.deepEqual(requests, [], 'answered from the cache')
  })

  it('uses Docker Hub\'s API host and https for a registry not listed', () => {
    const hub = new TagConfirmer({ registries: [] })
    assert.equal(hub.base('docker.io'), 'https://registry-1.docker.io')
    assert.equal(hub.base('ghcr.io'), 'https://ghcr.io')
    assert.equal(confirmer.base(host), `http://${host}`, 'a listed registry keeps its scheme')
  })

  it('reads bearer challenges as registries write them', () => {
    assert.deepEqual(parseBearerChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'),
      { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' })
    assert.deepEqual(parseBearerChallenge('bearer realm=https://r.example/t, service="a\\"b"'), { realm: 'https://r.example/t', service: 'a"b' })
    assert.equal(parseBearerChallenge('Basic realm="x"'), undefined)
  })
})

describe('confirming a tag with a private registry that containerd trusts through its hosts.toml', () => {
  let tmp: TempDir
  let certs: TestCertDir
  let server: Server
  let host = ''
  let hostsDir = ''
  before(async () => {
    tmp = await makeTempDir('spegel-upstream-ca')
    await mkdir(join(tmp.path, 'certs'))
    certs = await makeCertDir(join(tmp.path, 'certs'), { name: 'private registry', ips: [], caKey: false })
    server = fakeRegistry({ cert: certs.cert, key: certs.key }).server
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`
    hostsDir = join(tmp.path, 'hosts')
    await mkdir(join(hostsDir, host), { recursive: true })
  })
  after(async () => {
    await new Promise((resolve) => server.close(resolve))
    await tmp.cleanup()
  })
  const confirm = async (): ReturnType<TagConfirmer['check']> => {
    const confirmer = new TagConfirmer({ registries: [], access: async (registry) => await readUpstreamAccess(hostsDir, registry) })
    return await confirmer.check(host, 'public/app', 'v1', good, AbortSignal.timeout(5_000))
  }

  it('without the CA, the registry cannot be verified: taken as unreachable', async () => {
    const check = await new TagConfirmer({ registries: [] }).check(host, 'public/app', 'v1', good, AbortSignal.timeout(5_000))
    assert.equal(check.outcome, 'unreachable')
    assert.match(check.outcome === 'unreachable' ? check.reason : '', /certificate/)
  })

  it('with the CA its hosts.toml names (relative to its directory), the tag is confirmed over its token realm too', async () => {
    await writeFile(join(hostsDir, host, 'ca.crt'), certs.ca)
    await writeFile(join(hostsDir, host, 'hosts.toml'), `server = "https://${host}"\nca = "ca.crt"\n`)
    assert.deepEqual(await confirm(), { outcome: 'confirmed' })
  })

  it('with the CA on the [host] entry of the server itself (as Talos writes it), by absolute path', async () => {
    await writeFile(join(hostsDir, host, 'hosts.toml'), `server = "https://${host}"\n\n[host."https://${host}"]\n  capabilities = ["pull", "resolve"]\n  ca = "${join(hostsDir, host, 'ca.crt')}"\n`)
    assert.deepEqual(await confirm(), { outcome: 'confirmed' })
    // A CA given only to another host (a mirror) is not trusted for the server.
    await writeFile(join(hostsDir, host, 'hosts.toml'), `server = "https://${host}"\n\n[host."https://mirror.example"]\n  ca = "ca.crt"\n`)
    assert.equal((await confirm()).outcome, 'unreachable')
  })

  it('skip_verify, as containerd would, and a certs.d directory without hosts.toml', async () => {
    await writeFile(join(hostsDir, host, 'hosts.toml'), `server = "https://${host}"\nskip_verify = true\n`)
    assert.deepEqual(await confirm(), { outcome: 'confirmed' })
    await rm(join(hostsDir, host, 'hosts.toml'))
    assert.deepEqual(await confirm(), { outcome: 'confirmed' }, 'ca.crt of the directory')
  })
})

describe('readUpstreamAccess', () => {
  it('reads the server and CAs of a registry, falls back to _default, and knows nothing of a registry with neither', async (t) => {
    const tmp = await makeTempDir('spegel-access')
    t.after(tmp.cleanup)
    const dir = tmp.path
    await mkdir(join(dir, 'reg.corp:5000'))
    await writeFile(join(dir, 'reg.corp:5000', 'a.pem'), 'A')
    await writeFile(join(dir, 'reg.corp:5000', 'hosts.toml'), 'server = "http://reg.corp:5000/"\nca = ["a.pem"]\n\n[host."http://reg.corp:5000"]\n  skip_verify = true\n')
    assert.deepEqual(await readUpstreamAccess(dir, 'reg.corp:5000'), { server: 'http://reg.corp:5000', ca: [Buffer.from('A')], skipVerify: true })
    assert.equal(await readUpstreamAccess(dir, 'ghcr.io'), undefined)
    await mkdir(join(dir, '_default'))
    await writeFile(join(dir, '_default', 'hosts.toml'), '[host."http://10.0.0.5:30020"]\n  capabilities = ["pull"]\n')
    assert.deepEqual(await readUpstreamAccess(dir, 'ghcr.io'), { ca: [], skipVerify: false })
    assert.equal(await readUpstreamAccess(dir, '../etc'), undefined, 'not a registry host')
    await writeFile(join(dir, 'reg.corp:5000', 'hosts.toml'), 'server = [')
    await assert.rejects(readUpstreamAccess(dir, 'reg.corp:5000'))
  })
})
