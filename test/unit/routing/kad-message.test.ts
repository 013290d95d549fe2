import assert from 'node:assert/strict'
import { test } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { encodeAddProvider } from '../../../src/routing/kad-message.ts'
import { keyToCid } from '../../../src/routing/keys.ts'

// kad-dht's own protobuf codec (not exported by the package): what every js-libp2p node decodes our records with.
const { Message, MessageType } = await import(new URL('../../../node_modules/@libp2p/kad-dht/dist/src/message/dht.js', import.meta.url).href) as {
  Message: { decode: (bytes: Uint8Array) => { type: number, key?: Uint8Array, providers: Array<{ id: Uint8Array, multiaddrs: Uint8Array[] }>, closer: unknown[] } }
  MessageType: { ADD_PROVIDER: number }
}

/** Splits length-prefixed messages (unsigned varint lengths), as a DHT stream reader does. */
function frames (bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  while (at < bytes.length) {
    let length = 0
    let shift = 0
    for (;;) {
      const b = bytes[at++] as number
      length += (b & 0x7f) * 2 ** shift
      shift += 7
      if (b < 0x80) break
    }
    out.push(bytes.subarray(at, at + length))
    at += length
  }
  return out
}

test('ADD_PROVIDER records decode with kad-dht\'s codec, several on one stream', () => {
  const id = peerIdFromString('12D3KooWD6CKgJ1yU1VfTxwoi3V2x1bThgup7aGcZrf7QguHoS2U')
  const addrs = [multiaddr('/ip4/10.0.0.1/tcp/5001'), multiaddr(`/ip4/192.168.1.20/tcp/5001/p2p/${id.toString()}`)]
  const provider = { id: id.toMultihash().bytes, multiaddrs: addrs.map((a) => a.bytes) }
  // A long key set makes the varints of the lengths take two bytes.
  const keys = ['sha256:' + 'a'.repeat(64), 'docker.io/library/busybox:1.37.0', 'x'.repeat(300)]
  const stream = Buffer.concat(keys.map((k) => encodeAddProvider(keyToCid(k).multihash.bytes, provider)))
  const messages = frames(stream).map((f) => Message.decode(f))
  assert.equal(messages.length, keys.length)
  for (const [i, m] of messages.entries()) {
    assert.equal(m.type, MessageType.ADD_PROVIDER)
    assert.deepEqual(Buffer.from(m.key ?? []), Buffer.from(keyToCid(keys[i]!).multihash.bytes))
    assert.equal(m.closer.length, 0)
    assert.equal(m.providers.length, 1)
    assert.deepEqual(Buffer.from(m.providers[0]!.id), Buffer.from(id.toMultihash().bytes))
    assert.deepEqual(m.providers[0]!.multiaddrs.map((a) => multiaddr(a).toString()), addrs.map(String))
  }
  const big = encodeAddProvider(new Uint8Array(34), { id: provider.id, multiaddrs: Array.from({ length: 20 }, () => addrs[1]!.bytes) })
  assert.equal(frames(big).length, 1)
  assert.equal(Message.decode(frames(big)[0]!).providers[0]!.multiaddrs.length, 20)
})
