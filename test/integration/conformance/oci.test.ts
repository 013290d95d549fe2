// The OCI distribution-spec conformance suite (pull, read-only) against the daemon serving a real containerd's
// content, once for content on the node itself and once for content only a peer holds (every request then goes
// through the DHT lookup and the proxied transfer). Two versions of the suite run, both built by
// .ci/setup.d/30-oci-conformance.sh from the Go module proxy (versions pinned in test/go/conformance/):
//   current  its read-only mode (OCI_RO_DATA_*): HEAD and GET of every seeded tag, manifest and blob, missing and
//            malformed references;
//   legacy   the earlier ginkgo suite's pull workflow with pre-seeded content (OCI_TAG_NAME, …): adds HEAD/GET of a
//            missing blob and the error body of a malformed digest.
// Neither can run its range cases read-only (they upload their blob first), so those are replayed here with the
// suite's own expectations on a seeded 2048-byte blob.
//
// Each run's report is compared with an exact expectation: the cases that must pass (and how often: once per seeded
// input), the known differences that must fail (each with why that is right for this mirror), and nothing else
// may run. A listed difference that starts passing fails the test too, so the list (and the README's) stays true.
import assert from 'node:assert/strict'
import { accessSync, constants } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { blob, makeImage, makeIndexImage, type TestBlob, type TestImage } from '../../helpers/containerd.ts'
import { run } from '../../helpers/process.ts'
import { waitFor } from '../../helpers/wait.ts'
import type { SpegelRegistry } from '../../helpers/spegel.ts'
import { startSpegelPair, type SpegelPair } from '../../helpers/spegel-pair.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'
import { MissingToolError } from '../../helpers/tools.ts'

const root = fileURLToPath(new URL('../../../', import.meta.url))
const suiteBinary = join(root, '.tools', 'bin', 'oci-conformance')
const legacyBinary = join(root, '.tools', 'bin', 'oci-conformance-legacy')

/** Every seeded image is `docker.io/<repository>:<tag>` in containerd; the suites address it without `ns`. */
const registry = 'docker.io'
const repository = 'library/conformance'
const manifestMediaTypes = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
])

// ---- reports ----

type CaseStatus = 'pass' | 'fail' | 'skip'

/** One test case of a run, as its report tells it. */
export interface CaseResult {
  /** The case's name, without the suite's common prefix (names repeat: once per seeded input). */
  name: string
  status: CaseStatus
  /** Why it failed or was skipped. */
  message: string
  /** The requests and responses the suite logged for it. */
  log: string
}

const xmlEntities: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }

function unescapeXml (s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|\w+);/g, (whole, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16))
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10))
    return xmlEntities[e] ?? whole
  })
}

