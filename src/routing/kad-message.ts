/**
 * The one Kademlia message this node writes itself: ADD_PROVIDER, in the wire format of libp2p's DHT (`Message` of
 * go-libp2p-kad-dht's dht.proto: type = 1, key = 2, providerPeers = 9; `Message.Peer`: id = 1, addrs = 2), each
 * preceded by its length as an unsigned varint, as every DHT stream frames its messages. Both js- and go-libp2p's
 * handlers read messages off one stream until it ends, so many records can share one stream (see publishDirect in
 * libp2p.ts).
 */

const addProviderType = 2

/** One length-prefixed ADD_PROVIDER message announcing `provider` (its multihash id and multiaddrs) for `key`. */
export function encodeAddProvider (key: Uint8Array, provider: { id: Uint8Array, multiaddrs: readonly Uint8Array[] }): Uint8Array {
  const peer = concat([bytesField(1, provider.id), ...provider.multiaddrs.map((a) => bytesField(2, a))])
  const message = concat([varintField(1, addProviderType), bytesField(2, key), bytesField(9, peer)])
  return concat([varint(message.length), message])
}

function varintField (field: number, value: number): Uint8Array {
  return concat([varint(field << 3), varint(value)])
}

function bytesField (field: number, value: Uint8Array): Uint8Array {
  return concat([varint((field << 3) | 2), varint(value.length), value])
}

function varint (value: number): Uint8Array {
  const out: number[] = []
  let v = value
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return Uint8Array.from(out)
}

function concat (parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
