import assert from 'node:assert/strict'
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto'
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { issueServingCertificate, parseMirroredRegistries, parseMirrorTargets, readRegistryTls, RegistryTlsError, renderHostsToml } from '../../../src/hosts/index.ts'
import { run } from '../../helpers/process.ts'
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

  it('issues serving certificates from a CA key (RSA as Helm\'s genCA makes, ECDSA, Ed25519) that name the given addresses', async () => {
    for (const algorithm of ['rsa:2048', 'ec', 'ed25519']) {
      const dir = join(tmp.path, algorithm.replace(':', '-'))
      await mkdir(dir)
      const keyArgs = algorithm === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', algorithm]
      await run('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=test CA/O=spegel'])
      const ca = { cert: await readFile(join(dir, 'ca.crt')), key: await readFile(join(dir, 'ca.key')) }
      const issued = issueServingCertificate(ca, { ips: ['10.1.2.3', 'fd00::5', '::1'], dnsNames: ['localhost'] })
      const cert = new X509Certificate(issued.cert)
      const caCert = new X509Certificate(ca.cert)
      assert.ok(cert.verify(caCert.publicKey), `${algorithm}: signed by the CA`)
      assert.ok(cert.checkIssued(caCert), `${algorithm}: issuer is the CA's subject`)
      assert.equal(cert.subjectAltName, 'IP Address:10.1.2.3, IP Address:FD00:0:0:0:0:0:0:5, IP Address:0:0:0:0:0:0:0:1, DNS:localhost')
      assert.equal(cert.checkIP('10.1.2.3'), '10.1.2.3')
      assert.equal(cert.validTo, caCert.validTo, 'valid as long as the CA')
      assert.ok(cert.checkPrivateKey(createPrivateKey(issued.key)))
      await writeFile(join(dir, 'leaf.pem'), issued.cert)
      await run('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), '-purpose', 'sslserver', join(dir, 'leaf.pem')])
    }
    assert.throws(() => issueServingCertificate({ cert: good.ca, key: generateKeyPairSync('x25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as unknown as Buffer }, { ips: [] }), RegistryTlsError)
    assert.throws(() => issueServingCertificate({ cert: good.ca, key: good.key }, { ips: [], now: new Date(Date.now() + 3 * 86_400_000) }), /expired/)
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
