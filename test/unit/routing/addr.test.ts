import assert from 'node:assert/strict'
import { test } from 'node:test'
import { InvalidAddressError, parseHostPort } from '../../../src/util/addr.ts'
import { isShareableIp, routerListenAddrs, uniqueIps } from '../../../src/routing/addr.ts'
import { multiaddr } from '@multiformats/multiaddr'

test('router listen addresses follow Spegel (empty host ⇒ IPv6 and IPv4 wildcards)', () => {
  assert.deepEqual(routerListenAddrs(':5001'), ['/ip6/::/tcp/5001', '/ip4/0.0.0.0/tcp/5001'])
  assert.deepEqual(routerListenAddrs('10.0.0.1:5001'), ['/ip4/10.0.0.1/tcp/5001'])
  assert.deepEqual(routerListenAddrs('[fd00::1]:5001'), ['/ip6/fd00::1/tcp/5001'])
  assert.deepEqual(routerListenAddrs('node-a:5001'), ['/ip6/::/tcp/5001', '/ip4/0.0.0.0/tcp/5001'])
  assert.deepEqual(parseHostPort('[::]:0'), { host: '::', port: 0 })
  for (const bad of ['5001', 'a:b', ':70000', '::1:5001']) assert.throws(() => parseHostPort(bad), InvalidAddressError, bad)
})

test('only usable IPs are shared', () => {
  assert.equal(isShareableIp('10.1.2.3', false), true)
  assert.equal(isShareableIp('2001:db8::1', false), true)
  assert.equal(isShareableIp('127.0.0.1', false), false)
  assert.equal(isShareableIp('127.0.0.1', true), true)
  assert.equal(isShareableIp('::1', false), false)
  assert.equal(isShareableIp('fe80::1', true), false)
  const addrs = ['/ip4/10.0.0.2/tcp/5001', '/ip4/10.0.0.2/tcp/5002', '/ip6/fd00::2/tcp/5001', '/ip4/127.0.0.1/tcp/5001', '/dns4/x.example/tcp/1']
  assert.deepEqual(uniqueIps(addrs.map((a) => multiaddr(a)), false), ['10.0.0.2', 'fd00::2'])
})
