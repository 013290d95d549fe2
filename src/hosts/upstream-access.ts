import { readdir, readFile } from 'node:fs/promises'
import { isAbsolute, join } from 'node:path'
import { parse } from 'smol-toml'
import type { TomlTable } from 'smol-toml'
import { defaultHostDirectory } from './url.ts'

// How containerd reaches a registry itself, read from its hosts directory: the `server` and the TLS settings that
// apply to it. The daemon asks the upstream the same way when it confirms a tag, so a private registry whose CA only
// containerd's configuration names (Talos `machine.registries.config.<host>.tls.ca`) is verified, not taken as
// unreachable. https://github.com/containerd/containerd/blob/main/docs/hosts.md

/** What containerd's configuration says about reaching a registry's own server. */
export interface UpstreamAccess {
  /** `scheme://host[:port]` of the server, when the configuration names one. */
  server?: string
  /** Extra CA certificates (PEM) to trust for it, beyond the system's. */
  ca: Buffer[]
  /** `skip_verify = true`: containerd does not verify the server's certificate. */
  skipVerify: boolean
}

/** Certificate files larger than this are not a CA bundle. */
const maxCertificateBytes = 1 << 20

/**
 * The access containerd would use for `registry` (a host as in image references, `host[:port]`): from
 * `<configPath>/<registry>/hosts.toml`, or `_default/hosts.toml` when the registry has no directory. The CA files are
 * its top-level `ca` and that of a `[host]` entry for the server itself (relative paths are relative to the
 * directory); a directory without hosts.toml counts its `*.crt` files, as containerd does. Undefined when neither
 * exists. Throws when a file that exists cannot be read or parsed.
 */
export async function readUpstreamAccess (configPath: string, registry: string): Promise<UpstreamAccess | undefined> {
  if (registry === '' || registry.includes('/') || registry.startsWith('.')) return undefined
  for (const name of [registry, defaultHostDirectory]) {
    const dir = join(configPath, name)
    let text: string | undefined
    try {
      text = await readFile(join(dir, 'hosts.toml'), 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err
    }
    if (text !== undefined) return await fromHostsToml(dir, text, name === defaultHostDirectory ? undefined : registry)
    const crts = await certificateFiles(dir)
    if (crts !== undefined) return { ca: await Promise.all(crts.map(async (f) => await readCertificate(join(dir, f)))), skipVerify: false }
  }
  return undefined
}

async function fromHostsToml (dir: string, text: string, registry: string | undefined): Promise<UpstreamAccess> {
  const doc = parse(text)
  const server = typeof doc.server === 'string' ? doc.server : undefined
  const serverOrigin = origin(server ?? (registry !== undefined ? `https://${registry}` : undefined))
  const caPaths: string[] = [...strings(doc.ca)]
  let skipVerify = doc.skip_verify === true
  const hosts = doc.host
  if (isTable(hosts)) {
    for (const [key, entry] of Object.entries(hosts)) {
      if (!isTable(entry) || serverOrigin === undefined || origin(key) !== serverOrigin) continue
      caPaths.push(...strings(entry.ca))
      skipVerify ||= entry.skip_verify === true
    }
  }
  const ca = await Promise.all([...new Set(caPaths)].map(async (p) => await readCertificate(isAbsolute(p) ? p : join(dir, p))))
  return { ...(server !== undefined ? { server: server.replace(/\/+$/, '') } : {}), ca, skipVerify }
}

/** `*.crt` files of a directory without hosts.toml (containerd's certs.d compatibility); undefined when it is missing. */
async function certificateFiles (dir: string): Promise<string[] | undefined> {
  try {
    return (await readdir(dir)).filter((f) => f.endsWith('.crt')).sort()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    throw err
  }
}

async function readCertificate (path: string): Promise<Buffer> {
  const bytes = await readFile(path)
  if (bytes.length > maxCertificateBytes) throw new Error(`${path} is larger than ${maxCertificateBytes} bytes: not a CA certificate`)
  return bytes
}

function strings (value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string')
  return []
}

function origin (url: string | undefined): string | undefined {
  if (url === undefined) return undefined
  try {
    return new URL(url).origin
  } catch {
    return undefined
  }
}

function isTable (value: unknown): value is TomlTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}
