import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createSecureContext, type ConnectionOptions } from 'node:tls'
import { X509Certificate } from 'node:crypto'

/**
 * `--registry-cert-dir`: the registry port's mutual TLS. The directory holds `ca.crt`, `tls.crt` and `tls.key` (the
 * layout of a Kubernetes TLS Secret with its CA, as Spegel's `--http-bootstrap-cert-dir`). Every node presents the
 * same kind of certificate: its registry serves TLS with it and takes only clients whose certificate chains to
 * `ca.crt` (its own containerd, through hosts.toml, and its peers); it presents it to its peers in turn and accepts
 * them only if theirs chains to `ca.crt`. Names are not checked: peers are reached by IP, and the CA is the cluster's
 * own, made for this purpose only.
 */
export interface RegistryTls {
  dir: string
  ca: Buffer
  cert: Buffer
  key: Buffer
}

export const registryTlsFiles = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' } as const

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
  return tls
}

/** Options of a TLS connection to a peer's registry: this node's certificate, the peer's checked against the CA only. */
export function peerTlsOptions (tls: RegistryTls): ConnectionOptions {
  return { ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: () => undefined }
}
