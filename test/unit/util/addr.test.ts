import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { InvalidAddressError, joinHostPort, listenOptions, parseHostPort, parseListenAddress } from '../../../src/util/addr.ts'

describe('parseHostPort', () => {
  const valid: Array<[string, string, number]> = [
    [':5000', '', 5000],
    ['0.0.0.0:5001', '0.0.0.0', 5001],
    ['localhost:80', 'localhost', 80],
    ['spegel.kube-system.svc.cluster.local:8080', 'spegel.kube-system.svc.cluster.local', 8080],
    ['[::]:0', '::', 0],
    ['[::1]:65535', '::1', 65535],
    ['[fd00::2]:30020', 'fd00::2', 30020],
    ['[fe80::1%eth0]:5001', 'fe80::1%eth0', 5001],
  ]
  for (const [text, host, port] of valid) {
    it(`splits ${text}`, () => { assert.deepEqual(parseHostPort(text), { host, port }) })
  }

  const invalid: Array<[string, RegExp]> = [
    ['', /missing port/],
    ['5000', /missing port/],
    ['host', /missing port/],
    ['host:', /invalid port/],
    ['host:x', /invalid port/],
    [':65536', /invalid port/],
    [':123456', /invalid port/],
    [':-1', /invalid port/],
    ['::1:5000', /must be enclosed in brackets/],
    ['[::1]', /expected \[ipv6\]:port/],
    ['[::1]:80:80', /expected \[ipv6\]:port/],
    ['[]:80', /invalid IPv6 address/],
    ['[10.0.0.1]:80', /invalid IPv6 address/],
    ['[nope]:80', /invalid IPv6 address/],
  ]
  for (const [text, reason] of invalid) {
    it(`rejects ${JSON.stringify(text)} (${reason.source})`, () => {
      assert.throws(() => parseHostPort(text), (err: unknown) => {
        assert.ok(err instanceof InvalidAddressError)
        assert.equal(err.name, 'InvalidAddressError')
        assert.equal(err.value, text)
        assert.match(err.message, reason)
        assert.ok(err.message.startsWith(`invalid address ${JSON.stringify(text)}: `))
        return true
      })
    })
  }
})

describe('listen addresses', () => {
  it('ignores surrounding blanks', () => {
    assert.deepEqual(parseListenAddress(' :5000\n'), { host: '', port: 5000 })
  })
  it('binds the IPv6 wildcard for an empty host and keeps other hosts', () => {
    assert.deepEqual(listenOptions(parseListenAddress(':5000')), { host: '::', port: 5000 })
    assert.deepEqual(listenOptions(parseListenAddress('[::1]:5000')), { host: '::1', port: 5000 })
  })
})

describe('joinHostPort', () => {
  it('brackets IPv6 hosts only, and round-trips through parseHostPort', () => {
    for (const [host, port, text] of [['10.0.0.1', 80, '10.0.0.1:80'], ['fd00::1', 5001, '[fd00::1]:5001'], ['', 8080, ':8080']] as const) {
      assert.equal(joinHostPort(host, port), text)
      assert.deepEqual(parseHostPort(text), { host, port })
    }
  })
})
