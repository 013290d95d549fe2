import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parse, TomlError } from 'smol-toml'
import { formatKey, formatString, formatValue, parseExistingHosts, scanTableHeaders } from '../../../src/hosts/toml.ts'
import { parseMirroredRegistries, parseMirrorTargets, renderHostsToml } from '../../../src/hosts/index.ts'

describe('parseExistingHosts', () => {
  test("matches Spegel's re-serialisation of existing hosts", () => {
    // Spegel's TestExistingHosts input and expected output.
    const input = `server = "https://registry-1.docker.io"
[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://test-2.registry".header]
  x-custom-2 = ["foo"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true`
    const expected = `[host.'https://mirror.registry']
ca = '/etc/certs/mirror.pem'
capabilities = ['pull']
skip_verify = false

[host.'https://mirror.registry'.header]
x-custom-2 = ['value1', 'value2']

[host.'https://mirror-bak.registry/us']
capabilities = ['pull']
skip_verify = true

[host.'http://mirror.registry']
capabilities = ['pull']

[host.'https://test-3.registry']
client = ['/etc/certs/client-1.pem', '/etc/certs/client-2.pem']

[host.'https://test-1.registry']
ca = ['/etc/certs/test-1-ca.pem', '/etc/certs/special.pem']
capabilities = ['pull', 'resolve', 'push']
client = [['/etc/certs/client.cert', '/etc/certs/client.key'], ['/etc/certs/client.pem', '']]

[host.'https://test-2.registry']
client = '/etc/certs/client.pem'

[host.'https://test-2.registry'.header]
x-custom-2 = ['foo']

[host.'https://non-compliant-mirror.registry/v2/upstream']
capabilities = ['pull']
override_path = true`
    const existing = parseExistingHosts(input)
    assert.equal(existing.hosts.map((host) => host.text).join('\n\n'), expected)
    assert.equal(existing.server, 'https://registry-1.docker.io')
    assert.deepEqual(existing.topLevel, [])
    assert.deepEqual(existing.otherTables, [])
  })

  test('keeps every value of every host, as the parser sees it', () => {
    const input = `
[host."https://a.example"]
ca = ["a.pem", "b.pem"]
client = [["c.cert", "c.key"], ["d.pem", ""]]
skip_verify = true
override_path = true
dial_timeout = "1s"
capabilities = ["pull", "resolve", "push"]
future_setting = { nested = [1, 2], flag = false }
[host."https://a.example".header]
X-One = "1"
X-Many = ["a", "b"]
`
    const existing = parseExistingHosts(input)
    const reparsed = parse(existing.hosts.map((host) => host.text).join('\n\n'))
    assert.deepEqual(JSON.parse(JSON.stringify(reparsed)), JSON.parse(JSON.stringify(parse(input))))
  })

  test('host order: own headers first in document order, then hosts defined only otherwise', () => {
    const input = `
[host]
"https://inline.example" = { capabilities = ["pull"] }
[host."https://sub-only.example".header]
X = "1"
[host."https://b.example"]
[host."https://a.example"]
`
    assert.deepEqual(parseExistingHosts(input).hosts.map((host) => host.key), [
      'https://b.example', 'https://a.example', 'https://inline.example', 'https://sub-only.example',
    ])
    // Dotted keys define hosts too.
    assert.deepEqual(parseExistingHosts('host."https://d.example".capabilities = ["pull"]\nhost."https://c.example".ca = "x"\n').hosts, [
      { key: 'https://d.example', text: "[host.'https://d.example']\ncapabilities = ['pull']" },
      { key: 'https://c.example', text: "[host.'https://c.example']\nca = 'x'" },
    ])
  })

  test('a host table with nothing in it is kept as a bare header', () => {
    assert.deepEqual(parseExistingHosts('[host."https://empty.example"]\n').hosts, [{ key: 'https://empty.example', text: "[host.'https://empty.example']" }])
  })

  test('an empty [host] and a file without hosts give no hosts', () => {
    assert.deepEqual(parseExistingHosts('server = "https://x"\n[host]\n').hosts, [])
    assert.deepEqual(parseExistingHosts('').hosts, [])
  })

  test('top-level settings other than server are kept, sorted; other tables come after the hosts', () => {
    const existing = parseExistingHosts(`server = "https://r.example"
skip_verify = true
ca = "ca.pem"
capabilities = ["pull", "resolve"]
[header]
X-Up = "1"
[host."https://m.example"]
`)
    assert.deepEqual(existing.topLevel, ["ca = 'ca.pem'", "capabilities = ['pull', 'resolve']", 'skip_verify = true'])
    assert.deepEqual(existing.otherTables, ["[header]\nX-Up = '1'"])
    assert.equal(existing.server, 'https://r.example')
  })

  test('invalid TOML throws', () => {
    assert.throws(() => parseExistingHosts('[host."x"\n'), TomlError)
  })
})

