import type { CommandSpec, ConfigOf, FlagSpec } from './args.ts'
import { defaultPeriodMs, defaultThreshold } from '../cleanup/wait.ts'
import { defaultNamespace, defaultSocket } from '../containerd/constants.ts'
import { defaultRegistryConfigPath } from '../hosts/index.ts'
import { defaultResolveRetries, defaultResolveTimeoutMs, defaultStallTimeoutMs } from '../registry/constants.ts'
import { defaultRouterAddr } from '../routing/constants.ts'
import { formatDuration } from '../util/duration.ts'

// Spegel's subcommands, flags, env vars and defaults (reference: spegel-behaviour.md §2). Changing a name or default here
// breaks drop-in compatibility with existing Helm values and manifests. A default that a library class also falls back
// to is that class's constant, so it is written once.
// Every spec is `as const`: each command's typed config (RegistryConfig, …, at the end) is derived from it.

export const globalFlags = [
  { name: 'log-level', kind: 'string', env: 'LOG_LEVEL', default: 'INFO', choices: ['DEBUG', 'INFO', 'WARN', 'ERROR'], help: 'Minimum level of the JSON logs written to stderr.' },
] as const satisfies readonly FlagSpec[]

const registryConfigPath = {
  name: 'containerd-registry-config-path', kind: 'string', env: 'CONTAINERD_REGISTRY_CONFIG_PATH', default: defaultRegistryConfigPath,
  help: 'Directory of containerd registry host configs (containerd config_path; /etc/cri/conf.d/hosts on Talos).',
} as const satisfies FlagSpec
const containerdSock = { name: 'containerd-sock', kind: 'string', env: 'CONTAINERD_SOCK', default: defaultSocket, help: 'containerd gRPC socket.' } as const satisfies FlagSpec
const containerdNamespace = {
  name: 'containerd-namespace', kind: 'string', env: 'CONTAINERD_NAMESPACE', default: defaultNamespace, help: 'containerd namespace whose images are mirrored.',
} as const satisfies FlagSpec
const containerdContentPath = {
  name: 'containerd-content-path', kind: 'string', env: 'CONTAINERD_CONTENT_PATH', default: '/var/lib/containerd/io.containerd.content.v1.content',
  help: 'containerd content directory, read directly for speed; empty: ask containerd.',
} as const satisfies FlagSpec
const mirroredRegistries = {
  name: 'mirrored-registries', kind: 'list', env: 'MIRRORED_REGISTRIES',
  help: 'Registries to mirror, as URLs (https://docker.io); empty or `_default` mirrors every registry.',
} as const satisfies FlagSpec

const registryCertDir = {
  name: 'registry-cert-dir', kind: 'string', env: 'REGISTRY_CERT_DIR', default: '',
  help: 'Directory with ca.crt, tls.crt and tls.key: the registry serves TLS and takes only clients (containerd, peers) whose certificate chains to ca.crt; hosts.toml names them for https:// mirror targets. Empty: plain HTTP, as Spegel.',
} as const satisfies FlagSpec

const configuration = {
  name: 'configuration',
  help: 'Write containerd mirror configuration (hosts.toml) and exit.',
  flags: [
    registryConfigPath,
    mirroredRegistries,
    { name: 'mirror-targets', kind: 'list', env: 'MIRROR_TARGETS', required: true, help: 'Mirror URLs written into hosts.toml, in order (first: this node\'s registry).' },
    { name: 'resolve-tags', kind: 'bool', env: 'RESOLVE_TAGS', default: 'true', help: 'Let containerd resolve tags through the mirror (adds the resolve capability).' },
    { name: 'prepend-existing', kind: 'bool', env: 'PREPEND_EXISTING', default: 'false', help: 'Keep existing mirror hosts after ours instead of only backing them up.' },
    registryCertDir,
  ],
} as const satisfies CommandSpec

