// A real Kubernetes cluster on this machine, for the chart test (test/k8s/chart.test.ts).
//
// The components are upstream's, built from their Go modules (.ci/setup.d/50-kubernetes.sh): kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kube-proxy in one binary (.tools/bin/kube, test/go/kubernetes),
// and CoreDNS (.tools/bin/coredns, test/go/coredns). etcd, runc, the CNI plugins and busybox come from Debian; containerd 2.x is the one the tests build.
//
//   host (this process's namespaces): etcd on loopback, the API server on the host end of the cluster bridge
//     (<subnet>.254), controller-manager and scheduler.
//   upstream namespace (<subnet>.100): the upstream registry (docker-registry) and CoreDNS, the cluster's DNS.
//   node i (<subnet>.i): a network namespace and a mount namespace of its own, in which run containerd (configured as
//     Talos configures it: version 3 importing /etc/cri/conf.d/*.part), the kubelet and kube-proxy (iptables). /run,
//     /var/lib, /var/log and /etc/cri are fresh tmpfs mounts there, so a hostPath such as /etc/cri/conf.d/hosts or
//     /run/containerd/containerd.sock is that node's own file, as on a real node. Pods get addresses from the CNI
//     bridge plugin in 10.214.<n>.<64·i>/26, with routes between the nodes.
//
// Pod Security Admission enforces baseline outside kube-system, as on Talos.
// Authentication is by static tokens (admin in system:masters; each kubelet as system:node:<name>; kube-proxy as
// system:kube-proxy); authorization is Node,RBAC, so the chart's ServiceAccount gets only what the chart grants.
// Teardown stops, by PID, what this file started and every process left in a node's mount namespace (containers and
// their shims), removes the kubelets' cgroups, the namespaces, the temporary directory and /etc/cri if it made it.
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readdir, readFile, readlink, rmdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePorts } from '../helpers/ports.ts'
import { createCluster, type NetnsCluster, type NetnsMember } from '../helpers/netns.ts'
import { run, startProcess, type ProcessHandle } from '../helpers/process.ts'
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts'
import { makeTempDir, type TempDir } from '../helpers/tmp.ts'
import { makeCertDir } from '../helpers/tls.ts'
import { MissingToolError, requireTool } from '../helpers/tools.ts'
import { waitFor } from '../helpers/wait.ts'

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
export const kubeBinary = join(repoRoot, '.tools/bin/kube')
export const corednsBinary = join(repoRoot, '.tools/bin/coredns')
export const kubectlBinary = join(repoRoot, '.tools/bin/kubectl')
export const helmBinary = join(repoRoot, '.tools/bin/helm')

export interface K8sNode {
  /** Node name, `node-<i>`. */
  readonly name: string
  readonly member: NetnsMember
  /** PID of the process holding the node's mount namespace; `/proc/<pid>/root` is the node's filesystem. */
  readonly holderPid: number
  /** A path on the node, as seen from the host (through /proc/<holder>/root). */
  path: (nodePath: string) => string
  /** Runs a command inside the node (its network and mount namespaces). */
  exec: (cmd: string, args: readonly string[], options?: { timeoutMs?: number, allowNonZero?: boolean }) => Promise<{ code: number, stdout: string, stderr: string }>
  /** The last lines of the node's containerd, kubelet and kube-proxy logs. */
  logs: () => Promise<string>
}

export interface K8sCluster {
  readonly net: NetnsCluster
  readonly nodes: readonly K8sNode[]
  /**
   * The upstream registry (`<subnet>.100:5000`), over HTTPS with a certificate of the test's own CA, which the nodes'
   * containerds trust only through the CA that hostsFiles names, as a Talos node trusts a private registry (its
   * `machine.registries.config.<host>.tls.ca`): not a system root.
   */
  readonly upstream: RegistryHandle
  /** KUBECONFIG for an admin (system:masters). */
  readonly kubeconfig: string
  /** Runs kubectl as admin; rejects on a non-zero exit. */
  kubectl: (args: readonly string[], options?: { input?: string, timeoutMs?: number, allowNonZero?: boolean }) => Promise<{ code: number, stdout: string, stderr: string }>
  /** Runs helm as admin; rejects on a non-zero exit. */
  helm: (args: readonly string[], options?: { timeoutMs?: number }) => Promise<{ code: number, stdout: string, stderr: string }>
  /** Logs of every component, for a failure message. */
  diagnostics: () => string
  stop: () => Promise<void>
}

