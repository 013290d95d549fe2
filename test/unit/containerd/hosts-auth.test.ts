import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { basicAuthHeaderValue, defaultBasicAuthDir, readBasicAuth } from '../../../src/containerd/hosts.ts'

describe('readBasicAuth', () => {
  const cases: Array<{ name: string, username?: string, password?: string, expected: { username: string, password: string } | undefined }> = [
    { name: 'both files absent: auth disabled', expected: undefined },
    { name: 'both files empty: auth disabled', username: '', password: '', expected: undefined },
    { name: 'username and password', username: 'hello', password: 'world', expected: { username: 'hello', password: 'world' } },
    { name: 'username only: empty password', username: 'hello', expected: { username: 'hello', password: '' } },
    { name: 'password only: empty username', password: 'world', expected: { username: '', password: 'world' } },
    { name: 'one trailing newline is removed', username: 'hello\n', password: 'world\n', expected: { username: 'hello', password: 'world' } },
    { name: 'one trailing CRLF is removed', username: 'hello\r\n', password: 'world\r\n', expected: { username: 'hello', password: 'world' } },
    { name: 'only one line break is removed', username: 'hello\n\n', password: 'world \n', expected: { username: 'hello\n', password: 'world ' } },
    { name: 'other whitespace is kept', username: ' hello', password: 'wo rld\t', expected: { username: ' hello', password: 'wo rld\t' } },
    { name: 'UTF-8 content', username: 'ünï', password: 'pässwörd✓', expected: { username: 'ünï', password: 'pässwörd✓' } },
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
    assert.equal(basicAuthHeaderValue({ username: 'ü', password: 'p:w' }), `Basic ${Buffer.from('ü:p:w').toString('base64')}`)
  })
})
