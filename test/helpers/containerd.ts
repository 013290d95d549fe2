// Starts a real containerd in a private temporary directory for integration tests, and builds small OCI archives that
// `ctr images import` loads without any network.
import { execFile, execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { access, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { waitFor } from './wait.ts'

export interface StartContainerdOptions {
  /** Hosts directory (`config_path` of the CRI registry config). Default: `<dir>/certs.d`, created. */
  configPath?: string
  /** Leave the CRI registry `config_path` unset (containerd then ignores every hosts.toml); configPath is still created. */
  omitConfigPath?: boolean
  /** Extra TOML appended to the generated config. */
  extraConfig?: string
  /** How long to wait for the socket to answer (default 30 s). */
  startTimeoutMs?: number
  /**
   * Command prefix, e.g. `['ip', 'netns', 'exec', 'node1']` to run the daemon in a network namespace (`ip netns exec`
   * execs in place, so the PID stays the daemon's). Note that such a daemon's overlay mounts live in a private mount
   * namespace; import with --no-unpack or expect unpacking to be invisible to the host.
   */
  prefix?: string[]
  /** The containerd binary (default testContainerd()'s: SPEGEL_TEST_CONTAINERD picks it). */
  binary?: string
  /**
   * Configure containerd as Talos does (containerd 2.x only): config version 3 whose `imports` are Talos's own base
   * part (`discard_unpacked_layers = true` and `config_path` under `io.containerd.cri.v1.images`) and then, in name
   * order, every `/etc/cri/conf.d/*.part` among `files`: the machine files of a Talos machine config (`machine.files`:
   * path and content), written under the instance's directory (`talosRoot`). Files elsewhere are written but not
   * imported, as on Talos. `omitConfigPath` and `extraConfig` do not apply.
   */
  talos?: { files: ReadonlyArray<{ path: string, content: string }> }
}

export interface ContainerdInstance {
  /** The private temporary directory holding everything below. */
  dir: string
  /** gRPC unix socket path. */
  socket: string
  root: string
  /** `<root>/io.containerd.content.v1.content`. */
  contentPath: string
  /** Hosts directory given to the CRI plugin (`config_path`). */
  configPath: string
  /** With the `talos` option: the directory standing for the node's root, where the machine files are. */
  talosRoot?: string
  namespace: string
  /** PID of the running daemon, undefined while stopped. */
  readonly pid: number | undefined
  /** Runs `ctr --address <socket> -n k8s.io ARGS`. Rejects with stderr on a non-zero exit. */
  ctr: (args: string[]) => Promise<string>
  /** Stops the daemon (SIGTERM, then SIGKILL) and starts it again on the same directories and socket. */
  restart: () => Promise<void>
  /** Stops the daemon, keeping its directories, until up() is called. */
  down: () => Promise<void>
  /** Starts a daemon stopped by down() again. */
  up: () => Promise<void>
  /** Stops the daemon and removes the temporary directory. Idempotent. */
  stop: () => Promise<void>
  /** The daemon's log so far, for failure messages. */
  log: () => string
  [Symbol.asyncDispose]: () => Promise<void>
}

const namespace = 'k8s.io'

/**
 * The containerds the tests run on, by the name `SPEGEL_TEST_CONTAINERD` takes: Debian's 1.6 (on PATH), and the 2.x
 * versions that .ci/setup.d/40-containerd2.sh builds from their Go modules into .tools/bin (each `test/go/containerd2*`
 * module pins one: 2.1, what current Talos releases ship, and the newest 2.x the module proxy serves).
 */
export interface TestContainerd {
  /** `1.6`, `2.1`, `2.4`: what SPEGEL_TEST_CONTAINERD names. */
  name: string
  /** The full version (`1.6.x` as Debian has it: the binary says). */
  version: string
  /** The binary: a path, or `containerd` on PATH. */
  binary: string
  /** 1 or 2: the config format and the events differ. */
  major: number
}

const toolsBin = fileURLToPath(new URL('../../.tools/bin/', import.meta.url))
const goModules = fileURLToPath(new URL('../go/', import.meta.url))

/** Every containerd the tests know, oldest first. */
export function knownContainerds (): TestContainerd[] {
  const built = readdirSync(goModules).filter((d) => d.startsWith('containerd2')).map((d) => {
    const mod = readFileSync(join(goModules, d, 'go.mod'), 'utf8')
    const version = /^require github\.com\/containerd\/containerd\/v2 v(\S+)$/m.exec(mod)?.[1]
    if (version === undefined) throw new Error(`test/go/${d}/go.mod pins no github.com/containerd/containerd/v2 version`)
    return { name: version.split('.').slice(0, 2).join('.'), version, binary: join(toolsBin, `containerd-${version}`), major: 2 }
  })
  return [{ name: '1.6', version: debianVersion(), binary: 'containerd', major: 1 }, ...built.sort((a, b) => a.version.localeCompare(b.version, 'en', { numeric: true }))]
}

let debian: string | undefined
/** What Debian's containerd says it is (`containerd github.com/containerd/containerd 1.6.20~ds1 …` → 1.6.20). */
function debianVersion (): string {
  if (debian !== undefined) return debian
  try {
    const out = execFileSync('containerd', ['--version'], { encoding: 'utf8', timeout: 10_000 })
    debian = /\s(1\.\d+\.\d+)/.exec(out)?.[1] ?? '1.6'
  } catch {
    debian = '1.6 (not installed: apt-get install -y containerd)'
  }
  return debian
}

/** The default when SPEGEL_TEST_CONTAINERD is unset: what current Talos releases ship. */
export const defaultTestContainerd = '2.1'

/** The containerd this test run uses: SPEGEL_TEST_CONTAINERD (1.6, 2.1, 2.4), else defaultTestContainerd. */
export function testContainerd (): TestContainerd {
  const wanted = process.env.SPEGEL_TEST_CONTAINERD ?? defaultTestContainerd
  const known = knownContainerds()
  const found = known.find((c) => c.name === wanted)
  if (found === undefined) throw new Error(`SPEGEL_TEST_CONTAINERD=${wanted}: not one of ${known.map((c) => c.name).join(', ')}`)
  return found
}

export async function startContainerd (options: StartContainerdOptions = {}): Promise<ContainerdInstance> {
  const binary = options.binary ?? testContainerd().binary
  await ensureInstalled(binary)
  // Short prefix: the socket path must fit in sun_path (108 bytes).
  const dir = await mkdtemp(join(tmpdir(), 'spegel-ctrd-'))
  const root = join(dir, 'root')
  const state = join(dir, 'state')
  const socket = join(dir, 'containerd.sock')
  const configPath = options.configPath ?? join(dir, 'certs.d')
  const logPath = join(dir, 'containerd.log')
  await mkdir(configPath, { recursive: true })
  const config = [
    'version = 2',
    `root = ${JSON.stringify(root)}`,
    `state = ${JSON.stringify(state)}`,
    '[grpc]',
    `  address = ${JSON.stringify(socket)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(socket + '.ttrpc')}`,
    '[metrics]',
    '  address = ""',
    // The default /opt/containerd is shared with the host's daemon.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(join(dir, 'opt'))}`,
    // containerd 2.x's NRI plugin listens on the host-wide /var/run/nri/nri.sock: two test daemons starting at once
    // race for it and one exits ("address already in use"). The tests need no NRI. (1.6 has no such plugin and
    // ignores the table.)
    '[plugins."io.containerd.nri.v1.nri"]',
    '  disable = true',
    ...(options.omitConfigPath === true ? [] : ['[plugins."io.containerd.grpc.v1.cri".registry]', `  config_path = ${JSON.stringify(configPath)}`]),
    options.extraConfig ?? '',
  ].join('\n') + '\n'
  const configFile = join(dir, 'config.toml')
  const talosRoot = options.talos !== undefined ? join(dir, 'talos') : undefined
  await writeFile(configFile, options.talos !== undefined ? await talosConfig(talosRoot!, { root, state, socket, configPath }, options.talos.files) : config)

  let child: ChildProcess | undefined
  let stopped = false
  // A crashed test run must not leave a daemon behind.
  const onExit = (): void => { if (child?.pid !== undefined && child.exitCode === null) child.kill('SIGKILL') }
  process.on('exit', onExit)

  const start = async (): Promise<void> => {
    const logFd = openSync(logPath, 'a')
    try {
      const argv = [...(options.prefix ?? []), binary, '--config', configFile]
      child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', logFd, logFd] })
    } finally {
      closeSync(logFd)
    }
    const proc = child
    // An early exit ends the wait at once, with the log.
    const exited = new AbortController()
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      exited.abort(new Error(`containerd exited early (code ${code}, signal ${signal}):\n${tail(logPath)}`))
    }
    const onError = (err: Error): void => { exited.abort(err) }
    proc.once('exit', onExit)
    proc.once('error', onError)
    try {
      await waitFor(async () => await socketAnswers(socket), {
        timeoutMs: options.startTimeoutMs ?? 30_000, what: `containerd to open ${socket}`, context: () => tail(logPath), signal: exited.signal,
      })
    } catch (err) {
      await kill(proc)
      throw err
    } finally {
      proc.off('exit', onExit)
      proc.off('error', onError)
    }
  }

  const stopDaemon = async (): Promise<void> => {
    const proc = child
    child = undefined
    if (proc !== undefined) await kill(proc)
  }

  const instance: ContainerdInstance = {
    dir,
    socket,
    root,
    contentPath: join(root, 'io.containerd.content.v1.content'),
    configPath,
    ...(talosRoot !== undefined ? { talosRoot } : {}),
    namespace,
    get pid () { return child?.pid },
    ctr: async (args) => await run('ctr', ['--address', socket, '-n', namespace, ...args]),
    restart: async () => {
      await stopDaemon()
      await start()
    },
    down: stopDaemon,
    up: async () => {
      if (child !== undefined) throw new Error('containerd is already running')
      await start()
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      await stopDaemon()
      process.off('exit', onExit)
      await unmountUnder(dir)
      await rm(dir, { recursive: true, force: true, maxRetries: 3 })
    },
    log: () => tail(logPath, 200),
    [Symbol.asyncDispose]: async () => { await instance.stop() },
  }
  try {
    await start()
  } catch (err) {
    await instance.stop()
    throw err
  }
  return instance
}

/** Talos's base part: what it sets for every node before the machine config's own parts. */
export function talosBasePart (configPath: string): string {
  return [
    '[plugins."io.containerd.cri.v1.images"]',
    '  discard_unpacked_layers = true',
    '[plugins."io.containerd.cri.v1.images".registry]',
    `  config_path = ${JSON.stringify(configPath)}`,
  ].join('\n') + '\n'
}

/** Writes the machine files and the base part under `talosRoot` and returns the version 3 config importing the parts. */
async function talosConfig (talosRoot: string, at: { root: string, state: string, socket: string, configPath: string }, files: ReadonlyArray<{ path: string, content: string }>): Promise<string> {
  const partsDir = join(talosRoot, 'etc/cri/conf.d')
  await mkdir(partsDir, { recursive: true })
  await writeFile(join(partsDir, '00-base.part'), talosBasePart(at.configPath))
  for (const file of files) {
    if (!file.path.startsWith('/')) throw new Error(`machine file path ${file.path} is not absolute`)
    const path = join(talosRoot, file.path)
    await mkdir(dirname(path), { recursive: true })
    await writeFile(path, file.content)
  }
  const parts = (await readdir(partsDir)).filter((n) => n.endsWith('.part')).sort().map((n) => join(partsDir, n))
  return [
    'version = 3',
    `root = ${JSON.stringify(at.root)}`,
    `state = ${JSON.stringify(at.state)}`,
    `imports = ${JSON.stringify(parts)}`,
    '[grpc]',
    `  address = ${JSON.stringify(at.socket)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(at.socket + '.ttrpc')}`,
    '[metrics]',
    '  address = ""',
    '[plugins."io.containerd.nri.v1.nri"]',
    '  disable = true',
  ].join('\n') + '\n'
}

async function ensureInstalled (binary: string): Promise<void> {
  if (binary.includes('/')) await access(binary).catch(() => { throw new Error(`${binary} is missing: bash .ci/setup.sh builds it`) })
  for (const bin of ['containerd', 'ctr']) {
    const found = await Promise.any((process.env.PATH ?? '').split(':').filter(Boolean).map(async (p) => {
      await access(join(p, bin))
      return true
    })).catch(() => false)
    if (!found) throw new Error('containerd is not installed: apt-get install -y containerd')
  }
}

async function socketAnswers (path: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const sock = connect(path)
    sock.once('connect', () => { sock.destroy(); resolve(true) })
    sock.once('error', () => { resolve(false) })
  })
}

