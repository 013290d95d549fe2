// Talos specifics (landscape.md §3): containerd reads hosts from /etc/cri/conf.d/hosts and discards unpacked layers by
// default under `io.containerd.cri.v1.images`. The only override that works is a machine-config file
// /etc/cri/conf.d/20-customization.part; older guides' /var/etc/cri/conf.d/20-spegel.part and the legacy
// `io.containerd.grpc.v1.cri` table are silently ignored.

/** containerd's registry config_path on Talos. */
export const talosConfigPath = '/etc/cri/conf.d/hosts'
/** Directory of Talos's CRI config fragments; present on Talos nodes. */
export const talosCriDir = '/etc/cri/conf.d'

/** True when the paths in play are Talos's. */
export function looksLikeTalos (paths: ReadonlyArray<string | undefined>): boolean {
  return paths.some((p) => p !== undefined && (p === talosCriDir || p.startsWith(talosCriDir + '/')))
}

/** The machine-config patch that keeps unpacked layers on Talos. */
export const talosDiscardPatch = [
  'machine:',
  '  files:',
  '    - path: /etc/cri/conf.d/20-customization.part',
  '      op: create',
  '      content: |',
  '        [plugins."io.containerd.cri.v1.images"]',
  '          discard_unpacked_layers = false',
].join('\n')

/** How to apply talosDiscardPatch: the CRI config is read at boot only. */
export const talosApplyHint = 'save it as spegel-patch.yaml, then on each node: talosctl patch machineconfig --nodes <node-ip> --patch @spegel-patch.yaml --mode=reboot ' +
  '(Omni: add it as a cluster config patch). Do not use /var/etc/cri/conf.d/20-spegel.part or the io.containerd.grpc.v1.cri table: Talos ignores both.'
