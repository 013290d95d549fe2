// Reading containerd's CRI image settings out of a CRI Status response.
//
// containerd 1.6/1.7 put the whole CRI plugin config (`io.containerd.grpc.v1.cri`) in info["config"]:
// `registry.configPath` and `containerd.discardUnpackedLayers`. containerd 2.x split the plugin: image settings moved
// to `io.containerd.cri.v1.images` (`registry.config_path`, `discard_unpacked_layers` at its top level) and its Status
// reports only the runtime part, so these fields may be absent. Every JSON value of `info` is searched, so a version
// that reports the image config under another key (`imageConfig`, …) is understood too; absent means "unknown".

/** containerd's two layouts of the CRI configuration. */
export type CriLayout = 'grpc.v1.cri' | 'cri.v1.images'

export interface CriImageSettings {
  /** `config_path` as containerd reports it (may list several directories separated by ':'); undefined if unknown. */
  configPath?: string
  /** Info key and JSON path the value came from, for messages. */
  configPathSource?: string
  discardUnpackedLayers?: boolean
  discardSource?: string
}

/** Finds `registry.configPath` and `discardUnpackedLayers` in a CRI Status info map. */
export function criImageSettings (info: Readonly<Record<string, string>>): CriImageSettings {
  const out: CriImageSettings = {}
  // info["config"] first: it is where 1.6/1.7 put them.
  const keys = Object.keys(info).sort((a, b) => (a === 'config' ? -1 : b === 'config' ? 1 : a.localeCompare(b)))
  for (const key of keys) {
    let doc: unknown
    try {
      doc = JSON.parse(info[key] ?? '')
    } catch {
      continue
    }
    search(doc, [key], out, 0)
  }
  return out
}

function search (value: unknown, path: string[], out: CriImageSettings, depth: number): void {
  if (depth > 4 || typeof value !== 'object' || value === null || Array.isArray(value)) return
  const obj = value as Record<string, unknown>
  const registry = obj.registry
  if (out.configPath === undefined && typeof registry === 'object' && registry !== null) {
    const cp = (registry as Record<string, unknown>).configPath ?? (registry as Record<string, unknown>).config_path
    if (typeof cp === 'string') {
      out.configPath = cp
      out.configPathSource = [...path, 'registry', 'configPath'].join('.')
    }
  }
  const discard = obj.discardUnpackedLayers ?? obj.discard_unpacked_layers
  if (out.discardUnpackedLayers === undefined && typeof discard === 'boolean') {
    out.discardUnpackedLayers = discard
    out.discardSource = [...path, 'discardUnpackedLayers'].join('.')
  }
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'registry') continue
    search(v, [...path, k], out, depth + 1)
  }
}

/**
 * Splits a `config_path` value into directories. containerd (like Go's filepath.SplitList) separates them with ':';
 * empty elements are dropped and trailing slashes ignored.
 */
export function splitConfigPath (value: string): string[] {
  return value.split(':').map((p) => normalizeDir(p)).filter((p) => p !== '')
}

export function normalizeDir (dir: string): string {
  const trimmed = dir.trim()
  if (trimmed === '/') return trimmed
  return trimmed.replace(/\/+$/, '')
}

/** The TOML snippet that sets a CRI image setting, for the layout this containerd uses. */
export function criTomlSnippet (layout: CriLayout, setting: { configPath?: string, discardUnpackedLayers?: false }): string {
  const lines: string[] = []
  if (layout === 'cri.v1.images') {
    lines.push('version = 3  # containerd 2.x config')
    if (setting.discardUnpackedLayers === false) lines.push('[plugins."io.containerd.cri.v1.images"]', '  discard_unpacked_layers = false')
    if (setting.configPath !== undefined) lines.push('[plugins."io.containerd.cri.v1.images".registry]', `  config_path = ${JSON.stringify(setting.configPath)}`)
  } else {
    lines.push('version = 2  # containerd 1.6/1.7 config')
    if (setting.discardUnpackedLayers === false) lines.push('[plugins."io.containerd.grpc.v1.cri".containerd]', '  discard_unpacked_layers = false')
    if (setting.configPath !== undefined) lines.push('[plugins."io.containerd.grpc.v1.cri".registry]', `  config_path = ${JSON.stringify(setting.configPath)}`)
  }
  return lines.join('\n')
}
