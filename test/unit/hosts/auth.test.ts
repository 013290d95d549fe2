import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { basicAuthHeaderValue, defaultBasicAuthDir, readBasicAuth } from '../../../src/hosts/index.ts'

describe('readBasicAuth', () => {
  const cases: Array<{ name: string, username?: string, password?: string, expected: { username: string, password: string } | undefined }> = [
    { name: 'both files absent: auth disabled', expected: undefined },
    { name: 'both files empty: auth disabled', username: '', password: '', expected: undefined },
    { name: 'username and password', username: 'hello', password: 'world', expected: { username: 'hello', password: 'world' } },
    { name: 'username only: empty password', username: 'hello', expected: { username: 'hello', password: '' } },
    { name: 'password only: empty username', password: 'world', expected: { username: '', password: 'world' } },
    // As Spegel: the secret's bytes as they are, line breaks included (a Go and a TypeScript node must agree).
    { name: 'a trailing newline is kept', username: 'hello\n', password: 'world\n', expected: { username: 'hello\n', password: 'world\n' } },
    { name: 'a trailing CRLF is kept', username: 'hello\r\n', password: 'world\r\n', expected: { username: 'hello\r\n', password: 'world\r\n' } },
    { name: 'other whitespace is kept', username: ' hello', password: 'wo rld\t', expected: { username: ' hello', password: 'wo rld\t' } },
  ]
  for (const { name, username, password, expected } of cases) {
    test(name, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spegel-auth-'))
      t.after(async () => { await rm(dir, { recursive: true, force: true }) })
      if (username !== undefined) {
        await writeFile(join(dir, 'username'), username)
      }
      if (password !== undefined) {
        await writeFile(join(dir, 'password'), password)
      }
      assert.deepEqual(await readBasicAuth(dir), expected)
    })
  }

  test('any bytes (UTF-8 or not) reach the header unchanged', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spegel-auth-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const username = Buffer.from('ünï', 'utf8')
    const password = Buffer.from([0x70, 0xff, 0x00, 0x0a])
    await writeFile(join(dir, 'username'), username)
    await writeFile(join(dir, 'password'), password)
    const auth = await readBasicAuth(dir)
    assert.ok(auth !== undefined)
    assert.equal(basicAuthHeaderValue(auth), 'Basic ' + Buffer.concat([username, Buffer.from(':'), password]).toString('base64'))
  })

  test('a missing directory means auth disabled', async () => {
    assert.equal(await readBasicAuth(join(tmpdir(), `spegel-missing-${process.pid}-${Date.now()}`)), undefined)
  })

  test('other read errors are reported', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spegel-auth-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    // A directory where the file should be: EISDIR.
    await (await import('node:fs/promises')).mkdir(join(dir, 'username'))
    await assert.rejects(readBasicAuth(dir), { code: 'EISDIR' })
  })

  test('defaults to the chart mount path', () => {
    assert.equal(defaultBasicAuthDir, '/etc/secrets/basic-auth')
  })
})

describe('basicAuthHeaderValue', () => {
  test('Basic base64(username:password)', () => {
    assert.equal(basicAuthHeaderValue({ username: 'hello', password: 'world' }), 'Basic aGVsbG86d29ybGQ=')
    assert.equal(basicAuthHeaderValue({ username: 'hello', password: '' }), 'Basic aGVsbG86')
    // Values are byte strings (one character per byte, as readBasicAuth returns them).
    assert.equal(basicAuthHeaderValue({ username: '\u00fc', password: 'p:w' }), `Basic ${Buffer.from([0xfc, 0x3a, 0x70, 0x3a, 0x77]).toString('base64')}`)
  })
})
