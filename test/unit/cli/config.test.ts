import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, it } from 'node:test'
import { fieldName, parseCommandLine, UsageError } from '../../../src/cli/args.ts'
import { commands, globalFlags, type RegistryConfig } from '../../../src/cli/spec.ts'
import { defaultPeriodMs, defaultThreshold } from '../../../src/cleanup/index.ts'
import { defaultNamespace, defaultSocket } from '../../../src/containerd/constants.ts'
import { defaultResolveRetries, defaultResolveTimeoutMs } from '../../../src/registry/constants.ts'
import { defaultRouterAddr } from '../../../src/routing/constants.ts'

type Parsed = ReturnType<typeof parseCommandLine<typeof commands, typeof globalFlags>>
type ConfigFor<N extends Parsed['command']> = Extract<Parsed, { command: N }>['config']

/** The typed config of `command` given argv (after the command name) and env. */
function configOf<N extends Parsed['command']> (command: N, argv: string[] = [], env: Record<string, string> = {}): ConfigFor<N> {
  const parsed = parseCommandLine([command, ...argv], env, commands, globalFlags)
  assert.equal(parsed.command, command)
  return parsed.config as ConfigFor<N>
}

const required: Record<Parsed['command'], string[]> = {
  configuration: ['--mirror-targets', 'http://127.0.0.1:30020'],
  registry: [],
  cleanup: ['--addr', ':8080'],
  'cleanup-wait': ['--probe-endpoint', 'spegel-cleanup:8080'],
  doctor: [],
  version: [],
}

