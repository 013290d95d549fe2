import assert from 'node:assert/strict'
import { it } from 'node:test'
import { parseCommandLine, UsageError } from '../../../src/cli/args.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'

const parse = (argv: string[], env: Record<string, string> = {}) => parseCommandLine(argv, env, commands, globalFlags)

it('registry --drain-timeout: default 20s, DRAIN_TIMEOUT from the environment, the flag wins, bad values are usage errors', () => {
  assert.equal(parse(['registry']).values.get('drain-timeout'), 20_000)
  assert.equal(parse(['registry'], { DRAIN_TIMEOUT: '5s' }).values.get('drain-timeout'), 5_000)
  assert.equal(parse(['registry', '--drain-timeout=1m30s'], { DRAIN_TIMEOUT: '5s' }).values.get('drain-timeout'), 90_000)
  assert.equal(parse(['registry', '--drain-timeout', '0s']).values.get('drain-timeout'), 0)
  assert.throws(() => parse(['registry', '--drain-timeout=soon']), (err: unknown) => err instanceof UsageError && /invalid duration "soon"/.test(err.message))
})
