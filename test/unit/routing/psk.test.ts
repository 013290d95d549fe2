import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ConfigurationError, routerPsk } from '../../../src/cli/registry.ts'
import { formatSwarmKey, parseSwarmKey, SwarmKeyError } from '../../../src/routing/psk.ts'

// @libp2p/pnet's own reader (not exported by the package): what the connection protector decodes our key file with.
const { decodeV1PSK } = await import(new URL('../../../node_modules/@libp2p/pnet/dist/src/crypto.js', import.meta.url).href) as {
  decodeV1PSK: (file: Uint8Array) => { tag?: string, codecName?: string, psk: Uint8Array }
}

const hex = 'dffb7e3135399a8b1612b2aaca1c36a3a8ac2cd0cca51ceeb2ced87d308cac6d'
const file = (text: string): Uint8Array => new TextEncoder().encode(text)

describe('swarm key files (--router-psk-file)', () => {
  it('reads go-libp2p\'s format: base16 or base64, LF or CRLF, with or without a final newline', () => {
    const key = Buffer.from(hex, 'hex')
    for (const text of [
      `/key/swarm/psk/1.0.0/\n/base16/\n${hex}\n`,
      `/key/swarm/psk/1.0.0/\n/base16/\n${hex.toUpperCase()}`,
      `/key/swarm/psk/1.0.0/\r\n/base16/\r\n${hex}\r\n`,
      `/key/swarm/psk/1.0.0/\n/base64/\n${key.toString('base64')}\n`,
    ]) {
      assert.deepEqual(Buffer.from(parseSwarmKey(file(text))), key, JSON.stringify(text))
    }
  })

  it('refuses what is not a 32-byte swarm key, saying what is wrong', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /first line must be \/key\/swarm\/psk\/1\.0\.0\//],
      [`/key/swarm/psk/2.0.0/\n/base16/\n${hex}\n`, /first line/],
      [`/key/swarm/psk/1.0.0/\n/bin/\n${hex}\n`, /second line must be \/base16\/ or \/base64\//],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(2)}\n`, /31 bytes, not 32/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex}00\n`, /33 bytes, not 32/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(0, -1)}g\n`, /not hexadecimal/],
      ['/key/swarm/psk/1.0.0/\n/base64/\n***\n', /not base64/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex}\nmore\n`, /text after the key line/],
    ]
    for (const [text, message] of cases) assert.throws(() => parseSwarmKey(file(text)), (err: unknown) => err instanceof SwarmKeyError && message.test(err.message), JSON.stringify(text))
  })

  it('writes the file @libp2p/pnet reads back to the same key', () => {
    const key = Buffer.from(hex, 'hex')
    const written = formatSwarmKey(key)
    assert.deepEqual(Buffer.from(decodeV1PSK(written).psk), key)
    assert.deepEqual(Buffer.from(parseSwarmKey(written)), key)
    assert.throws(() => formatSwarmKey(new Uint8Array(16)), SwarmKeyError)
  })

  it('the daemon refuses a missing or malformed key file with one line naming the flag, and runs open without one', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spegel-psk-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    assert.equal(await routerPsk(''), undefined)
    await assert.rejects(routerPsk(join(dir, 'absent')), (err: unknown) => err instanceof ConfigurationError && /^--router-psk-file=.*absent: no such file$/.test(err.message))
    const bad = join(dir, 'swarm.key')
    await writeFile(bad, 'not a key\n')
    await assert.rejects(routerPsk(bad), (err: unknown) => err instanceof ConfigurationError && /is not a swarm key file: the first line must be/.test(err.message) && !err.message.includes('\n'))
    await writeFile(bad, `/key/swarm/psk/1.0.0/\n/base16/\n${hex}\n`)
    assert.deepEqual(Buffer.from((await routerPsk(bad))!), Buffer.from(hex, 'hex'))
  })
})