describe('typed command configuration', () => {
  it('registry defaults are Spegel\'s', () => {
    const config = configOf('registry')
    assert.equal(config.registryAddr, ':5000')
    assert.equal(config.routerAddr, ':5001')
    assert.equal(config.metricsAddr, ':9090')
    assert.equal(config.mirrorResolveTimeoutMs, 20)
    assert.equal(config.mirrorResolveRetries, 3)
    assert.equal(config.dataDir, '')
    assert.equal(config.containerdSock, '/run/containerd/containerd.sock')
    assert.equal(config.containerdNamespace, 'k8s.io')
    assert.equal(config.containerdContentPath, '/var/lib/containerd/io.containerd.content.v1.content')
    assert.equal(config.containerdRegistryConfigPath, '/etc/containerd/certs.d')
    assert.equal(config.debugWebEnabled, true)
    assert.equal(config.logLevel, 'INFO')
    // Our own flags.
    assert.equal(config.drainTimeoutMs, 20_000)
    assert.equal(config.herdProtection, true)
    assert.equal(config.transferMemory, 'auto')
    // Flags without a default hold Go's zero value, as in Spegel's argument struct.
    assert.equal(config.bootstrapKind, '')
    assert.equal(config.dnsBootstrapDomain, '')
    assert.deepEqual(config.mirroredRegistries, [])
    assert.deepEqual(config.registryFilters, [])
    assert.deepEqual(config.staticBootstrapPeers, [])
  })

  it('the library classes fall back to the same defaults the spec gives', () => {
    const config = configOf('registry')
    assert.equal(config.mirrorResolveTimeoutMs, defaultResolveTimeoutMs)
    assert.equal(config.mirrorResolveRetries, defaultResolveRetries)
    assert.equal(config.routerAddr, defaultRouterAddr)
    assert.equal(config.containerdSock, defaultSocket)
    assert.equal(config.containerdNamespace, defaultNamespace)
    const wait = configOf('cleanup-wait', required['cleanup-wait'])
    assert.equal(wait.threshold, defaultThreshold)
    assert.equal(wait.periodMs, defaultPeriodMs)
  })

  it('each command\'s config holds exactly its flags and the global ones', () => {
    assert.deepEqual(configOf('configuration', required.configuration), {
      logLevel: 'INFO',
      containerdRegistryConfigPath: '/etc/containerd/certs.d',
      mirroredRegistries: [],
      mirrorTargets: ['http://127.0.0.1:30020'],
      resolveTags: true,
      prependExisting: false,
      registryCertDir: '',
    })
    assert.deepEqual(configOf('cleanup', required.cleanup), { logLevel: 'INFO', addr: ':8080', containerdRegistryConfigPath: '/etc/containerd/certs.d' })
    assert.deepEqual(configOf('cleanup-wait', required['cleanup-wait']), { logLevel: 'INFO', probeEndpoint: 'spegel-cleanup:8080', threshold: 3, periodMs: 2_000 })
    assert.deepEqual(configOf('doctor'), {
      logLevel: 'INFO',
      containerdSock: '/run/containerd/containerd.sock',
      containerdNamespace: 'k8s.io',
      containerdContentPath: '/var/lib/containerd/io.containerd.content.v1.content',
      containerdRegistryConfigPath: '/etc/containerd/certs.d',
      mirroredRegistries: [],
      mirrorTargets: [],
      hostRoot: '',
      format: 'text',
    })
    assert.deepEqual(configOf('version'), { logLevel: 'INFO', format: 'text' })
    // Every flag of every command has its field, named by the one rule.
    for (const command of commands) {
      const keys = Object.keys(configOf(command.name, required[command.name])).sort()
      assert.deepEqual(keys, [...globalFlags, ...command.flags].map(fieldName).sort(), command.name)
    }
  })

  it('env vars and flags land in the typed fields; a flag wins over its env var', () => {
    const config = configOf('registry', ['--registry-addr=:6000', '--herd-protection=false', '--mirror-resolve-retries', '0x10', '--log-level=debug'], {
      REGISTRY_ADDR: ':7000',
      MIRROR_RESOLVE_TIMEOUT: '1.5s',
      DRAIN_TIMEOUT: '1m30s',
      REGISTRY_FILTERS: ':latest$,"a{1,3}"',
      BOOTSTRAP_KIND: 'DNS',
      DNS_BOOTSTRAP_DOMAIN: 'spegel-bootstrap.spegel.svc.cluster.local.',
      DEBUG_WEB_ENABLED: 'false',
      DATA_DIR: '/var/lib/spegel',
    })
    assert.equal(config.registryAddr, ':6000')
    assert.equal(config.herdProtection, false)
    assert.equal(config.mirrorResolveRetries, 16)
    assert.equal(config.logLevel, 'DEBUG')
    assert.equal(config.mirrorResolveTimeoutMs, 1_500)
    assert.equal(config.drainTimeoutMs, 90_000)
    assert.deepEqual(config.registryFilters, [':latest$', 'a{1,3}'])
    assert.equal(config.bootstrapKind, 'dns')
    assert.equal(config.dnsBootstrapDomain, 'spegel-bootstrap.spegel.svc.cluster.local.')
    assert.equal(config.debugWebEnabled, false)
    assert.equal(config.dataDir, '/var/lib/spegel')

    const wait = configOf('cleanup-wait', ['--period=500ms'], { PROBE_ENDPOINT: 'x:1', THRESHOLD: '5' })
    assert.deepEqual(wait, { logLevel: 'INFO', probeEndpoint: 'x:1', threshold: 5, periodMs: 500 })
    const conf = configOf('configuration', ['--resolve-tags', 'false', '--prepend-existing'], { MIRROR_TARGETS: 'http://a:1,http://b:2' })
    assert.deepEqual([conf.mirrorTargets, conf.resolveTags, conf.prependExisting], [['http://a:1', 'http://b:2'], false, true])
  })

  it('a bad value is the same usage error as before', () => {
    const bad: Array<[argv: string[], env: Record<string, string>, message: string]> = [
      [['registry', '--mirror-resolve-retries=three'], {}, '--mirror-resolve-retries: invalid integer "three"'],
      [['registry'], { MIRROR_RESOLVE_TIMEOUT: 'soon' }, 'env MIRROR_RESOLVE_TIMEOUT: invalid duration "soon" (examples: 20ms, 2s, 1m30s)'],
      [['registry', '--herd-protection=maybe'], {}, '--herd-protection: invalid boolean "maybe" (true or false)'],
      [['registry', '--bootstrap-kind=mdns'], {}, '--bootstrap-kind: invalid value "mdns"; one of dns, http, static'],
      [['configuration'], {}, '--mirror-targets is required (or env MIRROR_TARGETS)'],
      [['cleanup-wait', '--probe-endpoint=x:1'], { PERIOD: '2' }, 'env PERIOD: invalid duration "2" (examples: 20ms, 2s, 1m30s)'],
    ]
    for (const [argv, env, message] of bad) {
      assert.throws(() => parseCommandLine(argv, env, commands, globalFlags), (err: unknown) => err instanceof UsageError && err.message === message, argv.join(' '))
    }
  })

  it('the CLI still ends a bad value with exit code 2 and one line', async () => {
    const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url))
    const { code, stderr } = await new Promise<{ code: number | string | undefined, stderr: string }>((resolve) => {
      execFile(process.execPath, [cli, 'registry', '--mirror-resolve-retries=three'], { env: { PATH: process.env.PATH ?? '' }, timeout: 20_000 }, (err, _stdout, stderr) => {
        resolve({ code: err?.code ?? 0, stderr })
      })
    })
    assert.equal(code, 2)
    assert.equal(stderr, 'spegel: --mirror-resolve-retries: invalid integer "three"\n')
  })

  it('types the fields from the spec (checked by tsc)', () => {
    const config: RegistryConfig = configOf('registry', ['--bootstrap-kind=static'])
    const kind: '' | 'dns' | 'http' | 'static' = config.bootstrapKind
    const level: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' = config.logLevel
    const retries: number = config.mirrorResolveRetries
    const filters: string[] = config.registryFilters
    // @ts-expect-error a field no flag declares is a compile error, not a run-time '' or 0
    const typo: unknown = config.registryAdr
    // @ts-expect-error durations are in milliseconds and say so
    const unsuffixed: unknown = config.drainTimeout
    assert.deepEqual([kind, level, retries, filters, typo, unsuffixed], ['static', 'INFO', 3, [], undefined, undefined])
  })
})
