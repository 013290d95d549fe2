/**
 * The Kademlia messages this node writes and reads itself in clusters smaller than k (see publishDirect and askPeers
 * in libp2p.ts): ADD_PROVIDER, and GET_PROVIDERS with its answer. The wire format is libp2p's DHT one (`Message` of
 * go-libp2p-kad-dht's dht.proto: type = 1, key = 2, closerPeers = 8, providerPeers = 9; `Message.Peer`: id = 1,
 * addrs = 2), each message preceded by its length as an unsigned varint, as every DHT stream frames them. Both js-
 * and go-libp2p's handlers read messages off one stream until it ends, answering each that asks, so many records can
 * share one stream.
 */

const addProviderType = 2
const getProvidersType = 3
/** Largest DHT message accepted (js- and go-libp2p's limit: 4 MiB). */
export const maxMessageBytes = 4 * 1024 * 1024

/** A peer as a DHT message carries it: its multihash id and multiaddrs, as bytes. */
export interface WirePeer {
  id: Uint8Array
  multiaddrs: Uint8Array[]
}

/** A DHT message this node could not read. */
export class KadMessageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'KadMessageError'
  }
}

/** One length-prefixed ADD_PROVIDER message announcing `provider` (its multihash id and multiaddrs) for `key`. */
export function encodeAddProvider (key: Uint8Array, provider: { id: Uint8Array, multiaddrs: readonly Uint8Array[] }): Uint8Array {
  const peer = concat([bytesField(1, provider.id), ...provider.multiaddrs.map((a) => bytesField(2, a))])
  const message = concat([varintField(1, addProviderType), bytesField(2, key), bytesField(9, peer)])
  return concat([varint(message.length), message])
}

/** One length-prefixed GET_PROVIDERS request for `key` (a multihash). */
export function encodeGetProviders (key: Uint8Array): Uint8Array {
  const message = concat([varintField(1, getProvidersType), bytesField(2, key)])
  return concat([varint(message.length), message])
}

/**
 * The provider peers of a GET_PROVIDERS answer (one message, without its length prefix). Closer peers and every other
 * field are skipped: in a cluster smaller than k every peer is asked anyway. Throws KadMessageError when the message
 * is not a GET_PROVIDERS answer or is malformed.
 */
export function decodeProviders (message: Uint8Array): WirePeer[] {
  const providers: WirePeer[] = []
  let type: number | undefined
  for (const field of fields(message)) {
    if (field.number === 1 && field.value !== undefined) type = field.value
    else if (field.number === 9 && field.bytes !== undefined) providers.push(decodePeer(field.bytes))
  }
  if (type !== getProvidersType) throw new KadMessageError(`expected a GET_PROVIDERS answer, got message type ${type ?? 'none'}`)
  return providers
}

function decodePeer (bytes: Uint8Array): WirePeer {
  const peer: WirePeer = { id: new Uint8Array(0), multiaddrs: [] }
  for (const field of fields(bytes)) {
    if (field.number === 1 && field.bytes !== undefined) peer.id = field.bytes
    else if (field.number === 2 && field.bytes !== undefined) peer.multiaddrs.push(field.bytes)
  }
  if (peer.id.length === 0) throw new KadMessageError('a peer without an id')
  return peer
}

interface Field {
  number: number
  /** Wire type 0. */
  value?: number
  /** Wire type 2 (a view of the message). */
  bytes?: Uint8Array
}

/** The fields of a protobuf message, in order; wire types 1 and 5 are skipped, groups are refused. */
function * fields (bytes: Uint8Array): Generator<Field> {
  const at = { offset: 0 }
  while (at.offset < bytes.length) {
    const tag = readVarint(bytes, at)
    const number = Math.floor(tag / 8)
    const wireType = tag % 8
    if (wireType === 0) {
      yield { number, value: readVarint(bytes, at) }
    } else if (wireType === 2) {
      const length = readVarint(bytes, at)
      if (at.offset + length > bytes.length) throw new KadMessageError('a field runs past the end of the message')
      yield { number, bytes: bytes.subarray(at.offset, at.offset + length) }
      at.offset += length
    } else if (wireType === 1 || wireType === 5) {
      at.offset += wireType === 1 ? 8 : 4
      if (at.offset > bytes.length) throw new KadMessageError('a field runs past the end of the message')
    } else {
      throw new KadMessageError(`unsupported wire type ${wireType}`)
    }
  }
}

/** Reads an unsigned varint at `at.offset` (at most 2^53), moving the offset past it. */
function readVarint (bytes: Uint8Array, at: { offset: number }): number {
  let value = 0
  let scale = 1
  for (let i = 0; i < 8; i++) {
    if (at.offset >= bytes.length) throw new KadMessageError('a varint runs past the end of the message')
    const b = bytes[at.offset++] as number
    value += (b & 0x7f) * scale
    if (b < 0x80) return value
    scale *= 128
  }
  throw new KadMessageError('a varint longer than 8 bytes')
}

/**
 * Collects the bytes of a stream into length-prefixed messages. `shift` takes the next complete message (without its
 * prefix) off the front, else undefined: several may come on one stream (answers to pipelined requests). It throws
 * KadMessageError for a length above maxMessageBytes.
 */
export class FrameReader {
  private buffered: Uint8Array = new Uint8Array(0)

  append (chunk: Uint8Array): void {
    this.buffered = this.buffered.length === 0 ? chunk : concat([this.buffered, chunk])
  }

  shift (): Uint8Array | undefined {
    const first = this.first()
    if (first === undefined) return undefined
    this.buffered = this.buffered.subarray(first.end)
    return first.message
  }

  private first (): { message: Uint8Array, end: number } | undefined {
    const at = { offset: 0 }
    let length: number
    try {
      length = readVarint(this.buffered, at)
    } catch (err) {
      // An incomplete prefix waits for more bytes; a prefix of 8 bytes or more is no DHT message.
      if (this.buffered.length < 8) return undefined
      throw err
    }
    if (length > maxMessageBytes) throw new KadMessageError(`a message of ${length} bytes (at most ${maxMessageBytes})`)
    if (this.buffered.length - at.offset < length) return undefined
    return { message: this.buffered.subarray(at.offset, at.offset + length), end: at.offset + length }
  }
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
