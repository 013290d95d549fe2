import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigurationError, transferMemory } from '../../../src/cli/registry.ts'
import { parseCommandLine } from '../../../src/cli/args.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'

const MiB = 2 ** 20

describe('--transfer-memory', () => {
  it('defaults to auto, read from TRANSFER_MEMORY too', () => {
    const base = ['registry', '--bootstrap-kind=static']
    assert.equal(parseCommandLine(base, {}, commands, globalFlags).values.get('transfer-memory'), 'auto')
    assert.equal(parseCommandLine(base, { TRANSFER_MEMORY: '48Mi' }, commands, globalFlags).values.get('transfer-memory'), '48Mi')
  })

  it('auto follows the memory limit; a size overrides it', () => {
    assert.equal(transferMemory('auto', 128 * MiB), 16 * MiB)
    assert.equal(transferMemory('', 256 * MiB), 80 * MiB)
    assert.equal(transferMemory('auto', 0), 256 * MiB, 'no limit found')
    assert.equal(transferMemory('48Mi', 128 * MiB), 48 * MiB)
  })

  it('rejects a malformed or useless size with a one-line configuration error', () => {
    assert.throws(() => transferMemory('lots'), (err: Error) => err instanceof ConfigurationError && /--transfer-memory: invalid size "lots"/.test(err.message))
    assert.throws(() => transferMemory('100Ki'), (err: Error) => err instanceof ConfigurationError && /below 1Mi/.test(err.message))
  })
})
