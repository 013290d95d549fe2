import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { HelpRequested, parseCommandLine, UsageError } from '../../../src/cli/args.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'
import { formatDuration, parseDuration } from '../../../src/util/duration.ts'
import { parseListenAddress } from '../../../src/util/addr.ts'

const parse = (argv: string[], env: Record<string, string> = {}) => parseCommandLine(argv, env, commands, globalFlags)

describe('command line', () => {
  it('applies Spegel\'s defaults to registry', () => {
    const { command, values } = parse(['registry'])
    assert.equal(command, 'registry')
    assert.equal(values.get('registry-addr'), ':5000')
    assert.equal(values.get('router-addr'), ':5001')
    assert.equal(values.get('metrics-addr'), ':9090')
    assert.equal(values.get('containerd-sock'), '/run/containerd/containerd.sock')
    assert.equal(values.get('containerd-namespace'), 'k8s.io')
    assert.equal(values.get('containerd-content-path'), '/var/lib/containerd/io.containerd.content.v1.content')
    assert.equal(values.get('mirror-resolve-timeout'), 20)
    assert.equal(values.get('mirror-resolve-retries'), 3)
    assert.equal(values.get('debug-web-enabled'), true)
    assert.equal(values.get('data-dir'), '')
    assert.equal(values.get('log-level'), 'INFO')
    assert.equal(values.has('bootstrap-kind'), false)
  })

  it('parses the args the chart passes to configuration', () => {
    const { values } = parse([
      'configuration', '--log-level=INFO', '--containerd-registry-config-path=/etc/cri/conf.d/hosts',
      '--mirrored-registries', 'https://docker.io', 'https://ghcr.io',
      '--mirror-targets', 'http://10.0.0.5:30020', 'https://zot.example.com',
      '--resolve-tags=true', '--prepend-existing=false',
    ])
    assert.deepEqual(values.get('mirrored-registries'), ['https://docker.io', 'https://ghcr.io'])
    assert.deepEqual(values.get('mirror-targets'), ['http://10.0.0.5:30020', 'https://zot.example.com'])
    assert.equal(values.get('resolve-tags'), true)
    assert.equal(values.get('prepend-existing'), false)
    assert.equal(values.get('containerd-registry-config-path'), '/etc/cri/conf.d/hosts')
  })

  it('reads env vars, CSV for lists, flags win over env', () => {
    const { values } = parse(['registry', '--registry-addr=:6000'], {
      REGISTRY_ADDR: ':7000', MIRRORED_REGISTRIES: 'https://a.io,https://b.io', MIRROR_RESOLVE_TIMEOUT: '1.5s', LOG_LEVEL: 'debug', DEBUG_WEB_ENABLED: 'false',
    })
    assert.equal(values.get('registry-addr'), ':6000')
    assert.deepEqual(values.get('mirrored-registries'), ['https://a.io', 'https://b.io'])
    assert.equal(values.get('mirror-resolve-timeout'), 1500)
    assert.equal(values.get('log-level'), 'DEBUG')
    assert.equal(values.get('debug-web-enabled'), false)
  })

  it('accepts bare booleans, --flag value and repeated list flags', () => {
    const { values } = parse(['registry', '--debug-web-enabled', '--registry-filters', 'a', '--registry-filters', 'b', '--data-dir', '/var/lib/spegel'])
    assert.equal(values.get('debug-web-enabled'), true)
    assert.deepEqual(values.get('registry-filters'), ['a', 'b'])
    assert.equal(values.get('data-dir'), '/var/lib/spegel')
  })

  const bad: Array<[string[], RegExp]> = [
    [[], /missing command/],
    [['nope'], /unknown command "nope"/],
    [['registry', '--nope'], /unknown flag --nope/],
    [['registry', '--mirror-resolve-timeout=fast'], /invalid duration "fast"/],
    [['registry', '--mirror-resolve-retries=x'], /invalid integer/],
    [['registry', '--log-level=LOUD'], /one of DEBUG, INFO, WARN, ERROR/],
    [['registry', '--bootstrap-kind=k8s'], /one of dns, http, static/],
    [['registry', '--debug-web-enabled=maybe'], /invalid boolean/],
    [['configuration'], /--mirror-targets is required/],
    [['cleanup'], /--addr is required/],
    [['registry', 'extra'], /unexpected argument/],
    [['registry', '--data-dir'], /missing value for --data-dir/],
  ]
  for (const [argv, message] of bad) {
    it(`rejects ${JSON.stringify(argv)}`, () => {
      assert.throws(() => parse(argv), (err: unknown) => err instanceof UsageError && message.test(err.message) && !err.message.includes('\n'))
    })
  }

  it('keeps commas inside list arguments (regexes), splitting only env vars', () => {
    const { values } = parse(['registry', '--registry-filters', 'a{1,3}', ':latest$'])
    assert.deepEqual(values.get('registry-filters'), ['a{1,3}', ':latest$'])
  })

  // go-arg reads a list env var as one record of Go's encoding/csv (csv.NewReader(value).Read()) after checking that
  // strings.TrimSpace(value) is not empty. Each expectation below is what Go 1.26 returns for the same input.
  const csvEnv: Array<[value: string, list: string[]]> = [
    ['https://a.io,https://b.io', ['https://a.io', 'https://b.io']],
    ['https://a.io, https://b.io', ['https://a.io', ' https://b.io']],
    [' a ,b ', [' a ', 'b ']],
    ['a,,b', ['a', '', 'b']],
    ['a,', ['a', '']],
    ['"a{1,3}",:latest$', ['a{1,3}', ':latest$']],
    ['"say ""hi""",b', ['say "hi"', 'b']],
    ['"a\nb",c', ['a\nb', 'c']],
    ['a,b\nc,d', ['a', 'b']],
    ['\n\na,b', ['a', 'b']],
    ['a,b\r\n', ['a', 'b']],
    ['""', ['']],
    ['', []],
    ['  \t ', []],
  ]
  for (const [value, list] of csvEnv) {
    it(`REGISTRY_FILTERS=${JSON.stringify(value)} is ${JSON.stringify(list)}`, () => {
      assert.deepEqual(parse(['registry'], { REGISTRY_FILTERS: value }).values.get('registry-filters'), list)
    })
  }
  const badCsv: Array<[value: string, goError: string]> = [
    ['a"b', 'parse error on line 1, column 2: bare " in non-quoted-field'],
    ['"a"b', 'parse error on line 1, column 3: extraneous or missing " in quoted-field'],
    ['"abc', 'parse error on line 1, column 5: extraneous or missing " in quoted-field'],
    ['"a" ,b', 'parse error on line 1, column 3: extraneous or missing " in quoted-field'],
    ['x,"a\nb"c', 'record on line 1; parse error on line 2, column 2: extraneous or missing " in quoted-field'],
  ]
  for (const [value, goError] of badCsv) {
    it(`rejects MIRROR_TARGETS=${JSON.stringify(value)} with Go's CSV error`, () => {
      assert.throws(() => parse(['configuration'], { MIRROR_TARGETS: value }), (err: unknown) =>
        err instanceof UsageError && err.message.startsWith(`env MIRROR_TARGETS: invalid CSV (${goError})`) && !err.message.includes('\n'))
    })
  }

  it('an env list counts as given even when empty; the flag on the command line wins; a required list stays required', () => {
    assert.deepEqual(parse(['registry', '--mirrored-registries', 'https://a.io'], { MIRRORED_REGISTRIES: 'https://b.io,https://c.io' }).values.get('mirrored-registries'), ['https://a.io'])
    assert.deepEqual(parse(['registry'], { MIRRORED_REGISTRIES: '' }).values.get('mirrored-registries'), [])
    assert.throws(() => parse(['configuration'], { MIRROR_TARGETS: ' ' }), /--mirror-targets is required/)
  })

  // go-arg parses bools with strconv.ParseBool and ints with strconv.ParseInt(s, 0, 64) (go-scalar).
  const scalars: Array<[argv: string[], env: Record<string, string>, flag: string, value: boolean | number | RegExp]> = [
    [['registry'], { DEBUG_WEB_ENABLED: 'F' }, 'debug-web-enabled', false],
    [['registry'], { DEBUG_WEB_ENABLED: 'TRUE' }, 'debug-web-enabled', true],
    [['registry'], { DEBUG_WEB_ENABLED: '1' }, 'debug-web-enabled', true],
    [['registry'], { DEBUG_WEB_ENABLED: 'yes' }, 'debug-web-enabled', /invalid boolean "yes"/],
    [['registry'], { DEBUG_WEB_ENABLED: '' }, 'debug-web-enabled', /invalid boolean ""/],
    [['registry'], { DEBUG_WEB_ENABLED: 'tRuE' }, 'debug-web-enabled', /invalid boolean/],
    [['registry', '--debug-web-enabled='], {}, 'debug-web-enabled', true],
    [['registry', '--debug-web-enabled', 'false'], {}, 'debug-web-enabled', false],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '+5' }, 'mirror-resolve-retries', 5],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '0x10' }, 'mirror-resolve-retries', 16],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '010' }, 'mirror-resolve-retries', 8],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '1_000' }, 'mirror-resolve-retries', 1000],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '08' }, 'mirror-resolve-retries', /invalid integer "08"/],
    [['registry'], { MIRROR_RESOLVE_RETRIES: ' 3' }, 'mirror-resolve-retries', /invalid integer " 3"/],
    [['registry'], { MIRROR_RESOLVE_RETRIES: '3.0' }, 'mirror-resolve-retries', /invalid integer "3.0"/],
    [['cleanup-wait', '--probe-endpoint=x:1', '--threshold', '-1'], {}, 'threshold', -1],
  ]
  for (const [argv, env, flag, value] of scalars) {
    it(`${JSON.stringify(argv)} ${JSON.stringify(env)}: --${flag} ${value instanceof RegExp ? `fails ${String(value)}` : `is ${String(value)}`}`, () => {
      if (value instanceof RegExp) assert.throws(() => parse(argv, env), (err: unknown) => err instanceof UsageError && value.test(err.message))
      else assert.equal(parse(argv, env).values.get(flag), value)
    })
  }

  it('takes the values after an empty --list=, and refuses a flag as the value of another', () => {
    assert.deepEqual(parse(['registry', '--registry-filters=', 'a', 'b']).values.get('registry-filters'), ['a', 'b'])
    assert.deepEqual(parse(['registry', '--registry-filters', '-']).values.get('registry-filters'), ['-'])
    assert.throws(() => parse(['registry', '--data-dir', '--debug-web-enabled']), /missing value for --data-dir/)
  })

  it('accepts --http-bootstrap-peer and HTTP_BOOTSTRAP_PEER (Spegel v0.7.4)', () => {
    assert.equal(parse(['registry', '--bootstrap-kind=http', '--http-bootstrap-peer=http://10.0.0.1:5002']).values.get('http-bootstrap-peer'), 'http://10.0.0.1:5002')
    assert.equal(parse(['registry'], { HTTP_BOOTSTRAP_PEER: 'http://10.0.0.1:5002' }).values.get('http-bootstrap-peer'), 'http://10.0.0.1:5002')
  })

  it('prints help', () => {
    assert.throws(() => parse(['registry', '--help']), (err: unknown) => err instanceof HelpRequested && err.message.includes('--mirror-resolve-timeout'))
  })
})

describe('durations and addresses', () => {
  const durations: Array<[string, number]> = [['20ms', 20], ['2s', 2000], ['1m30s', 90_000], ['1.5h', 5_400_000], ['0', 0], ['500us', 0.5], ['-1s', -1000]]
  for (const [text, ms] of durations) it(`parses ${text}`, () => { assert.equal(parseDuration(text), ms) })
  for (const text of ['', '20', 'ms', '1x', '1s2']) it(`rejects duration ${JSON.stringify(text)}`, () => { assert.throws(() => parseDuration(text)) })
  it('formats durations', () => {
    assert.equal(formatDuration(20), '20ms')
    assert.equal(formatDuration(90_000), '1m30s')
  })
  const addrs: Array<[string, string, number]> = [[':5000', '', 5000], ['0.0.0.0:1', '0.0.0.0', 1], ['[::1]:5000', '::1', 5000], ['localhost:80', 'localhost', 80]]
  for (const [text, host, port] of addrs) it(`parses address ${text}`, () => { assert.deepEqual(parseListenAddress(text), { host, port }) })
  for (const text of ['5000', ':', ':99999', '::1:5000', 'host:']) it(`rejects address ${text}`, () => { assert.throws(() => parseListenAddress(text)) })
})
