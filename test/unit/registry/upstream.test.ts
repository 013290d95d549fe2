import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { parseRegistryUrl } from '../../../src/hosts/url.ts'
import { parseBearerChallenge, TagConfirmer } from '../../../src/registry/upstream.ts'

const good = 'sha256:' + 'a'.repeat(64)
const other = 'sha256:' + 'b'.repeat(64)

/**
 * A registry as Docker Hub answers a manifest HEAD: 401 with a bearer challenge without a token, the digest with one.
 * Repositories: `public/app` (anonymous token), `private/app` (no token for anonymous), `open/app` (no auth), `broken/app`
 * (500). Unit-test fake; the integration tests use a real registry.
 */
function fakeRegistry (): { server: Server, requests: string[] } {
  const requests: string[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x')
    requests.push(`${req.method} ${url.pathname}${url.search}${req.headers.authorization !== undefined ? ' auth' : ''}`)
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
      const realm = `http://${req.headers.host ?? ''}/token`
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake",scope="repository:${repo}:pull"` }).end()
      return
    }
    if (tag !== 'v1') { res.writeHead(404).end(); return }
    res.writeHead(200, { 'docker-content-digest': good, 'content-type': 'application/vnd.oci.image.index.v1+json' }).end()
  })
  return { server, requests }
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