describe('scanTableHeaders', () => {
  test('ignores brackets in strings, comments and multi-line arrays', () => {
    const input = `# [host."in-comment"]
key = "[host.\\"in-string\\"]"
multi = """
[host."in-multiline-basic"]
"""
lit = '''
[host."in-multiline-literal"]'''''
arr = [
  ["a", "b"],
  [ "host" ],
]
[host."real-1"] # trailing comment
  [ host . 'real-2' ]
[[host."array-table"]]
[host."real-1".header]
[a.b.c]
`
    assert.deepEqual(scanTableHeaders(input), [['host', 'real-1'], ['host', 'real-2'], ['host', 'real-1', 'header'], ['a', 'b', 'c']])
  })

  test('header keys with escapes and brackets', () => {
    assert.deepEqual(scanTableHeaders('[host."https://x/\\u0041]"]\n'), [['host', 'https://x/A]']])
  })
})

describe('TOML formatting', () => {
  test('keys are bare when possible', () => {
    assert.equal(formatKey('capabilities'), 'capabilities')
    assert.equal(formatKey('x-custom_2'), 'x-custom_2')
    assert.equal(formatKey('https://a'), "'https://a'")
    assert.equal(formatKey('X.Dotted'), "'X.Dotted'")
    assert.equal(formatKey(''), "''")
  })

  test('strings are literal unless they cannot be', () => {
    assert.equal(formatString('plain'), "'plain'")
    assert.equal(formatString('with "double"'), `'with "double"'`)
    assert.equal(formatString('back\\slash'), "'back\\slash'")
    assert.equal(formatString("it's"), `"it's"`)
    assert.equal(formatString('tab\there'), "'tab\there'")
    assert.equal(formatString('line\nbreak "q" \\ \u0001'), '"line\\nbreak \\"q\\" \\\\ \\u0001"')
    for (const value of ["it's", 'line\nbreak', 'a\u007fb', 'ünïcode ✓', 'with "double"']) {
      assert.equal(parse(`k = ${formatString(value)}`).k, value)
    }
  })

  test('values', () => {
    assert.equal(formatValue(true), 'true')
    assert.equal(formatValue(42), '42')
    assert.equal(formatValue(1.5), '1.5')
    assert.equal(formatValue(9007199254740993n), '9007199254740993')
    assert.equal(formatValue([]), '[]')
    assert.equal(formatValue([['a'], ['b', '']]), "[['a'], ['b', '']]")
    assert.equal(formatValue([{ b: 1, a: 'x' }]), "[{ a = 'x', b = 1 }]")
    assert.equal(formatValue(Infinity), 'inf')
    assert.equal(formatValue(NaN), 'nan')
  })
})

describe('renderHostsToml', () => {
  test('our entries come first, then kept settings and hosts; the result is valid TOML', () => {
    const [registry] = parseMirroredRegistries(['https://docker.io'])
    assert.ok(registry !== undefined)
    const text = renderHostsToml(
      { registry, mirrorTargets: parseMirrorTargets(['http://10.0.0.5:30020']), capabilities: ['pull'] },
      parseExistingHosts('skip_verify = true\n[host."https://m"]\ncapabilities = ["pull"]\n[header]\nX = "1"\n'),
    )
    assert.equal(text, `server = 'https://registry-1.docker.io'
skip_verify = true

[host.'http://10.0.0.5:30020']
capabilities = ['pull']
dial_timeout = '200ms'

[host.'https://m']
capabilities = ['pull']

[header]
X = '1'`)
    assert.deepEqual(Object.keys(parse(text).host as object), ['http://10.0.0.5:30020', 'https://m'])
  })
})
