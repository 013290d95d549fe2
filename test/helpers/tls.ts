import { readFile, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import { join } from 'node:path'
import { run } from './process.ts'
import { requireTool } from './tools.ts'

/** A CA and one certificate it signed, as `--registry-cert-dir` holds them. */
export interface TestCertDir {
  dir: string
  ca: Buffer
  cert: Buffer
  key: Buffer
}

/**
 * Makes a CA (P-256) and a certificate it signed for both server and client use, with `ips` as its IP SANs (containerd
 * checks the mirror's address against them), into `dir` as ca.crt, tls.crt and tls.key. openssl, as an admin would.
 * The CA's key stays in the directory as ca.key (the daemons then issue their own serving certificates, as with the
 * chart's Secret) unless `caKey` is false.
 */
export async function makeCertDir (dir: string, options: { name: string, ips: readonly string[], caKey?: boolean }): Promise<TestCertDir> {
  requireTool('openssl', 'apt-get install -y openssl')
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await run('openssl', ['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '2', '-subj', `/CN=${options.name} CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  await run('openssl', ['req', ...ec, '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'tls.csr'), '-subj', `/CN=${options.name}`])
  const ext = join(dir, 'ext.cnf')
  await writeFile(ext, [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth,clientAuth',
    `subjectAltName=${['DNS:localhost', ...['127.0.0.1', ...options.ips].map((ip) => `IP:${ip}`)].join(',')}`,
  ].join('\n'))
  await run('openssl', ['x509', '-req', '-in', join(dir, 'tls.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial',
    '-out', join(dir, 'tls.crt'), '-days', '2', '-extfile', ext])
  if (options.caKey === false) await rm(join(dir, 'ca.key'))
  return { dir, ca: await readFile(join(dir, 'ca.crt')), cert: await readFile(join(dir, 'tls.crt')), key: await readFile(join(dir, 'tls.key')) }
}

/**
 * The status of an HTTPS request (the body is read and dropped). `ca` verifies the server; `client` is the certificate
 * presented, if any. Rejects when the handshake fails.
 */
export async function httpsStatus (url: string, options: { ca: Buffer, client?: { cert: Buffer, key: Buffer }, method?: 'GET' | 'HEAD', timeoutMs?: number }): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const req = https.request(url, {
      method: options.method ?? 'GET',
      ca: options.ca,
      ...(options.client !== undefined ? { cert: options.client.cert, key: options.client.key } : {}),
      agent: false,
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    }, (res) => {
      res.resume()
      res.once('end', () => { resolve(res.statusCode ?? 0) })
      res.once('error', reject)
    })
    req.once('error', reject)
    req.end()
  })
}