function elementText (xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}\\b([^>]*?)(?:/>|>([\\s\\S]*?)</${tag}>)`).exec(xml)
  if (m === null) return undefined
  const message = /\bmessage="([^"]*)"/.exec(m[1] ?? '')?.[1] ?? ''
  const body = (m[2] ?? '').replace(/^<!\[CDATA\[|\]\]>$/g, '')
  return unescapeXml([message, body].filter((s) => s !== '').join('\n'))
}

/**
 * The test cases of a JUnit report as both suites write it: one <testcase> each, with a `status` attribute
 * (current: passed/skipped/failure/error; ginkgo: passed/skipped/pending/failed/panicked/…).
 */
export function parseJUnit (xml: string, prefix: string): CaseResult[] {
  const cases: CaseResult[] = []
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const attrs = Object.fromEntries([...(m[1] ?? '').matchAll(/([\w:-]+)="([^"]*)"/g)].map((a) => [a[1], unescapeXml(a[2] ?? '')]))
    const body = m[2] ?? ''
    let name = attrs.name ?? ''
    if (name.startsWith('[ReportAfterSuite]') || name.startsWith('[ReportBeforeSuite]')) continue
    name = name.replace(/^\[It\] /, '')
    if (name.startsWith(prefix)) name = name.slice(prefix.length)
    const raw = attrs.status ?? (/<(failure|error)\b/.test(body) ? 'failure' : /<skipped\b/.test(body) ? 'skipped' : 'passed')
    const status: CaseStatus = raw === 'passed' ? 'pass' : raw === 'skipped' || raw === 'pending' || raw === 'disabled' ? 'skip' : 'fail'
    const message = elementText(body, 'failure') ?? elementText(body, 'error') ?? elementText(body, 'system-out') ?? elementText(body, 'skipped') ?? ''
    cases.push({ name, status, message, log: elementText(body, 'system-err') ?? '' })
  }
  return cases
}

// ---- expectations ----

/** A case this mirror fails on purpose. */
export interface KnownDifference {
  /** Why that is right for this mirror, in one line. */
  reason: string
  /** What the failure must say (its message or the logged response), so a failure for another reason is not taken for it. */
  failure: RegExp
}

export interface Expectation {
  /** Cases that must run and pass, with how many times each runs. */
  pass: Record<string, number>
  /** Cases that must run and fail (every time, as described). */
  knownDifferences: Record<string, KnownDifference>
}

/** What does not match the expectation, one line each (empty when the run is as expected). */
export function compareWithExpectation (cases: readonly CaseResult[], expected: Expectation): string[] {
  const problems: string[] = []
  const byName = Map.groupBy(cases, (c) => c.name)
  const detail = (c: CaseResult): string => {
    const firstRequest = /URL: (\S+)/.exec(c.log)?.[1] ?? /^(\w+ \S+)/m.exec(c.log)?.[1]
    const status = /Status: (\d+)/.exec(c.log)?.[1]
    return `${c.message.trim().split('\n').slice(0, 4).join(' | ')}${firstRequest !== undefined ? ` [${firstRequest}${status !== undefined ? ` -> ${status}` : ''}]` : ''}`
  }
  for (const [name, runs] of byName) {
    const ran = runs.filter((c) => c.status !== 'skip')
    if (name in expected.pass) {
      for (const c of runs.filter((c) => c.status !== 'pass')) problems.push(`${c.status.toUpperCase()} ${name}: ${detail(c)}`)
      if (runs.length !== expected.pass[name]) problems.push(`COUNT ${name}: ran ${runs.length} times, expected ${expected.pass[name]}`)
    } else if (name in expected.knownDifferences) {
      const known = expected.knownDifferences[name] as KnownDifference
      for (const c of runs) {
        if (c.status !== 'fail') {
          problems.push(`${c.status === 'pass' ? 'NOW PASSES' : 'SKIPPED'} ${name}: listed as a known difference (${known.reason}); remove it from the list and the README`)
        } else if (!known.failure.test(c.message) && !known.failure.test(c.log)) {
          problems.push(`FAIL ${name}: not as the known difference says (${String(known.failure)}): ${detail(c)}`)
        }
      }
    } else if (ran.length > 0) {
      for (const c of ran) problems.push(`UNEXPECTED ${c.status.toUpperCase()} ${name}: not in the expectation${c.status === 'fail' ? `: ${detail(c)}` : ''}`)
    }
  }
  for (const name of [...Object.keys(expected.pass), ...Object.keys(expected.knownDifferences)]) {
    if (!byName.has(name)) problems.push(`MISSING ${name}: did not run`)
  }
  return problems
}

/** One line per case name and outcome (skipped cases only counted), with the start of a failure's message. */
function summary (cases: readonly CaseResult[]): string {
  const counts = new Map<string, { n: number, message: string }>()
  for (const c of cases.filter((c) => c.status !== 'skip')) {
    const key = `${c.status} ${c.name}`
    const entry = counts.get(key) ?? { n: 0, message: c.status === 'fail' ? c.message.replace(/\s+/g, ' ').trim().slice(0, 160) : '' }
    entry.n++
    counts.set(key, entry)
  }
  const skipped = cases.filter((c) => c.status === 'skip').length
  return [
    ...[...counts].map(([k, { n, message }]) => `${k}${n > 1 ? ` (x${n})` : ''}${message !== '' ? `: ${message}` : ''}`),
    ...(skipped > 0 ? [`(${skipped} skipped: the disabled push, discovery and delete cases)`] : []),
  ].join('\n')
}

// ---- running the suites ----

function requireSuite (path: string): void {
  try {
    accessSync(path, constants.X_OK)
  } catch {
    throw new MissingToolError(`the OCI conformance suite is not built (${path} is missing): run bash .ci/setup.sh (its step .ci/setup.d/30-oci-conformance.sh builds it)`)
  }
}

/** The caller's OCI_* variables must not change a run. */
function cleanEnv (env: Record<string, string>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('OCI_')) out[key] = undefined
  return { ...out, ...env }
}

interface SeededContent {
  tags: string[]
  manifests: string[]
  blobs: string[]
  /** For the legacy suite, which takes one of each: a tag, the manifest it names, a blob of it. */
  legacy: { tag: string, manifest: string, blob: string }
  /** The 2048-byte blob the range cases read. */
  rangeBlob: TestBlob
}

async function runCurrentSuite (host: string, content: SeededContent, dir: string): Promise<CaseResult[]> {
  const results = join(dir, 'results')
  const res = await run(suiteBinary, [], {
    cwd: dir,
    timeoutMs: 60_000,
    allowNonZero: [0, 1],
    env: cleanEnv({
      OCI_REGISTRY: host,
      OCI_TLS: 'disabled',
      OCI_REPO1: repository,
      OCI_REPO2: `${repository}-2`,
      OCI_VERSION: '1.1',
      OCI_RESULTS_DIR: results,
      OCI_LOG: 'warn',
      // Read-only: the pull APIs and ping only.
      OCI_API_PUSH: 'false',
      OCI_API_TAGS_LIST: 'false',
      OCI_API_TAGS_DELETE: 'false',
      OCI_API_MANIFESTS_DELETE: 'false',
      OCI_API_BLOBS_DELETE: 'false',
      OCI_API_REFERRER: 'false',
      // Stricter than 1.1's default, and checkable read-only for blobs (for read-only manifests the suite keeps no response).
      OCI_API_BLOBS_DIGEST_HEADER: 'true',
      OCI_RO_DATA_TAGS: content.tags.join(' '),
      OCI_RO_DATA_MANIFESTS: content.manifests.join(' '),
      OCI_RO_DATA_BLOBS: content.blobs.join(' '),
    }),
  })
  let xml: string
  try {
    xml = await readFile(join(results, 'junit.xml'), 'utf8')
  } catch (err) {
    throw new Error(`the suite wrote no junit.xml (exit code ${res.code}):\n${res.stdout}\n${res.stderr}`, { cause: err })
  }
  return parseJUnit(xml, 'OCI Conformance Test/')
}

async function runLegacySuite (host: string, content: SeededContent, dir: string): Promise<CaseResult[]> {
  const res = await run(legacyBinary, ['-ginkgo.no-color'], {
    cwd: dir,
    timeoutMs: 60_000,
    allowNonZero: [0, 1],
    env: cleanEnv({
      OCI_ROOT_URL: `http://${host}`,
      OCI_NAMESPACE: repository,
      OCI_CROSSMOUNT_NAMESPACE: `${repository}-2`,
      OCI_TEST_PULL: '1',
      OCI_TEST_PUSH: '0',
      OCI_TEST_CONTENT_DISCOVERY: '0',
      OCI_TEST_CONTENT_MANAGEMENT: '0',
      // All three set: the pull workflow reads them instead of uploading its own content.
      OCI_TAG_NAME: content.legacy.tag,
      OCI_MANIFEST_DIGEST: content.legacy.manifest,
      OCI_BLOB_DIGEST: content.legacy.blob,
      OCI_HIDE_SKIPPED_WORKFLOWS: '1',
      OCI_REPORT_DIR: dir,
    }),
  })
  let xml: string
  try {
    xml = await readFile(join(dir, 'junit.xml'), 'utf8')
  } catch (err) {
    throw new Error(`the legacy suite wrote no junit.xml (exit code ${res.code}):\n${res.stdout}\n${res.stderr}`, { cause: err })
  }
  return parseJUnit(xml, 'OCI Distribution Conformance Tests ')
}