export interface StartK8sClusterOptions {
  /** containerd 2.x binary for the nodes. */
  containerd: string
  /** The machine files of a Talos patch (path on the node, content), written before containerd starts. */
  machineFiles: ReadonlyArray<{ path: string, content: string }>
  /**
   * Files each node has in /etc/cri/conf.d/hosts before anything is installed (paths relative to it), given the
   * upstream registry's host:port and CA certificate (PEM): the upstream's own hosts.toml and CA, or nothing pulls.
   */
  hostsFiles: (upstream: { host: string, ca: string }) => Array<{ path: string, content: string }>
  /** The sandbox (pause) image reference: pushed by the caller to the upstream before the nodes start. */
  pauseImage: (upstream: string) => Promise<string>
  nodes?: number
}

/** Fails with how to install what is missing. */
export function requireK8sTools (): void {
  const built = 'bash .ci/setup.sh builds it (.ci/setup.d/50-kubernetes.sh)'
  for (const [path, hint] of [[kubeBinary, built], [corednsBinary, built], [kubectlBinary, 'bash .ci/setup.sh installs it (.ci/setup.d/10-helm.sh)'], [helmBinary, 'bash .ci/setup.sh installs it (.ci/setup.d/10-helm.sh)']] as const) {
    if (!existsSync(path)) throw new MissingToolError(`${path} is missing: ${hint}`)
  }
  const debian: Array<[string, string]> = [
    ['etcd', 'etcd-server'], ['runc', 'runc'], ['containerd-shim-runc-v2', 'containerd'], ['iptables', 'iptables'],
    ['conntrack', 'conntrack'], ['busybox', 'busybox-static'], ['nsenter', 'util-linux'], ['unshare', 'util-linux'], ['openssl', 'openssl'],
  ]
  for (const [tool, pkg] of debian) requireTool(tool, `apt-get install -y ${pkg}`)
  if (!existsSync('/usr/lib/cni/bridge')) throw new MissingToolError('the CNI plugins are not installed (/usr/lib/cni/bridge): apt-get install -y containernetworking-plugins')
}

const cniBinDir = '/usr/lib/cni'

