import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileRegistryFilters, InvalidFilterError, RequestFilter } from '../../../src/oci/filter.ts'

// Expected results were produced with Go 1.26's regexp.MustCompile(pattern).MatchString(subject), which is what
// Spegel's --registry-filters do (go-arg compiles []*regexp.Regexp with regexp.Compile).
const matches: Array<[pattern: string, subject: string, match: boolean]> = [
  ['(?i)^docker\\.io/', 'DOCKER.IO/library/nginx:1.27', true],
  ['(?i)^docker\\.io/', 'docker.io/library/nginx', true],
  ['(?i)^docker\\.io/', 'ghcr.io/docker.io/x', false],
  [':latest\\z', 'docker.io/library/nginx:latest', true],
  [':latest\\z', 'docker.io/library/nginx:latest-alpine', false],
  ['\\Aghcr\\.io/', 'ghcr.io/spegel-org/spegel:v0.7.4', true],
  ['\\Aghcr\\.io/', 'docker.io/ghcr.io/x', false],
  [':latest$', 'docker.io/library/nginx:latest', true],
  [':latest$', 'docker.io/library/nginx', false],
  ['^docker\\.io/library/[[:alpha:]]+:v?\\d+(?:\\.\\d+){1,2}$', 'docker.io/library/nginx:1.27.3', true],
  ['^docker\\.io/library/[[:alpha:]]+:v?\\d+(?:\\.\\d+){1,2}$', 'docker.io/library/nginx:1.27.3-alpine', false],
  ['(?i:NGINX)', 'docker.io/library/nginx:1', true],
  ['a{1,3}', 'docker.io/library/alpine', true],
  ['\\pL', 'docker.io/x', true],
]

describe('registry filters are Go RE2 expressions', () => {
  for (const [pattern, subject, match] of matches) {
    it(`${pattern} ${match ? 'matches' : 'does not match'} ${subject}`, async () => {
      const [filter] = await compileRegistryFilters([pattern])
      assert.equal(filter?.test(subject), match)
    })
  }

  // Each is an error in Go's regexp.Compile too (same message text).
  const invalid: Array<[pattern: string, reason: string]> = [
    ['(?<=docker)\\.io', 'invalid named capture'],
    ['(?=a)', 'invalid or unsupported Perl syntax: `(?=`'],
    ['(?!a)', 'invalid or unsupported Perl syntax: `(?!`'],
    ['(a)\\1', 'invalid escape sequence: `\\1`'],
    ['a{1001}', 'invalid repeat count'],
    ['[z-a]', 'invalid character class range'],
    ['*', 'missing argument to repetition operator'],
    ['a\n(', 'missing closing )'],
  ]
  for (const [pattern, reason] of invalid) {
    it(`rejects ${JSON.stringify(pattern)} with a one-line error naming the filter`, async () => {
      await assert.rejects(RequestFilter.create({ registryFilters: [':latest$', pattern] }), (err: unknown) => {
        assert.ok(err instanceof InvalidFilterError)
        assert.ok(err.message.startsWith(`invalid registry filter ${JSON.stringify(pattern)}: error parsing regexp: `), err.message)
        assert.ok(err.message.includes(reason), err.message)
        assert.ok(!err.message.includes('\n'), err.message)
        return true
      })
    })
  }
})

describe('RequestFilter', () => {
  const requests: Array<[name: string, init: Parameters<typeof RequestFilter.create>[0], registry: string, repository: string, tag: string | undefined, rejected: boolean]> = [
    ['no filters', {}, 'docker.io', 'library/nginx', 'latest', false],
    ['tag filter matches', { registryFilters: [':latest$'] }, 'docker.io', 'library/nginx', 'latest', true],
    ['digest requests have no tag', { registryFilters: [':latest$'] }, 'docker.io', 'library/nginx', undefined, false],
    ['case-insensitive registry filter', { registryFilters: ['(?i)^DOCKER\\.io/'] }, 'docker.io', 'library/nginx', '1', true],
    ['whitelisted registry', { mirroredRegistries: ['https://docker.io'] }, 'docker.io', 'library/nginx', '1', false],
    ['registry not whitelisted', { mirroredRegistries: ['https://docker.io'] }, 'ghcr.io', 'x/y', '1', true],
    ['no ns with a whitelist', { mirroredRegistries: ['https://docker.io'] }, '', 'x/y', undefined, true],
    ['wildcard disables the whitelist', { mirroredRegistries: ['https://docker.io', '_default'] }, 'ghcr.io', 'x/y', '1', false],
    ['* is a wildcard too', { mirroredRegistries: ['*'] }, 'ghcr.io', 'x/y', '1', false],
    ['host kept with its port', { mirroredRegistries: ['https://registry.local:443'] }, 'registry.local:443', 'x/y', '1', false],
    ['host compared as written (Go does not lowercase url.Host)', { mirroredRegistries: ['https://Docker.IO'] }, 'docker.io', 'x/y', '1', true],
  ]
  for (const [name, init, registry, repository, tag, rejected] of requests) {
    it(`${name}: ${rejected ? 'rejected' : 'served'}`, async () => {
      assert.equal((await RequestFilter.create(init)).rejectsImage(registry, repository, tag), rejected)
    })
  }

  // The same validation as Spegel's ParseRegistries(…, allowWildcard=true) (pkg/oci/filter.go).
  const badRegistries: Array<[string[], RegExp]> = [
    [['docker.io'], /scheme must be http or https/],
    [['ftp://docker.io'], /scheme must be http or https/],
    [['https://docker.io/'], /path has to be empty/],
    [['https://docker.io?x=1'], /query has to be empty/],
    [['https://user@docker.io'], /user has to be empty/],
    [['_default', '*'], /two wildcards/],
  ]
  for (const [mirroredRegistries, message] of badRegistries) {
    it(`rejects --mirrored-registries ${JSON.stringify(mirroredRegistries)}`, () => {
      assert.throws(() => new RequestFilter({ mirroredRegistries }), (err: unknown) =>
        err instanceof InvalidFilterError && message.test(err.message) && err.message.startsWith('--mirrored-registries: '))
    })
  }
})