/**
 * The current suite's "range requests" cases (run.go, TestBlobAPIs) on a 2048-byte blob, judged as it judges them:
 * the expected 206 (Content-Range with the size or `*`) or 416 passes; a 200 with the whole blob is the fallback it
 * reports as "range request unsupported" (a Skip there, a failure here); anything else fails.
 */
async function runRangeCases (url: string, b: TestBlob): Promise<CaseResult[]> {
  assert.equal(b.size, 2048)
  const n = b.size
  const partial = (start: number, end: number) => ({ status: 206, body: b.bytes.subarray(start, end + 1), ranges: [`bytes ${start}-${end}/${n}`, `bytes ${start}-${end}/*`] })
  const cases = [
    { name: 'range 500-1499', range: 'bytes=500-1499', want: partial(500, 1499) },
    { name: 'range 500-', range: 'bytes=500-', want: partial(500, n - 1) },
    { name: 'range -500', range: 'bytes=-500', want: partial(n - 500, n - 1) },
    { name: 'range 2000-5000', range: 'bytes=2000-5000', want: partial(2000, n - 1) },
    { name: 'range 500-0', range: 'bytes=500-0', want: { status: 416 } },
    { name: 'range 5000-10000', range: 'bytes=5000-10000', want: { status: 416 } },
  ]
  const out: CaseResult[] = []
  for (const c of cases) {
    const res = await fetch(`${url}/v2/${repository}/blobs/${b.digest}`, { headers: { range: c.range } })
    const body = Buffer.from(await res.arrayBuffer())
    const log = `GET /v2/${repository}/blobs/${b.digest} Range: ${c.range}\nStatus: ${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}`
    const errors: string[] = []
    if (res.status === c.want.status) {
      if ('body' in c.want) {
        if (!body.equals(c.want.body)) errors.push(`body differs (${body.byteLength} bytes, expected ${c.want.body.byteLength})`)
        if (res.headers.get('content-length') !== String(c.want.body.byteLength)) errors.push(`Content-Length ${res.headers.get('content-length')}, expected ${c.want.body.byteLength}`)
        if (!c.want.ranges.includes(res.headers.get('content-range') ?? '')) errors.push(`Content-Range ${res.headers.get('content-range')}, expected ${c.want.ranges[0]}`)
      }
    } else if (res.status === 200 && body.equals(b.bytes) && res.headers.get('content-length') === String(n)) {
      errors.push(`range request unsupported, full blob returned (200; expected ${c.want.status})`)
    } else {
      errors.push(`unexpected status code, expected ${c.want.status} (or 200 with the whole blob), received ${res.status}`)
    }
    out.push({ name: `range requests/${c.name}`, status: errors.length === 0 ? 'pass' : 'fail', message: errors.join('\n'), log })
  }
  return out
}

