import assert from 'node:assert/strict'
import { test } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { decodeProviders, encodeAddProvider, encodeGetProviders, FrameReader, KadMessageError } from '../../../src/routing/kad-message.ts'
import { keyToCid } from '../../../src/routing/keys.ts'

// kad-dht's own protobuf codec (not exported by the package): what every js-libp2p node decodes our records with.
const { Message, MessageType } = await import(new URL('../../../node_modules/@libp2p/kad-dht/dist/src/message/dht.js', import.meta.url).href) as {
  Message: {
    decode: (bytes: Uint8Array) => { type: number, key?: Uint8Array, providers: Array<{ id: Uint8Array, multiaddrs: Uint8Array[] }>, closer: unknown[] }
    encode: (message: { type: number, key?: Uint8Array, clusterLevel?: number, providers: Array<{ id: Uint8Array, multiaddrs: Uint8Array[] }>, closer: Array<{ id: Uint8Array, multiaddrs: Uint8Array[] }> }) => Uint8Array
  }
  MessageType: { ADD_PROVIDER: number, GET_PROVIDERS: number, FIND_NODE: number }
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

test('GET_PROVIDERS requests decode with kad-dht\'s codec, and its answers decode here', () => {
  const key = keyToCid('sha256:' + 'b'.repeat(64)).multihash.bytes
  const [request] = frames(encodeGetProviders(key))
  const decoded = Message.decode(request!)
  assert.equal(decoded.type, MessageType.GET_PROVIDERS)
  assert.deepEqual(Buffer.from(decoded.key ?? []), Buffer.from(key))

  const a = peerIdFromString('12D3KooWD6CKgJ1yU1VfTxwoi3V2x1bThgup7aGcZrf7QguHoS2U')
  const b = peerIdFromString('12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK')
  const addrs = [multiaddr('/ip4/10.0.0.1/tcp/5001'), multiaddr('/ip6/fd00::2/tcp/5001')]
  const answer = Message.encode({
    type: MessageType.GET_PROVIDERS,
    key,
    clusterLevel: 3,
    closer: [{ id: b.toMultihash().bytes, multiaddrs: [addrs[0]!.bytes] }],
    providers: [{ id: a.toMultihash().bytes, multiaddrs: addrs.map((x) => x.bytes) }, { id: b.toMultihash().bytes, multiaddrs: [] }],
  })
  const providers = decodeProviders(answer)
  assert.equal(providers.length, 2, 'providers only, not the closer peers')
  assert.deepEqual(Buffer.from(providers[0]!.id), Buffer.from(a.toMultihash().bytes))
  assert.deepEqual(providers[0]!.multiaddrs.map((x) => multiaddr(x).toString()), addrs.map(String))
  assert.deepEqual(providers[1]!.multiaddrs, [])
  assert.deepEqual(decodeProviders(Message.encode({ type: MessageType.GET_PROVIDERS, key, closer: [], providers: [] })), [])

  assert.throws(() => decodeProviders(Message.encode({ type: MessageType.FIND_NODE, key, closer: [], providers: [] })), KadMessageError)
  assert.throws(() => decodeProviders(answer.subarray(0, answer.length - 3)), KadMessageError)
  assert.throws(() => decodeProviders(Uint8Array.from([0x0b])), KadMessageError, 'a group (wire type 3)')
})

/** Appends `chunk` and takes the next whole message, as the DHT sessions read a stream. */
function push (reader: FrameReader, chunk: Uint8Array): Uint8Array | undefined {
  reader.append(chunk)
  return reader.shift()
}

test('a frame reader returns one message once its bytes have all come, however they are split', () => {
  const message = Message.encode({ type: MessageType.GET_PROVIDERS, key: new Uint8Array(300).fill(7), closer: [], providers: [] })
  const framed = encodeLengthPrefixed(message)
  assert.ok(framed.length - message.length === 2, 'a two-byte length')
  for (const cut of [1, 2, 3, 150, framed.length - 1]) {
    const reader = new FrameReader()
    assert.equal(push(reader, framed.subarray(0, cut)), undefined, `nothing after ${cut} bytes`)
    assert.deepEqual(Buffer.from(push(reader, framed.subarray(cut)) ?? []), Buffer.from(message), `whole after ${cut} + the rest`)
  }
  assert.deepEqual(Buffer.from(push(new FrameReader(), Buffer.concat([framed, framed])) ?? []), Buffer.from(message), 'the first of two')
  assert.throws(() => push(new FrameReader(), Uint8Array.from([0x80, 0x80, 0x80, 0x04])), KadMessageError, 'a length of 8 MiB')
  assert.throws(() => push(new FrameReader(), new Uint8Array(9).fill(0xff)), KadMessageError, 'a length prefix of 9 bytes')
})

function encodeLengthPrefixed (message: Uint8Array): Uint8Array {
  const prefix: number[] = []
  let n = message.length
  while (n >= 0x80) {
    prefix.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  prefix.push(n)
  return Buffer.concat([Uint8Array.from(prefix), message])
}
