// The pre-shared key of a private libp2p network (`--router-psk-file`), in the swarm key file format that go-libp2p
// (pnet.DecodeV1PSK, IPFS's swarm.key) and js-libp2p read:
//
//   /key/swarm/psk/1.0.0/
//   /base16/
//   <64 hex digits>
//
// (`/base64/` and a base64 line are accepted too, as go-libp2p does.) Nodes with the key encrypt every connection with
// it (XSalsa20, before the Noise handshake); a node without it, or with another, cannot complete a connection to them.

/** Bytes of the key. */
export const swarmKeyBytes = 32
const header = '/key/swarm/psk/1.0.0/'

/** A swarm key file that is not one. */
export class SwarmKeyError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SwarmKeyError'
  }
}

/** The 32 key bytes of a swarm key file; throws SwarmKeyError saying what is wrong. */
export function parseSwarmKey (file: Uint8Array): Uint8Array {
  const lines = Buffer.from(file).toString('latin1').split(/\r?\n/)
  if (lines[0]?.trim() !== header) throw new SwarmKeyError(`the first line must be ${header}`)
  const codec = lines[1]?.trim()
  const value = (lines[2] ?? '').trim()
  let key: Buffer
  if (codec === '/base16/') {
    if (!/^[0-9a-fA-F]*$/.test(value)) throw new SwarmKeyError('the key line is not hexadecimal')
    key = Buffer.from(value, 'hex')
  } else if (codec === '/base64/') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new SwarmKeyError('the key line is not base64')
    key = Buffer.from(value, 'base64')
  } else {
    throw new SwarmKeyError(`the second line must be /base16/ or /base64/, not ${JSON.stringify(codec ?? '')}`)
  }
  if (key.length !== swarmKeyBytes) throw new SwarmKeyError(`the key is ${key.length} bytes, not ${swarmKeyBytes}`)
  if (lines.slice(3).some((l) => l.trim() !== '')) throw new SwarmKeyError('text after the key line')
  return new Uint8Array(key)
}

/** `key` as a swarm key file (base16), the form @libp2p/pnet's preSharedKey takes. */
export function formatSwarmKey (key: Uint8Array): Uint8Array {
  if (key.length !== swarmKeyBytes) throw new SwarmKeyError(`the key is ${key.length} bytes, not ${swarmKeyBytes}`)
  return new TextEncoder().encode(`${header}\n/base16/\n${Buffer.from(key).toString('hex')}\n`)
}