// ---- expectations of each run ----

function currentExpectation (content: SeededContent, knownDifferences: Record<string, KnownDifference> = {}): Expectation {
  const pass: Record<string, number> = {
    ping: 1,
    'read-only/head/manifest-head-by-tag': content.tags.length,
    'read-only/head/manifest-head-by-digest': content.manifests.length,
    'read-only/head/blob-head': content.blobs.length,
    'read-only/pull/manifest-by-tag': content.tags.length,
    'read-only/pull/manifest-by-digest': content.manifests.length,
    'read-only/pull/blob-get': content.blobs.length,
    'missing-manifest/by-digest': 1,
    'missing-manifest/by-tag': 1,
    'invalid-digest-format/manifest-get': 1,
  }
  for (const name of Object.keys(knownDifferences)) delete pass[name]
  return { pass, knownDifferences }
}

const legacyPull = {
  tagFromEnv: 'Pull Setup Get tag name from environment',
  headMissingBlob: 'Pull Pull blobs HEAD request to nonexistent blob should result in 404 response',
  headBlob: 'Pull Pull blobs HEAD request to existing blob should yield 200',
  getMissingBlob: 'Pull Pull blobs GET nonexistent blob should result in 404 response',
  getBlob: 'Pull Pull blobs GET request to existing blob URL should yield 200',
  headMissingManifest: 'Pull Pull manifests HEAD request to nonexistent manifest should return 404',
  headManifestDigest: 'Pull Pull manifests HEAD request to manifest path (digest) should yield 200 response',
  headManifestTag: 'Pull Pull manifests HEAD request to manifest path (tag) should yield 200 response',
  getMissingManifest: 'Pull Pull manifests GET nonexistent manifest should return 404',
  getManifestDigest: 'Pull Pull manifests GET request to manifest path (digest) should yield 200 response',
  getManifestTag: 'Pull Pull manifests GET request to manifest path (tag) should yield 200 response',
  errorBody: 'Pull Error codes 400 response body should contain OCI-conforming JSON message',
} as const

