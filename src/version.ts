import { readFileSync } from 'node:fs'

export interface VersionInfo {
  build: { version: string, commit: string, nodeVersion: string }
  runtime: { os: string, arch: string }
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
    build: { version, commit: process.env.SPEGEL_COMMIT ?? 'unknown', nodeVersion: process.version },
    runtime: { os: process.platform, arch: process.arch },
  }
}
