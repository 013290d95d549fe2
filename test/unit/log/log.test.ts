import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import { createLogger } from '../../../src/log/index.ts'

/** A logger writing into an array of parsed lines. */
function capture (): { logger: ReturnType<typeof createLogger>, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { logger: createLogger('DEBUG', sink), lines }
}

describe('log lines', () => {
  it('name an error\'s type by its name, not its constructor (which the minified bundle renames)', () => {
    // A class whose constructor name is not its error name, as every class is once minified.
    class Minified extends Error {
      constructor () {
        super('no such blob', { cause: new RangeError('inner') })
        this.name = 'BlobNotFoundError'
      }
    }
    const { logger, lines } = capture()
    logger.error({ err: new Minified() }, 'failed')
    logger.warn({ err: 'not an error' }, 'odd')
    logger.flush()
    const err = lines[0]?.err as { type: string, message: string, stack: string }
    assert.equal(err.type, 'BlobNotFoundError')
    assert.match(err.message, /^no such blob/)
    assert.match(err.stack, /BlobNotFoundError: no such blob/)
    assert.equal(lines[0]?.level, 'ERROR')
    assert.equal(lines[1]?.err, 'not an error')
  })
})