async function kill (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise<void>((resolve) => proc.once('exit', () => { resolve() }))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/** Overlay mounts left by unpacking would make the temporary directory unremovable. */
async function unmountUnder (dir: string): Promise<void> {
  let mounts: string
  try {
    mounts = await readFile('/proc/self/mountinfo', 'utf8')
  } catch {
    return
  }
  const points = mounts.split('\n').map((line) => line.split(' ')[4] ?? '').filter((p) => p.startsWith(dir + '/'))
  for (const point of points.sort().reverse()) {
    await run('umount', ['-l', point]).catch(() => {})
  }
}

async function run (cmd: string, args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`))
        return
      }
      resolve(stdout)
    })
  })
}

function tail (path: string, lines = 40): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

// ---- OCI archives ----

/** One blob of a test image. */
export interface TestBlob {
  mediaType: string
  digest: string
  size: number
  bytes: Buffer
}

/** An image (manifest or index) ready to be written into an OCI archive. */
export interface TestImage {
  /** Full name containerd gives the image, e.g. `example.com/test/app:v1`. */
  name: string
  /** The image's top descriptor (what the name points at). */
  top: TestBlob
  /** Every blob of the image, top first. */
  blobs: TestBlob[]
}

export function blob (mediaType: string, bytes: Buffer | string): TestBlob {
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
  return { mediaType, digest: 'sha256:' + createHash('sha256').update(data).digest('hex'), size: data.byteLength, bytes: data }
}

function descriptorOf (b: TestBlob, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size, ...extra }
}

export interface ManifestOptions {
  /** Sizes of the layers' single file (random bytes), one layer each. */
  layerSizes: number[]
  architecture?: string
  docker?: boolean
}

/** Builds a manifest with a config and gzip'd tar layers of random content. */
export function makeManifest (options: ManifestOptions): { manifest: TestBlob, blobs: TestBlob[] } {
  const docker = options.docker === true
  const layers = options.layerSizes.map((size, i) => {
    const tarball = tar([{ name: `file-${i}`, data: randomBytes(size) }])
    return { diffId: 'sha256:' + createHash('sha256').update(tarball).digest('hex'), blob: blob(docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(tarball, { level: 1 })) }
  })
  const config = blob(docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json', JSON.stringify({
    architecture: options.architecture ?? 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  }))
  const manifest = blob(docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json', JSON.stringify({
    schemaVersion: 2,
    mediaType: docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json',
    config: descriptorOf(config),
    layers: layers.map((l) => descriptorOf(l.blob)),
  }))
  return { manifest, blobs: [manifest, config, ...layers.map((l) => l.blob)] }
}

/** An image whose name points at a single manifest. */
export function makeImage (name: string, options: ManifestOptions): TestImage {
  const { manifest, blobs } = makeManifest(options)
  return { name, top: manifest, blobs }
}

/** An image whose name points at an index of one manifest per architecture. */
export function makeIndexImage (name: string, architectures: string[], options: Omit<ManifestOptions, 'architecture'>): TestImage {
  const docker = options.docker === true
  const children = architectures.map((architecture) => ({ architecture, ...makeManifest({ ...options, architecture }) }))
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.list.v2+json' : 'application/vnd.oci.image.index.v1+json'
  const index = blob(mediaType, JSON.stringify({
    schemaVersion: 2,
    mediaType,
    manifests: children.map((c) => descriptorOf(c.manifest, { platform: { architecture: c.architecture, os: 'linux' } })),
  }))
  return { name, top: index, blobs: [index, ...children.flatMap((c) => c.blobs)] }
}

/** Writes an OCI image layout tarball holding the images, named with `io.containerd.image.name`. */
export async function writeOciArchive (path: string, images: TestImage[]): Promise<void> {
  const seen = new Set<string>()
  const entries: TarEntry[] = [{ name: 'oci-layout', data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) }]
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: images.map((image) => descriptorOf(image.top, {
      annotations: {
        'io.containerd.image.name': image.name,
        'org.opencontainers.image.ref.name': image.name.slice(image.name.lastIndexOf(':') + 1),
      },
    })),
  }
  entries.push({ name: 'index.json', data: Buffer.from(JSON.stringify(index)) })
  entries.push({ name: 'blobs/', data: Buffer.alloc(0), dir: true }, { name: 'blobs/sha256/', data: Buffer.alloc(0), dir: true })
  for (const image of images) {
    for (const b of image.blobs) {
      if (seen.has(b.digest)) continue
      seen.add(b.digest)
      entries.push({ name: `blobs/sha256/${b.digest.slice('sha256:'.length)}`, data: b.bytes })
    }
  }
  await writeFile(path, tar(entries))
}

interface TarEntry {
  name: string
  data: Buffer
  dir?: boolean
}

/** A minimal ustar writer: enough for OCI layouts and test layers (names < 100 bytes). */
export function tar (entries: TarEntry[]): Buffer {
  const parts: Buffer[] = []
  for (const entry of entries) {
    if (Buffer.byteLength(entry.name) >= 100) throw new Error(`tar name too long: ${entry.name}`)
    const header = Buffer.alloc(512)
    header.write(entry.name, 0, 'utf8')
    header.write(octal(entry.dir === true ? 0o755 : 0o644, 8), 100)
    header.write(octal(0, 8), 108)
    header.write(octal(0, 8), 116)
    header.write(octal(entry.data.byteLength, 12), 124)
    header.write(octal(0, 12), 136)
    header.fill(' ', 148, 156)
    header.write(entry.dir === true ? '5' : '0', 156)
    header.write('ustar\u000000', 257, 'binary')
    let sum = 0
    for (const byte of header) sum += byte
    header.write(sum.toString(8).padStart(6, '0') + '\u0000 ', 148, 'binary')
    parts.push(header, entry.data)
    const pad = (512 - (entry.data.byteLength % 512)) % 512
    if (pad > 0) parts.push(Buffer.alloc(pad))
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

function octal (value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\u0000'
}