const registry = {
  name: 'registry',
  help: 'Run the registry mirror daemon.',
  flags: [
    { name: 'metrics-addr', kind: 'string', env: 'METRICS_ADDR', default: ':9090', help: 'Address of the metrics and debug server.' },
    containerdSock,
    containerdNamespace,
    containerdContentPath,
    { name: 'data-dir', kind: 'string', env: 'DATA_DIR', default: '', help: 'Directory for persistent state (the peer identity private.key); empty: none.' },
    { name: 'router-addr', kind: 'string', env: 'ROUTER_ADDR', default: defaultRouterAddr, help: 'Listen address of the P2P router.' },
    {
      name: 'router-psk-file', kind: 'string', env: 'ROUTER_PSK_FILE', default: '',
      help: 'Swarm key file (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits) of a private DHT: only nodes with the same key can connect. Empty: an open DHT, as Spegel.',
    },
    { name: 'registry-addr', kind: 'string', env: 'REGISTRY_ADDR', default: ':5000', help: 'Listen address of the registry; its port is also every peer\'s registry port.' },
    registryCertDir,
    {
      name: 'registry-cert-ips', kind: 'list', env: 'REGISTRY_CERT_IPS',
      help: 'With ca.key in --registry-cert-dir: addresses the serving certificate the node issues itself names besides its own interfaces\' (the chart passes the node IP, which containerd dials through the NodePort).',
    },
    mirroredRegistries,
    { name: 'registry-filters', kind: 'list', env: 'REGISTRY_FILTERS', help: 'Regular expressions matched against registry/repository[:tag]; a match is not mirrored.' },
    { name: 'mirror-resolve-timeout', kind: 'duration', env: 'MIRROR_RESOLVE_TIMEOUT', default: formatDuration(defaultResolveTimeoutMs), help: 'Longest wait for a peer while no request to a peer is in flight.' },
    { name: 'mirror-resolve-retries', kind: 'int', env: 'MIRROR_RESOLVE_RETRIES', default: String(defaultResolveRetries), help: 'Number of peers looked up per request.' },
    {
      name: 'drain-timeout', kind: 'duration', env: 'DRAIN_TIMEOUT', default: '20s',
      help: 'On SIGTERM, how long transfers in flight may continue before their connections are cut (keep it below the pod\'s terminationGracePeriodSeconds).',
    },
    {
      name: 'stall-timeout', kind: 'duration', env: 'STALL_TIMEOUT', default: formatDuration(defaultStallTimeoutMs),
      help: 'A client that takes no bytes of a blob for this long has its transfer ended (a stalled client holds no budget meanwhile).',
    },
    {
      name: 'confirm-tags', kind: 'bool', env: 'CONFIRM_TAGS', default: 'true',
      help: 'Answer a tag resolved by peers only when its upstream registry names the same digest for it (a HEAD, with an anonymous token if asked), or cannot be reached at all; otherwise 404 and containerd resolves the tag itself. false: trust peers, as Spegel.',
    },
    {
      name: 'herd-protection', kind: 'bool', env: 'HERD_PROTECTION', default: 'true',
      help: 'When several nodes miss the same blob at once (a rollout), one downloads it from the upstream and the others stream it from that node. false: every node downloads, as Spegel.',
    },
    {
      name: 'peer-redirect', kind: 'bool', env: 'PEER_REDIRECT', default: 'false',
      help: 'Answer this node\'s containerd with a redirect (307) to a peer that holds a blob, instead of streaming the blob through this node (containerd verifies it). Not with basic auth. Experimental.',
    },
    {
      name: 'transfer-memory', kind: 'string', env: 'TRANSFER_MEMORY', default: 'auto',
      help: 'Memory blob transfers may hold at once (e.g. 24Mi); past it peers get 429 and containerd falls back to the upstream. auto: derived from the container\'s memory limit.',
    },
    { ...registryConfigPath, help: 'Where `configuration` wrote hosts.toml; checked by the doctor at startup (skipped when not mounted).' },
    { name: 'debug-web-enabled', kind: 'bool', env: 'DEBUG_WEB_ENABLED', default: 'true', help: 'Serve the debug web page on the metrics address.' },
    { name: 'bootstrap-kind', kind: 'string', env: 'BOOTSTRAP_KIND', choices: ['dns', 'http', 'static'], help: 'How to find the first peers: dns, http or static.' },
    { name: 'dns-bootstrap-domain', kind: 'string', env: 'DNS_BOOTSTRAP_DOMAIN', help: 'Domain resolved (A and AAAA) to find peers.' },
    { name: 'http-bootstrap-addr', kind: 'string', env: 'HTTP_BOOTSTRAP_ADDR', help: 'Address to serve this node\'s /id on for HTTP bootstrap.' },
    { name: 'http-bootstrap-url', kind: 'string', env: 'HTTP_BOOTSTRAP_URL', help: 'URL returning bootstrap peers as a JSON array of {"ID","Addrs"}.' },
    {
      name: 'http-bootstrap-peer', kind: 'string', env: 'HTTP_BOOTSTRAP_PEER',
      help: 'Spegel v0.7\'s form of HTTP bootstrap: base URL of a peer (http://10.0.0.1:5002) whose /id is fetched; this node\'s /id then answers in v0.7\'s shape too. Use it or --http-bootstrap-url, not both.',
    },
    { name: 'http-bootstrap-cert-dir', kind: 'string', env: 'HTTP_BOOTSTRAP_CERT_DIR', help: 'Directory with ca.crt, tls.crt and tls.key for HTTPS bootstrap.' },
    { name: 'static-bootstrap-peers', kind: 'list', env: 'STATIC_BOOTSTRAP_PEERS', help: 'Multiaddrs of bootstrap peers.' },
  ],
} as const satisfies CommandSpec