function legacyExpectation (knownDifferences: Record<string, KnownDifference> = {}): Expectation {
  const pass: Record<string, number> = Object.fromEntries(Object.values(legacyPull).map((name) => [name, 1]))
  // The suite reads its two manifests from one variable, so the by-digest cases run twice on the same manifest.
  pass[legacyPull.headManifestDigest] = 2
  pass[legacyPull.getManifestDigest] = 2
  for (const name of Object.keys(knownDifferences)) delete pass[name]
  return { pass, knownDifferences }
}

const rangeNames = ['range 500-1499', 'range 500-', 'range -500', 'range 2000-5000', 'range 500-0', 'range 5000-10000'].map((n) => `range requests/${n}`)

function rangeExpectation (knownDifferences: Record<string, KnownDifference>): Expectation {
  const pass = Object.fromEntries(rangeNames.filter((n) => !(n in knownDifferences)).map((n) => [n, 1]))
  return { pass, knownDifferences }
}

// The known differences, each true of this mirror by design. Keep README.md ("OCI conformance") in step.

/** A peer is found by the DHT key `<registry>/<repository>:<tag>`; a tag without `?ns=` names no registry. */
const tagNeedsNs: KnownDifference = {
  reason: 'a tag is found on peers by <registry>/<repo>:<tag>; without ?ns= (containerd always sends it, the suite cannot) no peer can be asked: 404',
  failure: /received 404|<int>: 404/,
}
const peerTagDifferences = {
  'read-only/head/manifest-head-by-tag': tagNeedsNs,
  'read-only/pull/manifest-by-tag': tagNeedsNs,
}
const legacyPeerTagDifferences = {
  [legacyPull.headManifestTag]: tagNeedsNs,
  [legacyPull.getManifestTag]: tagNeedsNs,
}
/** No range case differs: malformed byte ranges (bytes=500-0) are refused with 416, as the suite wants. */
const rangeDifferences = {}

// ---- the test ----

