import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createSecureContext, type ConnectionOptions } from 'node:tls'
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto'
import { isIPv4, isIPv6 } from 'node:net'
import * as der from '../util/der.ts'

/**
 * `--registry-cert-dir`: the registry port's mutual TLS. The directory holds `ca.crt`, `tls.crt` and `tls.key` (the
 * layout of a Kubernetes TLS Secret with its CA, as Spegel's `--http-bootstrap-cert-dir`), and optionally `ca.key`.
 * Every node presents the same kind of certificate: its registry serves TLS and takes only clients whose certificate
 * chains to `ca.crt` (its own containerd, through hosts.toml, and its peers); it presents `tls.crt` to its peers in turn
 * and accepts them only if theirs chains to `ca.crt`. Peers check the chain, not names: they are reached by IP, and the
 * CA is the cluster's own, made for this purpose only. containerd does check the name: the registry serves `tls.crt`,
 * which must then name every node's IP, or, with `ca.key` present, a certificate the node issues itself at start for
 * its own addresses (how the chart does it: one Secret for every node).
 */
export interface RegistryTls {
  dir: string
  ca: Buffer
  cert: Buffer
  key: Buffer
  /** `ca.key`, when the directory has it: each node then issues its own serving certificate (issueServingCertificate). */
  caKey?: Buffer
  /** The certificate and key the registry serves with, when not `cert` and `key` (a certificate issued at start). */
  serving?: { cert: string, key: string }
}

export const registryTlsFiles = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key', caKey: 'ca.key' } as const

/** The directory is incomplete or its files are not a CA, a certificate and its key. */
export class RegistryTlsError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RegistryTlsError'
  }
}

/** Reads and checks `--registry-cert-dir`; undefined for an empty value (plain HTTP, as Spegel). */
export async function readRegistryTls (dir: string): Promise<RegistryTls | undefined> {
  if (dir === '') return undefined
  const read = async (name: string): Promise<Buffer> => {
    try {
      return await readFile(join(dir, name))
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (err as Error).message
      throw new RegistryTlsError(`--registry-cert-dir=${dir}: ${name} ${why} (the directory holds ca.crt, tls.crt and tls.key)`, { cause: err })
    }
  }
  const tls: RegistryTls = { dir, ca: await read(registryTlsFiles.ca), cert: await read(registryTlsFiles.cert), key: await read(registryTlsFiles.key) }
  const caKey = await readFile(join(dir, registryTlsFiles.caKey)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw new RegistryTlsError(`--registry-cert-dir=${dir}: ${registryTlsFiles.caKey}: ${err.message}`, { cause: err })
  })
  if (caKey !== undefined) tls.caKey = caKey
  let ca: X509Certificate
  let cert: X509Certificate
  try {
    ca = new X509Certificate(tls.ca)
    cert = new X509Certificate(tls.cert)
    createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key })
  } catch (err) {
    throw new RegistryTlsError(`--registry-cert-dir=${dir}: ${(err as Error).message}`, { cause: err })
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new RegistryTlsError(`--registry-cert-dir=${dir}: tls.crt is not signed by ca.crt`)
  }
  if (tls.caKey !== undefined) {
    let matches: boolean
    try {
      const spki = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' })
      matches = spki(createPublicKey(createPrivateKey(tls.caKey))).equals(spki(ca.publicKey))
    } catch (err) {
      throw new RegistryTlsError(`--registry-cert-dir=${dir}: ca.key: ${(err as Error).message}`, { cause: err })
    }
    if (!matches) throw new RegistryTlsError(`--registry-cert-dir=${dir}: ca.key is not the key of ca.crt`)
  }
  return tls
}

/** Options of a TLS connection to a peer's registry: this node's certificate, the peer's checked against the CA only. */
export function peerTlsOptions (tls: RegistryTls): ConnectionOptions {
  return { ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: () => undefined }
}

/**
 * A serving certificate for this node, signed with the CA's key (`ca.key` in `--registry-cert-dir`, as the chart
 * makes it): one Secret serves every node, and each names its own addresses, which containerd checks against the
 * mirror's URL (`https://<node IP>:<port>`). ECDSA P-256, valid until the CA expires, made at every start and never
 * written anywhere. The CA's key may be RSA (Helm's genCA), ECDSA or Ed25519.
 */