const cleanup = {
  name: 'cleanup',
  help: 'Restore the containerd mirror configuration from its backup, then serve /readyz until terminated.',
  flags: [
    { name: 'addr', kind: 'string', env: 'ADDR', required: true, help: 'Address of the readiness probe server.' },
    registryConfigPath,
  ],
} as const satisfies CommandSpec

const cleanupWait = {
  name: 'cleanup-wait',
  help: 'Wait until every cleanup pod behind a DNS name reports ready.',
  flags: [
    { name: 'probe-endpoint', kind: 'string', env: 'PROBE_ENDPOINT', required: true, help: 'host:port of the cleanup probe servers.' },
    { name: 'threshold', kind: 'int', env: 'THRESHOLD', default: String(defaultThreshold), help: 'Consecutive all-ready rounds needed.' },
    { name: 'period', kind: 'duration', env: 'PERIOD', default: formatDuration(defaultPeriodMs), help: 'Interval between rounds.' },
  ],
} as const satisfies CommandSpec

const doctor = {
  name: 'doctor',
  help: 'Check this node\'s containerd and mirror configuration; print each finding with its fix. Exit 1 if anything is found.',
  flags: [
    containerdSock,
    containerdNamespace,
    containerdContentPath,
    registryConfigPath,
    mirroredRegistries,
    { name: 'mirror-targets', kind: 'list', env: 'MIRROR_TARGETS', help: 'Mirror URLs as given to `configuration`; the first must be named in hosts.toml. Empty: any mirror host.' },
    { name: 'host-root', kind: 'string', env: 'HOST_ROOT', default: '', help: 'Where the node\'s root filesystem is mounted (e.g. /host in kubectl debug node/…); hosts.toml is read below it.' },
    { name: 'format', kind: 'string', default: 'text', choices: ['text', 'json'], help: 'Output format.' },
  ],
} as const satisfies CommandSpec

const version = {
  name: 'version',
  help: 'Print the version.',
  flags: [
    { name: 'format', kind: 'string', default: 'text', choices: ['text', 'json'], help: 'Output format.' },
  ],
} as const satisfies CommandSpec

export const commands = [configuration, registry, cleanup, cleanupWait, doctor, version] as const satisfies readonly CommandSpec[]

/** The typed configuration of a command: its own flags and the global ones. */
type CommandConfig<C extends CommandSpec> = ConfigOf<(typeof globalFlags)[number] | C['flags'][number]>

export type ConfigurationConfig = CommandConfig<typeof configuration>
export type RegistryConfig = CommandConfig<typeof registry>
export type CleanupConfig = CommandConfig<typeof cleanup>
export type CleanupWaitConfig = CommandConfig<typeof cleanupWait>
export type DoctorConfig = CommandConfig<typeof doctor>
export type VersionConfig = CommandConfig<typeof version>