describe('OCI distribution-spec conformance suite (pull, read-only)', { timeout: 120_000 }, () => {
  let pair: SpegelPair | undefined
  /** Holds the content. */
  let local: SpegelRegistry
  /** Holds nothing: serves everything from `local` through the DHT. */
  let peer: SpegelRegistry
  let tmp: TempDir
  let content: SeededContent

  before(async () => {
    requireSuite(suiteBinary)
    requireSuite(legacyBinary)
    tmp = await makeTempDir('spegel-oci-conformance')
    const image = makeImage(`${registry}/${repository}:1.0`, { layerSizes: [3000, 100_000] })
    const index = makeIndexImage(`${registry}/${repository}:multi`, ['amd64', 'arm64'], { layerSizes: [2000] })
    const docker = makeImage(`${registry}/${repository}:docker`, { layerSizes: [1000], docker: true })
    // An artifact: empty-JSON config, a zero-byte layer (the suite checks its empty body) and the range cases' blob.
    const emptyJson = blob('application/vnd.oci.empty.v1+json', '{}')
    const empty = blob('application/vnd.oci.image.layer.v1.tar', Buffer.alloc(0))
    const rangeBlob = blob('application/octet-stream', Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7 + 3) % 251)))
    const artifactManifest = blob('application/vnd.oci.image.manifest.v1+json', JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.example.conformance',
      config: { mediaType: emptyJson.mediaType, digest: emptyJson.digest, size: emptyJson.size },
      layers: [empty, rangeBlob].map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }))
    const artifact: TestImage = { name: `${registry}/${repository}:artifact`, top: artifactManifest, blobs: [artifactManifest, emptyJson, empty, rangeBlob] }
    const images = [image, index, docker, artifact]
    const isManifest = (x: TestBlob): boolean => manifestMediaTypes.has(x.mediaType)
    const all = [...new Map(images.flatMap((i) => i.blobs).map((x) => [x.digest, x])).values()]
    const layer = image.blobs.find((x) => x.size > 50_000)
    assert.ok(layer !== undefined)
    content = {
      tags: images.map((i) => i.name.slice(i.name.lastIndexOf(':') + 1)),
      manifests: all.filter(isManifest).map((x) => x.digest),
      blobs: all.filter((x) => !isManifest(x)).map((x) => x.digest),
      legacy: { tag: '1.0', manifest: image.top.digest, blob: layer.digest },
      rangeBlob,
    }

    // Room for a DHT lookup on a busy CI machine; a miss waits this long at most.
    pair = await startSpegelPair({ images, importArgs: ['--all-platforms'], resolveTimeout: '1s' })
    local = pair.spegelA
    peer = pair.spegelB
    // The suites must not race the advertisements: every digest is found through the peer first.
    await waitFor(async () => {
      for (const digest of [...content.manifests, ...content.blobs]) {
        const kind = content.manifests.includes(digest) ? 'manifests' : 'blobs'
        const res = await fetch(`${peer.url}/v2/${repository}/${kind}/${digest}`, { method: 'HEAD' })
        if (res.status !== 200) return false
      }
      return true
    }, { timeoutMs: 30_000, intervalMs: 250, what: 'every seeded digest found through the peer', context: () => peer.process.output() })
  })

  after(async () => {
    await pair?.stop()
    await tmp?.cleanup()
  })

  const check = (t: { diagnostic: (m: string) => void }, what: string, cases: CaseResult[], expected: Expectation): void => {
    t.diagnostic(`${what}:\n${summary(cases)}`)
    const problems = compareWithExpectation(cases, expected)
    assert.deepEqual(problems, [], `${what} differs from its expectation:\n${problems.join('\n')}`)
  }

  it('current suite: content on this node', async (t) => {
    const dir = join(tmp.path, 'current-local')
    await mkdir(dir)
    check(t, 'current suite, local', await runCurrentSuite(local.host, content, dir), currentExpectation(content))
  })

  it('current suite: content on a peer', async (t) => {
    const dir = join(tmp.path, 'current-peer')
    await mkdir(dir)
    check(t, 'current suite, peer', await runCurrentSuite(peer.host, content, dir), currentExpectation(content, peerTagDifferences))
  })

  it('legacy suite: content on this node', async (t) => {
    const dir = join(tmp.path, 'legacy-local')
    await mkdir(dir)
    check(t, 'legacy suite, local', await runLegacySuite(local.host, content, dir), legacyExpectation())
  })

  it('legacy suite: content on a peer', async (t) => {
    const dir = join(tmp.path, 'legacy-peer')
    await mkdir(dir)
    check(t, 'legacy suite, peer', await runLegacySuite(peer.host, content, dir), legacyExpectation(legacyPeerTagDifferences))
  })

  it('the suite\'s range cases, replayed read-only: content on this node', async (t) => {
    check(t, 'range cases, local', await runRangeCases(local.url, content.rangeBlob), rangeExpectation(rangeDifferences))
  })

  it('the suite\'s range cases, replayed read-only: content on a peer', async (t) => {
    check(t, 'range cases, peer', await runRangeCases(peer.url, content.rangeBlob), rangeExpectation(rangeDifferences))
  })
})