export function issueServingCertificate (ca: { cert: Buffer, key: Buffer }, options: { ips: readonly string[], dnsNames?: readonly string[], now?: Date }): { cert: string, key: string } {
  const caCert = new X509Certificate(ca.cert)
  const caKey = createPrivateKey(ca.key)
  const now = options.now ?? new Date()
  const notAfter = new Date(caCert.validTo)
  if (!(notAfter > now)) throw new RegistryTlsError(`the registry CA expired on ${caCert.validTo}`)
  let algorithm: Buffer
  let digest: string | null = 'sha256'
  switch (caKey.asymmetricKeyType) {
    case 'ec': algorithm = der.sequence(der.oid('1.2.840.10045.4.3.2')); break
    case 'rsa': algorithm = der.sequence(der.oid('1.2.840.113549.1.1.11'), der.nullValue()); break
    case 'ed25519': algorithm = der.sequence(der.oid('1.3.101.112')); digest = null; break
    default: throw new RegistryTlsError(`ca.key: ${String(caKey.asymmetricKeyType)} keys cannot sign here (RSA, ECDSA or Ed25519)`)
  }
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const serial = randomBytes(16)
  serial[0] = (serial[0] ?? 0) & 0x7f
  const names = [
    ...options.ips.map((ip) => der.implicit(7, ipBytes(ip))),
    ...(options.dnsNames ?? []).map((name) => der.implicit(2, Buffer.from(name, 'latin1'))),
  ]
  const extensions = [
    der.sequence(der.oid('2.5.29.19'), der.boolean(true), der.octetString(der.sequence())),
    // digitalSignature only.
    der.sequence(der.oid('2.5.29.15'), der.boolean(true), der.octetString(der.bitString(Buffer.from([0x80]), 7))),
    der.sequence(der.oid('2.5.29.37'), der.octetString(der.sequence(der.oid('1.3.6.1.5.5.7.3.1'), der.oid('1.3.6.1.5.5.7.3.2')))),
    der.sequence(der.oid('2.5.29.17'), der.octetString(der.sequence(...names))),
  ]
  const tbs = der.sequence(
    der.explicit(0, der.unsignedInteger(Buffer.from([2]))),
    der.unsignedInteger(serial),
    algorithm,
    subjectOf(caCert.raw),
    der.sequence(der.time(new Date(now.getTime() - 5 * 60_000)), der.time(notAfter)),
    der.sequence(der.set(der.sequence(der.oid('2.5.4.3'), der.utf8String('spegel-registry')))),
    publicKey.export({ type: 'spki', format: 'der' }),
    der.explicit(3, der.sequence(...extensions)),
  )
  const signature = sign(digest, tbs, caKey)
  const certificate = der.sequence(tbs, algorithm, der.bitString(signature))
  const base64 = certificate.toString('base64').replace(/.{1,64}/g, '$&\n')
  return { cert: `-----BEGIN CERTIFICATE-----\n${base64}-----END CERTIFICATE-----\n`, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

/** The subject of a certificate, as its DER bytes (the issuer of what it signs). */
function subjectOf (certificate: Buffer): Buffer {
  const cert = der.readElement(certificate, 0)
  const tbs = der.readElement(certificate, cert.start)
  let at = tbs.start
  const fields: Array<{ start: number, end: number }> = []
  while (at < tbs.end && fields.length < 6) {
    const e = der.readElement(certificate, at)
    // Skip the optional [0] version: serial, signature, issuer, validity, subject follow.
    if (!(fields.length === 0 && e.tag === 0xa0)) fields.push({ start: at, end: e.end })
    at = e.end
  }
  const subject = fields[4]
  if (subject === undefined) throw new RegistryTlsError('ca.crt: no subject found')
  return certificate.subarray(subject.start, subject.end)
}

function ipBytes (ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number))
  if (!isIPv6(ip)) throw new RegistryTlsError(`not an IP address: ${ip}`)
  const [head = '', tail] = ip.split('::')
  const groups = (s: string): number[] => s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16))
  const front = groups(head)
  const back = tail === undefined ? [] : groups(tail)
  const all = [...front, ...Array<number>(8 - front.length - back.length).fill(0), ...back]
  const out = Buffer.alloc(16)
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  return out
}
