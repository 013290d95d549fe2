// Checks that integration tests run before they start real processes, so a missing package fails with a message
// saying how to install it instead of an obscure ENOENT from spawn.
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

export class MissingToolError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MissingToolError'
  }
}

/** Returns the absolute path of `name` on PATH, or undefined. */
export function findTool (name: string): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? name : undefined
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, name)
    if (isExecutable(candidate)) return candidate
  }
  // Debian puts ip(8) and friends in sbin, which a non-login PATH may lack.
  for (const dir of ['/usr/sbin', '/sbin']) {
    const candidate = join(dir, name)
    if (isExecutable(candidate)) return candidate
  }
  return undefined
}

/**
 * Returns the absolute path of `name`; throws MissingToolError such as
 * "skopeo is not installed: apt-get install -y skopeo" when it is not on PATH.
 */
export function requireTool (name: string, installHint: string): string {
  const path = findTool(name)
  if (path === undefined) throw new MissingToolError(`${name} is not installed: ${installHint}`)
  return path
}

/** Install hints for the tools the integration tests use (Debian 12 package names). */
export const installHints = {
  'docker-registry': 'apt-get install -y docker-registry',
  skopeo: 'apt-get install -y skopeo',
  containerd: 'apt-get install -y containerd',
  ctr: 'apt-get install -y containerd',
  ip: 'apt-get install -y iproute2',
  tc: 'apt-get install -y iproute2',
  tar: 'apt-get install -y tar',
} as const

/** requireTool with the hint from installHints. */
export function requireKnownTool (name: keyof typeof installHints): string {
  return requireTool(name, installHints[name])
}

/** Throws unless the process runs as root (containerd, network namespaces and overlay mounts need it). */
export function requireRoot (): void {
  const uid = process.getuid?.()
  if (uid !== 0) {
    throw new MissingToolError(`this test must run as root (uid 0), it runs as uid ${String(uid)}: run it with sudo or as root in CI`)
  }
}

function isExecutable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
