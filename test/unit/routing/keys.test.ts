import assert from 'node:assert/strict'
import { test } from 'node:test'
import { keyToCid } from '../../../src/routing/keys.ts'

test('keyToCid matches Spegel createCid (CIDv1, raw, sha2-256 of the UTF-8 key)', () => {
  const vectors: Array<[string, string]> = [
    ['foobar', 'bafkreigdvoh7cnza5cwzar65hfdgwpejotszfqx2ha6uuolaofgk54ge6i'],
    ['docker.io/library/busybox:1.37.0', 'bafkreifdixuobjojcs6sm3w52326ep262547uydcgu5g5vge432a5tk4na'],
  ]
  for (const [key, cid] of vectors) assert.equal(keyToCid(key).toString(), cid)
  const cid = keyToCid('foobar')
  assert.equal(cid.version, 1)
  assert.equal(cid.code, 0x55)
  assert.equal(cid.multihash.code, 0x12)
  assert.notEqual(keyToCid('sha256:ab').toString(), keyToCid('sha256:aB').toString())
})