export async function startK8sCluster (options: StartK8sClusterOptions): Promise<K8sCluster> {
  requireK8sTools()
  const count = options.nodes ?? 3
  const tmp: TempDir = await makeTempDir('spegel-k8s')
  const dir = tmp.path
  const processes: ProcessHandle[] = []
  const holders: ProcessHandle[] = []
  const cgroupRoots: string[] = []
  let madeEtcCri = false
  let net: NetnsCluster | undefined
  let upstream: RegistryHandle | undefined
  const nodes: K8sNode[] = []
  const logs = new Map<string, string>()

  const start = async (name: string, argv: readonly string[], env: Record<string, string> = {}): Promise<ProcessHandle> => {
    const logFile = join(dir, 'logs', `${name}.log`)
    logs.set(name, logFile)
    const [cmd, ...args] = argv as [string, ...string[]]
    const proc = await startProcess(cmd, args, { logFile, name, env, tailBytes: 16 * 1024 })
    processes.push(proc)
    return proc
  }

  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    // Everything this file started, newest first: kube-proxy and the kubelet before their node's containerd.
    for (const proc of [...processes].reverse()) {
      if (proc.exitStatus === undefined) await proc.stop('SIGTERM', 15_000).catch(() => {})
    }
    // What is left in a node's mount namespace (container processes, shims) was started by that node's containerd.
    // What is left was started by a node's containerd: its shims share the node's mount namespace; the containers
    // (each in a mount namespace of its own) are in the kubelet's cgroups.
    for (const holder of holders) await killMountNamespace(holder.pid)
    for (const root of cgroupRoots) await killCgroupTree(root)
    for (const holder of holders) await holder.stop('SIGKILL').catch(() => {})
    for (const root of cgroupRoots) await removeCgroupTree(root)
    await upstream?.stop().catch(() => {})
    await net?.destroy().catch(() => {})
    if (madeEtcCri) await rmdir('/etc/cri').catch(() => {})
    await tmp.cleanup()
  }

  const diagnostics = (): string => {
    const parts: string[] = []
    for (const [name, file] of logs) {
      let text = ''
      try { text = readFileSync(file, 'utf8') } catch {}
      parts.push(`--- ${name} (last lines)\n${text.split('\n').slice(-25).join('\n')}`)
    }
    return parts.join('\n')
  }

  try {
    await mkdir(join(dir, 'logs'))
    net = await createCluster({ nodes: count, prefix: 'k8s' })
    const hostIp = net.hostIp!
    const octet = net.subnet.split('.')[2]!
    const clusterCidr = `10.214.${octet}.0/24`
    const serviceCidr = `10.215.${octet}.0/24`
    const kubernetesServiceIp = `10.215.${octet}.1`
    const upstreamMember = net.upstream!
    const upstreamTls = join(dir, 'upstream-tls')
    await mkdir(upstreamTls)
    const upstreamCert = await makeCertDir(upstreamTls, { name: 'upstream registry', ips: [upstreamMember.ip], caKey: false })
    upstream = await startRegistry({ host: upstreamMember.ip, port: 5000, netns: upstreamMember.netns, tls: { cert: join(upstreamTls, 'tls.crt'), key: join(upstreamTls, 'tls.key') } })

    // ---- PKI and credentials
    const pki = join(dir, 'pki')
    await mkdir(pki)
    const openssl = async (...args: string[]): Promise<void> => { await run('openssl', args, { cwd: pki, timeoutMs: 60_000 }) }
    await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=spegel-k8s-test-ca', '-days', '2')
    await writeFile(join(pki, 'apiserver.ext'), `subjectAltName=IP:${hostIp},IP:${kubernetesServiceIp},IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n`)
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr', '-subj', '/CN=kube-apiserver')
    await openssl('x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'apiserver.crt', '-days', '2', '-extfile', 'apiserver.ext')
    await openssl('genrsa', '-out', 'sa.key', '2048')
    await openssl('rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub')
    const token = (): string => randomBytes(16).toString('hex')
    const identities: Array<{ file: string, token: string, user: string, groups: string }> = [
      { file: 'admin', token: token(), user: 'admin', groups: 'system:masters' },
      { file: 'controller-manager', token: token(), user: 'system:kube-controller-manager', groups: 'system:masters' },
      { file: 'scheduler', token: token(), user: 'system:kube-scheduler', groups: 'system:masters' },
      { file: 'coredns', token: token(), user: 'coredns', groups: 'system:masters' },
      { file: 'kube-proxy', token: token(), user: 'system:kube-proxy', groups: 'system:node-proxier' },
      ...Array.from({ length: count }, (_, i) => ({ file: `node-${i + 1}`, token: token(), user: `system:node:node-${i + 1}`, groups: 'system:nodes' })),
    ]
    await writeFile(join(pki, 'tokens.csv'), identities.map((id) => `${id.token},${id.user},${id.user},"${id.groups}"`).join('\n') + '\n', { mode: 0o600 })
    const server = `https://${hostIp}:6443`
    const kubeconfigOf = async (file: string, tok: string): Promise<string> => {
      const path = join(pki, `${file}.kubeconfig`)
      await writeFile(path, [
        'apiVersion: v1', 'kind: Config',
        'clusters:', '- name: test', '  cluster:', `    server: ${server}`, `    certificate-authority: ${join(pki, 'ca.crt')}`,
        'users:', '- name: user', '  user:', `    token: ${tok}`,
        'contexts:', '- name: test', '  context: {cluster: test, user: user}',
        'current-context: test', '',
      ].join('\n'), { mode: 0o600 })
      return path
    }
    const kubeconfigs = new Map<string, string>()
    for (const id of identities) kubeconfigs.set(id.file, await kubeconfigOf(id.file, id.token))
    const kubeconfig = kubeconfigs.get('admin')!

    // ---- control plane
    const [etcdClient, etcdPeer] = await freePorts(2) as [number, number]
    await start('etcd', ['etcd', '--name=test', `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`, `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=test=http://127.0.0.1:${etcdPeer}`, '--log-level=warn'])
    // Pod Security Admission as Talos configures it: baseline enforced everywhere but kube-system, so a namespace
    // that runs hostPath pods must say it is privileged (talos-patches/namespace.yaml).
    const admission = join(pki, 'admission.yaml')
    await writeFile(admission, JSON.stringify({
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'AdmissionConfiguration',
      plugins: [{
        name: 'PodSecurity',
        configuration: {
          apiVersion: 'pod-security.admission.config.k8s.io/v1',
          kind: 'PodSecurityConfiguration',
          defaults: { enforce: 'baseline', 'enforce-version': 'latest', audit: 'restricted', 'audit-version': 'latest', warn: 'restricted', 'warn-version': 'latest' },
          exemptions: { usernames: [], runtimeClasses: [], namespaces: ['kube-system'] },
        },
      }],
    }, null, 2))
    await start('kube-apiserver', [kubeBinary, 'kube-apiserver',
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      `--bind-address=${hostIp}`, `--advertise-address=${hostIp}`, '--secure-port=6443',
      `--tls-cert-file=${join(pki, 'apiserver.crt')}`, `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`, `--token-auth-file=${join(pki, 'tokens.csv')}`,
      '--authorization-mode=Node,RBAC', '--enable-admission-plugins=NodeRestriction', '--allow-privileged=true',
      `--admission-control-config-file=${admission}`,
      `--service-cluster-ip-range=${serviceCidr}`, '--service-node-port-range=30000-32767',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, 'sa.pub')}`, `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      // Node names do not resolve here: the API server reaches kubelets (logs, exec) by their InternalIP.
      '--kubelet-preferred-address-types=InternalIP', '--profiling=false', '--v=1'])
    const kubectl: K8sCluster['kubectl'] = async (args, opts = {}) => await run(kubectlBinary, ['--kubeconfig', kubeconfig, ...args], {
      timeoutMs: opts.timeoutMs ?? 120_000, ...(opts.input !== undefined ? { input: opts.input } : {}), ...(opts.allowNonZero === true ? { allowNonZero: true } : {}),
    })
    await waitFor(async () => (await kubectl(['get', '--raw', '/readyz'], { allowNonZero: true, timeoutMs: 10_000 })).stdout.trim() === 'ok',
      { timeoutMs: 90_000, intervalMs: 500, what: 'the API server to be ready', context: diagnostics })
    await start('kube-controller-manager', [kubeBinary, 'kube-controller-manager',
      `--kubeconfig=${kubeconfigs.get('controller-manager')!}`, '--leader-elect=false', '--bind-address=127.0.0.1', '--secure-port=0',
      `--service-account-private-key-file=${join(pki, 'sa.key')}`, `--root-ca-file=${join(pki, 'ca.crt')}`,
      '--use-service-account-credentials=true', `--service-cluster-ip-range=${serviceCidr}`, '--v=1'])
    await start('kube-scheduler', [kubeBinary, 'kube-scheduler',
      `--kubeconfig=${kubeconfigs.get('scheduler')!}`, '--leader-elect=false', '--bind-address=127.0.0.1', '--secure-port=0', '--v=1'])

    // ---- DNS: CoreDNS in the upstream namespace, answering for cluster.local from the API.
    const corefile = join(dir, 'Corefile')
    await writeFile(corefile, [
      '.:53 {',
      '    errors',
      '    kubernetes cluster.local in-addr.arpa ip6.arpa {',
      `        kubeconfig ${kubeconfigs.get('coredns')!} test`,
      '        pods insecure',
      '        fallthrough in-addr.arpa ip6.arpa',
      '    }',
      '    cache 5',
      '}', '',
    ].join('\n'))
    await start('coredns', ['ip', 'netns', 'exec', upstreamMember.netns, corednsBinary, '-conf', corefile, '-dns.port', '53'])
    const dnsIp = upstreamMember.ip

    // ---- nodes
    const pause = await options.pauseImage(upstream.host)
    if (!existsSync('/etc/cri')) {
      await mkdir('/etc/cri')
      madeEtcCri = true
    }
    const runId = net.id
    for (let i = 1; i <= count; i++) {
      const member = net.nodes[i - 1]!
      const name = `node-${i}`
      const nodeDir = join(dir, name)
      await mkdir(nodeDir)
      // The node's mount namespace: fresh tmpfs mounts over the node-local trees, held open by a sleeping shell.
      const setup = [
        'set -e',
        'for d in /run /var/lib /var/log /etc/cri; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done',
        'mkdir -p /run/containerd /var/lib/containerd /var/lib/kubelet /var/log/pods /etc/cri/conf.d/hosts',
        'echo ready',
        'exec sleep 2147483647',
      ].join('\n')
      const holder = await startProcess('nsenter', [`--net=/run/netns/${member.netns}`, '--', 'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', setup], { name: `${name}-holder` })
      holders.push(holder)
      await holder.waitForOutput('ready', { timeoutMs: 10_000 })
      const root = `/proc/${holder.pid}/root`
      const onNode = (p: string): string => join(root, p)
      const inNode = ['nsenter', `--target=${holder.pid}`, '--mount', '--net', '--']

      // Pod network: this node's /26 on a CNI bridge; routes to the others' through their node addresses.
      const podCidr = (n: number): string => `10.214.${octet}.${64 * n}/26`
      const cniDir = join(nodeDir, 'cni')
      await mkdir(cniDir)
      await writeFile(join(cniDir, '10-bridge.conflist'), JSON.stringify({
        cniVersion: '1.0.0',
        name: 'pods',
        plugins: [
          { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: 'host-local', ranges: [[{ subnet: podCidr(i) }]], routes: [{ dst: '0.0.0.0/0' }] } },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      }, null, 2))
      await run('ip', ['netns', 'exec', member.netns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'])
      for (let j = 1; j <= count; j++) {
        if (j !== i) await run('ip', ['-n', member.netns, 'route', 'add', podCidr(j), 'via', net.nodes[j - 1]!.ip])
      }
      // A route for Service addresses, as a node's default route gives them: a client on the node's own network
      // (e.g. a Prometheus scraping with hostNetwork) is routed before kube-proxy's rules rewrite the address.
      await run('ip', ['-n', member.netns, 'route', 'add', serviceCidr, 'via', hostIp])

      // containerd as Talos runs it: version 3 importing the parts in /etc/cri/conf.d, the first being Talos's base.
      const base = [
        '[plugins."io.containerd.cri.v1.images"]',
        '  discard_unpacked_layers = true',
        '[plugins."io.containerd.cri.v1.images".registry]',
        '  config_path = "/etc/cri/conf.d/hosts"',
        '[plugins."io.containerd.cri.v1.images".pinned_images]',
        `  sandbox = ${JSON.stringify(pause)}`,
        '[plugins."io.containerd.cri.v1.runtime"]',
        // This machine lacks CAP_SYS_RESOURCE: without it runc cannot set the pods' oom_score_adj.
        '  restrict_oom_score_adj = true',
        '[plugins."io.containerd.cri.v1.runtime".cni]',
        `  bin_dir = ${JSON.stringify(cniBinDir)}`,
        `  conf_dir = ${JSON.stringify(cniDir)}`,
        '',
      ].join('\n')
      await writeFile(onNode('/etc/cri/conf.d/00-base.part'), base)
      for (const file of options.machineFiles) {
        if (!file.path.startsWith('/etc/cri/conf.d/')) throw new Error(`machine file ${file.path} is outside /etc/cri/conf.d`)
        await writeFile(onNode(file.path), file.content)
      }
      for (const file of options.hostsFiles({ host: upstream.host, ca: upstreamCert.ca.toString() })) {
        const path = onNode(join('/etc/cri/conf.d/hosts', file.path))
        await mkdir(dirname(path), { recursive: true })
        await writeFile(path, file.content)
      }
      const parts = (await readdir(onNode('/etc/cri/conf.d'))).filter((n) => n.endsWith('.part')).sort().map((n) => `/etc/cri/conf.d/${n}`)
      const containerdConfig = join(nodeDir, 'containerd.toml')
      await writeFile(containerdConfig, [
        'version = 3',
        `imports = ${JSON.stringify(parts)}`,
        '[plugins."io.containerd.nri.v1.nri"]',
        '  disable = true',
        '',
      ].join('\n'))
      await start(`${name}-containerd`, [...inNode, options.containerd, '--config', containerdConfig])
      const containerdSocket = onNode('/run/containerd/containerd.sock')
      await waitFor(() => existsSync(containerdSocket), { timeoutMs: 30_000, what: `${name}'s containerd socket`, context: diagnostics })

      // The kubelet's cgroupRoot must exist in every hierarchy (cgroup v1) before it starts.
      const cgroupRoot = `/${runId}-${name}`
      cgroupRoots.push(cgroupRoot)
      await makeCgroupRoot(cgroupRoot)
      const kubeletConfig = join(nodeDir, 'kubelet.yaml')
      await writeFile(kubeletConfig, JSON.stringify({
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        address: member.ip,
        port: 10250,
        readOnlyPort: 0,
        healthzBindAddress: '127.0.0.1',
        healthzPort: 10248,
        authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
        authorization: { mode: 'AlwaysAllow' },
        cgroupDriver: 'cgroupfs',
        cgroupRoot,
        containerRuntimeEndpoint: 'unix:///run/containerd/containerd.sock',
        clusterDNS: [dnsIp],
        clusterDomain: 'cluster.local',
        resolvConf: '',
        failSwapOn: false,
        serializeImagePulls: false,
        evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
        imageGCHighThresholdPercent: 99,
        imageGCLowThresholdPercent: 98,
        maxPods: 30,
      }, null, 2))
      await start(`${name}-kubelet`, [...inNode, kubeBinary, 'kubelet',
        `--config=${kubeletConfig}`, `--kubeconfig=${kubeconfigs.get(name)!}`,
        `--hostname-override=${name}`, `--node-ip=${member.ip}`, '--v=1'])
      const proxyConfig = join(nodeDir, 'kube-proxy.yaml')
      await writeFile(proxyConfig, JSON.stringify({
        apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
        kind: 'KubeProxyConfiguration',
        clientConnection: { kubeconfig: kubeconfigs.get('kube-proxy')! },
        hostnameOverride: name,
        bindAddress: member.ip,
        healthzBindAddress: `${member.ip}:10256`,
        metricsBindAddress: '127.0.0.1:10249',
        mode: 'iptables',
        clusterCIDR: clusterCidr,
        // nf_conntrack_max is not per network namespace: leave the host's alone.
        conntrack: { maxPerCore: 0, min: 0 },
      }, null, 2))
      await start(`${name}-kube-proxy`, [...inNode, kubeBinary, 'kube-proxy', `--config=${proxyConfig}`, '--v=1'])

      const logNames = [`${name}-containerd`, `${name}-kubelet`, `${name}-kube-proxy`]
      nodes.push({
        name,
        member,
        holderPid: holder.pid,
        path: onNode,
        exec: async (cmd, args, opts = {}) => await run(inNode[0]!, [...inNode.slice(1), cmd, ...args], { timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.allowNonZero === true ? { allowNonZero: true } : {}) }),
        logs: async () => {
          const parts: string[] = []
          for (const n of logNames) parts.push(`--- ${n}\n${(await readFile(logs.get(n)!, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n')}`)
          return parts.join('\n')
        },
      })
    }
    await waitFor(async () => {
      const out = await kubectl(['get', 'nodes', '-o', 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'], { allowNonZero: true })
      const ready = out.stdout.split('\n').filter((l) => l.endsWith('=True')).length
      return ready === count
    }, { timeoutMs: 120_000, intervalMs: 1000, what: `${count} nodes to be Ready`, context: diagnostics })

    const helm: K8sCluster['helm'] = async (args, opts = {}) => await run(helmBinary, args, {
      env: { KUBECONFIG: kubeconfig, HELM_CACHE_HOME: join(dir, 'helm/cache'), HELM_CONFIG_HOME: join(dir, 'helm/config'), HELM_DATA_HOME: join(dir, 'helm/data') },
      timeoutMs: opts.timeoutMs ?? 300_000,
    })
    return { net, nodes, upstream, kubeconfig, kubectl, helm, diagnostics, stop }
  } catch (err) {
    const context = diagnostics()
    await stop()
    if (err instanceof MissingToolError) throw err
    throw new Error(`cannot start the Kubernetes cluster: ${err instanceof Error ? err.message : String(err)}\n${context}`, { cause: err })
  }
}

/** SIGKILLs every process in the mount namespace of `pid` except `pid` itself, and waits until they are gone. */
async function killMountNamespace (pid: number): Promise<void> {
  let ns: string
  try {
    ns = await readlink(`/proc/${pid}/ns/mnt`)
  } catch {
    return
  }
  const members = async (): Promise<number[]> => {
    const found: number[] = []
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === pid) continue
      try {
        if (await readlink(`/proc/${entry}/ns/mnt`) === ns) found.push(Number(entry))
      } catch {}
    }
    return found
  }
  for (let round = 0; round < 50; round++) {
    const left = await members()
    if (left.length === 0) return
    for (const p of left) { try { process.kill(p, 'SIGKILL') } catch {} }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function cgroupHierarchies (): Promise<string[]> {
  const base = '/sys/fs/cgroup'
  const entries = await readdir(base, { withFileTypes: true }).catch(() => [])
  // Real directories only: cpu and cpuacct are links to cpu,cpuacct.
  return entries.filter((e) => e.isDirectory()).map((e) => join(base, e.name))
}

async function makeCgroupRoot (cgroupRoot: string): Promise<void> {
  for (const hierarchy of await cgroupHierarchies()) {
    await mkdir(join(hierarchy, cgroupRoot), { recursive: true })
    if (hierarchy.endsWith('/cpuset')) {
      // A new cpuset has no CPUs and no memory nodes: give it its parent's, or no task can join below it.
      for (const file of ['cpuset.cpus', 'cpuset.mems']) await writeFile(join(hierarchy, cgroupRoot, file), await readFile(join(hierarchy, file)))
    }
  }
}

/** SIGKILLs every process in a kubelet's cgroup tree (any hierarchy holds them all: pids), until none is left. */
async function killCgroupTree (cgroupRoot: string): Promise<void> {
  const top = join('/sys/fs/cgroup/pids', cgroupRoot)
  for (let round = 0; round < 50; round++) {
    const pids: number[] = []
    const walk = async (d: string): Promise<void> => {
      const procs = await readFile(join(d, 'cgroup.procs'), 'utf8').catch(() => '')
      for (const p of procs.split('\n')) if (p !== '') pids.push(Number(p))
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await walk(join(d, e.name))
    }
    await walk(top)
    if (pids.length === 0) return
    for (const p of pids) { try { process.kill(p, 'SIGKILL') } catch {} }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Removes a kubelet's cgroup tree (cgroupRoot) from every v1 hierarchy, deepest first. */
async function removeCgroupTree (cgroupRoot: string): Promise<void> {
  for (const hierarchy of await cgroupHierarchies()) {
    const top = join(hierarchy, cgroupRoot)
    if (!existsSync(top)) continue
    const dirs: string[] = []
    const walk = async (d: string): Promise<void> => {
      dirs.push(d)
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await walk(join(d, e.name))
    }
    await walk(top)
    for (const d of dirs.reverse()) await rmdir(d).catch(() => {})
  }
}
