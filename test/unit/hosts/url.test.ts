import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  encapsulateIPv6Host, InvalidRegistryUrlError, MirrorTargetsRequiredError, parseMirroredRegistries, parseMirrorTargets,
  parseRegistryUrl,
} from '../../../src/hosts/index.ts'

describe('parseRegistryUrl', () => {
  const valid: Array<[string, string, string]> = [
    // value, host (directory name), href (server / host key)
    ['https://docker.io', 'docker.io', 'https://docker.io'],
    ['http://foo.bar:5000', 'foo.bar:5000', 'http://foo.bar:5000'],
    ['HTTPS://ghcr.io', 'ghcr.io', 'https://ghcr.io'],
    ['http://10.0.0.2:5000', '10.0.0.2:5000', 'http://10.0.0.2:5000'],
    ['http://[fc00::2]:30020', '[fc00::2]:30020', 'http://[fc00::2]:30020'],
    ['http://[::1]', '[::1]', 'http://[::1]'],
    ['https://Registry.Example.com', 'Registry.Example.com', 'https://Registry.Example.com'],
    ['http://registry:80', 'registry:80', 'http://registry:80'],
    ['http://my_registry.local', 'my_registry.local', 'http://my_registry.local'],
  ]
  for (const [value, host, href] of valid) {
    test(`accepts ${value}`, () => {
      assert.deepEqual(parseRegistryUrl(value), { wildcard: false, scheme: href.split(':')[0], host, href })
    })
  }

  const invalid: Array<[string, RegExp]> = [
    ['docker.io', /scheme must be http or https/],
    ['ftp://docker.io', /scheme must be http or https/],
    ['oci://docker.io', /scheme must be http or https/],
    ['', /scheme must be http or https/],
    ['https://', /host is required/],
    ['https://docker.io/', /path has to be empty/],
    ['https://docker.io/v2/library', /path has to be empty/],
    ['https://docker.io?ns=x', /query has to be empty/],
    ['https://docker.io?', /query has to be empty/],
    ['https://docker.io#frag', /fragment has to be empty/],
    ['https://user:pass@docker.io', /user has to be empty/],
    ['https://user@docker.io', /user has to be empty/],
    ['http://fc00::2:30020', /IPv6 host must be enclosed in brackets/],
    ['http://[not-ipv6]:5000', /invalid IPv6 host/],
    ['http://foo.bar:port', /invalid port/],
    ['http://foo.bar:', /invalid port/],
    ['http://foo.bar:70000', /invalid port/],
    ['http://foo.bar:0', /invalid port/],
    ['http://foo bar', /invalid host/],
    ['http://.hidden', /invalid host/],
    ['http://_backup', /reserved/],
    ['http://_backup.partial:5000', /reserved/],
  ]
  for (const [value, message] of invalid) {
    test(`rejects ${JSON.stringify(value)}`, () => {
      assert.throws(() => parseRegistryUrl(value), (error: unknown) => {
        assert.ok(error instanceof InvalidRegistryUrlError)
        assert.equal(error.name, 'InvalidRegistryUrlError')
        assert.equal(error.value, value)
        assert.match(error.message, message)
        assert.doesNotMatch(error.message, /\n/)
        return true
      })
    })
  }
})

describe('parseMirroredRegistries', () => {
  test('empty means every registry', () => {
    assert.deepEqual(parseMirroredRegistries([]), [{ wildcard: true, scheme: '', host: '_default', href: '' }])
  })

  test('_default and * are the wildcard', () => {
    for (const wildcard of ['_default', '*']) {
      const parsed = parseMirroredRegistries(['https://docker.io', wildcard])
      assert.equal(parsed.length, 2)
      assert.equal(parsed[0]?.host, 'docker.io')
      assert.deepEqual(parsed[1], { wildcard: true, scheme: '', host: '_default', href: '' })
    }
  })

  test('at most one wildcard', () => {
    for (const values of [['_default', '*'], ['*', '*'], ['_default', 'https://a.io', '_default']]) {
      assert.throws(() => parseMirroredRegistries(values), { name: 'InvalidRegistryUrlError', message: /two wildcards/ })
    }
  })

  test('keeps the order given', () => {
    assert.deepEqual(parseMirroredRegistries(['https://ghcr.io', 'https://docker.io', 'http://foo.bar:5000']).map((r) => r.host), ['ghcr.io', 'docker.io', 'foo.bar:5000'])
  })

  test('any invalid entry fails the whole list', () => {
    assert.throws(() => parseMirroredRegistries(['https://docker.io', 'ghcr.io']), InvalidRegistryUrlError)
  })
})

describe('parseMirrorTargets', () => {
  test('at least one is required', () => {
    assert.throws(() => parseMirrorTargets([]), (error: unknown) => error instanceof MirrorTargetsRequiredError && error.name === 'MirrorTargetsRequiredError')
  })

  test('wildcards are not allowed', () => {
    for (const wildcard of ['_default', '*']) {
      assert.throws(() => parseMirrorTargets(['http://127.0.0.1:5000', wildcard]), { name: 'InvalidRegistryUrlError', message: /wildcard/ })
    }
  })

  test('the first target gets IPv6 brackets, later ones do not', () => {
    assert.deepEqual(parseMirrorTargets(['http://fc00::2:30020', 'https://zot.example.com']).map((r) => r.href), ['http://[fc00::2]:30020', 'https://zot.example.com'])
    assert.throws(() => parseMirrorTargets(['http://127.0.0.1:30020', 'http://fc00::2:30020']), { name: 'InvalidRegistryUrlError', message: /brackets/ })
  })

  test('targets keep their order', () => {
    assert.deepEqual(parseMirrorTargets(['http://127.0.0.1:5000', 'http://127.0.0.2:5000', 'http://127.0.0.1:5001']).map((r) => r.href), ['http://127.0.0.1:5000', 'http://127.0.0.2:5000', 'http://127.0.0.1:5001'])
  })
})

describe('encapsulateIPv6Host', () => {
  const cases: Array<[string, string]> = [
    ['http://fc00::2:30020', 'http://[fc00::2]:30020'],
    ['http://2001:db8::1:5000', 'http://[2001:db8::1]:5000'],
    ['http://::1:5000', 'http://[::1]:5000'],
    ['http://fc00::2:30020/path', 'http://[fc00::2]:30020/path'],
    ['http://[fc00::2]:30020', 'http://[fc00::2]:30020'],
    ['http://10.0.0.1:30020', 'http://10.0.0.1:30020'],
    ['http://node.example.com:30020', 'http://node.example.com:30020'],
    ['fc00::2:30020', 'fc00::2:30020'],
    // What precedes the last colon is not an address: left alone (and then rejected by validation).
    ['http://fc00::zz:30020', 'http://fc00::zz:30020'],
  ]
  for (const [input, output] of cases) {
    test(`${input} → ${output}`, () => {
      assert.equal(encapsulateIPv6Host(input), output)
    })
  }
})