describe('conformance expectations', () => {
  const c = (name: string, status: CaseStatus): CaseResult => ({ name, status, message: status === 'fail' ? 'boom' : '', log: '' })

  it('accept a run that matches, and flag a listed difference that passes, an unlisted failure and a missing case', () => {
    const expected: Expectation = { pass: { a: 2 }, knownDifferences: { b: { reason: 'why', failure: /boom/ } } }
    assert.deepEqual(compareWithExpectation([c('a', 'pass'), c('a', 'pass'), c('b', 'fail'), c('z', 'skip')], expected), [])
    assert.deepEqual(compareWithExpectation([c('a', 'pass'), c('b', 'pass'), c('x', 'fail')], expected), [
      'COUNT a: ran 1 times, expected 2',
      'NOW PASSES b: listed as a known difference (why); remove it from the list and the README',
      'UNEXPECTED FAIL x: not in the expectation: boom',
    ])
    assert.deepEqual(compareWithExpectation([c('b', 'fail')], expected), ['MISSING a: did not run'])
    const otherFailure = { ...c('b', 'fail'), message: 'received 500' }
    assert.deepEqual(compareWithExpectation([c('a', 'pass'), c('a', 'pass'), otherFailure], expected), ['FAIL b: not as the known difference says (/boom/): received 500'])
  })

  it('read both suites\' JUnit reports', () => {
    const current = '<testsuites><testsuite name="OCI Conformance Test"><testcase name="OCI Conformance Test/ping" classname="" time="0.1" status="passed"><system-err>URL: http://x/v2/&#xA;Status: 200</system-err></testcase>' +
      '<testcase name="OCI Conformance Test/x" classname="" status="failure"><system-out>unexpected status code, expected one of [404], received 400</system-out></testcase>' +
      '<testcase name="OCI Conformance Test/y" classname="" status="skipped"></testcase></testsuite></testsuites>'
    assert.deepEqual(parseJUnit(current, 'OCI Conformance Test/').map((r) => [r.name, r.status, r.message]), [
      ['ping', 'pass', ''], ['x', 'fail', 'unexpected status code, expected one of [404], received 400'], ['y', 'skip', ''],
    ])
    const legacy = '<testsuites><testsuite name="conformance tests">' +
      '<testcase name="[It] OCI Distribution Conformance Tests Pull Pull blobs GET x" classname="conformance tests" status="failed"><failure message="Expected &lt;int&gt;: 400" type="failed">[FAILED] at x.go:1</failure></testcase>' +
      '<testcase name="[ReportAfterSuite] html custom reporter" classname="conformance tests" status="passed"></testcase></testsuite></testsuites>'
    assert.deepEqual(parseJUnit(legacy, 'OCI Distribution Conformance Tests ').map((r) => [r.name, r.status, r.message]), [
      ['Pull Pull blobs GET x', 'fail', 'Expected <int>: 400\n[FAILED] at x.go:1'],
    ])
  })
})
