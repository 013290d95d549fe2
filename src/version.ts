import { readFileSync } from 'node:fs'
import { endianness } from 'node:os'

/**
 * What `spegel version --format=json` prints, in the shape of Spegel's `version.Info` (v0.7: internal/version,
 * `{"build":{"goVersion","version","commit"},"runtime":{"distro","os","arch"}}`, keys in that order). There is no Go
 * here: `goVersion` names the JavaScript runtime the same way Go's runtime.Version() names Go (`node24.11.1` for
 * `go1.24.2`), so tools that read the field still find the runtime's version there.
 */
export interface VersionInfo {
  build: { goVersion: string, version: string, commit: string }
  runtime: { distro: string, os: string, arch: string }
}

/** Version from package.json; the commit is stamped into the image at build time as SPEGEL_COMMIT. */
export function versionInfo (): VersionInfo {
  let version = 'unknown'
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      version = (JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { version: string }).version
      break
    } catch {}
  }
  return {
    build: { goVersion: `node${process.versions.node}`, version, commit: process.env.SPEGEL_COMMIT ?? 'unknown' },
    runtime: { distro: distro(readOsRelease()), os: goOs(process.platform), arch: goArch(process.arch) },
  }
}

/** Spegel's getDistro: PRETTY_NAME of /etc/os-release (its text, undefined if unreadable) without quotes, else `unknown`. */
export function distro (osRelease: string | undefined): string {
  if (osRelease === undefined) return 'unknown'
  for (const raw of osRelease.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('PRETTY_NAME=')) return line.slice('PRETTY_NAME='.length).replace(/^"+|"+$/g, '')
  }
  return 'unknown'
}

export function readOsRelease (): string | undefined {
  try {
    return readFileSync('/etc/os-release', 'utf8')
  } catch {
    return undefined
  }
}

/** GOOS for Node's platform name. */
export function goOs (platform: string): string {
  return platform === 'win32' ? 'windows' : platform
}

/** GOARCH for Node's architecture name. */
export function goArch (arch: string, littleEndian = endianness() === 'LE'): string {
  switch (arch) {
    case 'x64': return 'amd64'
    case 'ia32': return '386'
    case 'ppc64': return littleEndian ? 'ppc64le' : 'ppc64'
    case 'mips64el': return 'mips64le'
    case 'mipsel': return 'mipsle'
    default: return arch
  }
}
