import assert from 'node:assert/strict'
import { cp, mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parseMirroredRegistries, parseMirrorTargets, readRegistryTls, RegistryTlsError, renderHostsToml } from '../../../src/hosts/index.ts'
import { makeCertDir, type TestCertDir } from '../../helpers/tls.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'

describe('--registry-cert-dir', () => {
  let tmp: TempDir
  let good: TestCertDir
  let other: TestCertDir
  before(async () => {
    tmp = await makeTempDir('spegel-tls-unit')
    await mkdir(join(tmp.path, 'good'))
    await mkdir(join(tmp.path, 'other'))
    good = await makeCertDir(join(tmp.path, 'good'), { name: 'good', ips: ['10.0.0.1'] })
    other = await makeCertDir(join(tmp.path, 'other'), { name: 'other', ips: ['10.0.0.1'] })
  })
  after(async () => { await tmp?.cleanup() })

  it('is off when empty, and reads ca.crt, tls.crt and tls.key', async () => {
    assert.equal(await readRegistryTls(''), undefined)
    const tls = await readRegistryTls(good.dir)
    assert.deepEqual(tls?.ca, good.ca)
    assert.deepEqual(tls?.cert, good.cert)
    assert.deepEqual(tls?.key, good.key)
  })

  it('refuses a missing file, a key of another certificate and a certificate of another CA, naming the flag', async () => {
    const mixed = join(tmp.path, 'mixed')
    await cp(good.dir, mixed, { recursive: true })
    await rm(join(mixed, 'tls.key'))
    await assert.rejects(readRegistryTls(mixed), (err: Error) => err instanceof RegistryTlsError && /^--registry-cert-dir=.*: tls\.key missing/.test(err.message))
    await writeFile(join(mixed, 'tls.key'), other.key)
    await assert.rejects(readRegistryTls(mixed), (err: Error) => err instanceof RegistryTlsError && err.message.startsWith('--registry-cert-dir='))
    await writeFile(join(mixed, 'tls.key'), good.key)
    await writeFile(join(mixed, 'ca.crt'), other.ca)
    await assert.rejects(readRegistryTls(mixed), /tls\.crt is not signed by ca\.crt/)
  })

  it('names the CA and the client certificate in https:// mirror targets only', () => {
    const [registry] = parseMirroredRegistries(['https://docker.io'])
    const text = renderHostsToml({
      registry: registry!,
      mirrorTargets: parseMirrorTargets(['https://10.0.0.1:30020', 'http://10.0.0.2:30020']),
      capabilities: ['pull', 'resolve'],
      tls: { ca: 'spegel-ca.crt', cert: 'spegel-client.crt', key: 'spegel-client.key' },
    })
    assert.equal(text, [
      "server = 'https://registry-1.docker.io'",
      '',
      "[host.'https://10.0.0.1:30020']",
      "capabilities = ['pull', 'resolve']",
      "dial_timeout = '200ms'",
      "ca = 'spegel-ca.crt'",
      "client = [['spegel-client.crt', 'spegel-client.key']]",
      '',
      "[host.'http://10.0.0.2:30020']",
      "capabilities = ['pull', 'resolve']",
      "dial_timeout = '200ms'",
    ].join('\n'))
  })
})
