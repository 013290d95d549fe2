import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { InvalidSizeError, parseByteSize } from '../../../src/util/size.ts'

describe('parseByteSize', () => {
  it('reads bytes and Kubernetes-style suffixes', () => {
    for (const [text, bytes] of [
      ['25165824', 25165824], ['24Mi', 24 * 2 ** 20], ['24MiB', 24 * 2 ** 20], ['1.5Gi', 1.5 * 2 ** 30],
      ['500M', 500e6], ['64Ki', 65536], [' 8Mi ', 8 * 2 ** 20], ['0', 0],
    ] as const) assert.equal(parseByteSize(text), bytes, text)
  })

  it('rejects anything else with a message that says what to write', () => {
    for (const text of ['', 'Mi', '-1Mi', '24 megabytes', '24mi', '1e6', '0x10']) {
      assert.throws(() => parseByteSize(text), (err: Error) => err instanceof InvalidSizeError && /e\.g\. 24Mi/.test(err.message), text)
    }
  })
})
