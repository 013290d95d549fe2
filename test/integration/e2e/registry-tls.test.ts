// Issue 18: "only members read". Two network-namespace nodes with real containerd, every daemon and `spegel
// configuration` given the same --registry-cert-dir (a CA made with openssl and a certificate it signed). containerd
// reaches its mirror over https:// with the CA and the client certificate that `configuration` copied next to
// hosts.toml, and checks the mirror's certificate names its IP; the daemons ask each other over TLS with the same
// client certificate. A client without a certificate, or with one of another CA, reads nothing; the kubelet's probes
// (no certificate) still get /readyz. Twice: as the chart does it (ca.key in the directory, a tls.crt that names no
// node: each daemon issues its own serving certificate), and with a tls.crt that names every node's IP and no ca.key.
import assert from 'node:assert/strict'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { criPull } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { metricSum } from '../../helpers/metrics.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'
import { httpsStatus, makeCertDir, type TestCertDir } from '../../helpers/tls.ts'

const MiB = 1024 * 1024

for (const mode of ['ca.key: each node issues its serving certificate', 'tls.crt names every node', 'ca.key, and --peer-redirect'] as const) {
  describe(`the registry port with mutual TLS (--registry-cert-dir; ${mode})`, { timeout: 300_000 }, () => {
    const issued = mode.startsWith('ca.key')
    // containerd follows the redirect to node 1 with the client certificate and CA of its mirror's hosts.toml entry.
    const redirect = mode.endsWith('--peer-redirect')
    let cluster: SpegelCluster
    let tmp: TempDir
    let members: TestCertDir
    let outsider: TestCertDir
    let image: PushedImage
    before(async () => {
      requireNetnsSupport()
      tmp = await makeTempDir('spegel-tls')
      cluster = await startSpegelCluster({
        nodes: 2,
        prefix: 'spgtls',
        ...(redirect ? { daemonArgs: ['--peer-redirect=true'] } : {}),
        registryTls: async (ips) => { members = await makeCertDir(tmp.path, { name: 'spegel', ips: issued ? [] : ips, caKey: issued }); return members },
      })
      await mkdir(join(tmp.path, 'outsider'))
      outsider = await makeCertDir(join(tmp.path, 'outsider'), { name: 'outsider', ips: cluster.nodes.map((n) => n.ip) })
      const built = await buildImage({ layers: [{ sizeBytes: 2 * MiB }, { sizeBytes: 1 * MiB }], tag: 'v1' })
      try {
        image = await pushLayout(built, cluster.upstreamHost, 'tls/app', 'v1')
      } finally {
        await built.cleanup()
      }
    })
    after(async () => {
      await cluster?.stop()
      await tmp?.cleanup()
    })

    it('containerd pulls through its mirror over TLS, and node 2 gets every blob from node 1 over TLS', async () => {
      const [n1, n2] = cluster.nodes as [SpegelNode, SpegelNode]
      const toml = await readFile(join(n2.hostsDir, cluster.upstreamHost, 'hosts.toml'), 'utf8')
      assert.match(toml, new RegExp(`\\[host\\.'https://${n2.ip.replaceAll('.', '\\.')}:5000'\\]`))
      assert.match(toml, /^ca = 'spegel-ca\.crt'$/m)
      assert.match(toml, /^client = \[\['spegel-client\.crt', 'spegel-client\.key'\]\]$/m)
      assert.deepEqual(await readFile(join(n2.hostsDir, cluster.upstreamHost, 'spegel-client.key')), members.key)
      for (const node of [n1, n2]) {
        if (node === n2) {
          await cluster.waitServable(n2, image.repository, 'manifests', image.digest)
          await cluster.upstream.waitForQuiet()
          cluster.upstream.resetAccessLog()
        }
        await criPull(node.containerd.socket, image.ref, 120_000)
        assert.equal(await node.imageDigest(image.ref), image.digest)
      }
      await cluster.upstream.waitForQuiet()
      assert.equal(cluster.upstream.blobBytesServed({ repository: image.repository }), 0, 'node 2 took every blob from node 1')
      const proxied = metricSum(await (await fetch(`http://${n2.ip}:${metricsPort}/metrics`)).text(), 'spegel_served_bytes_total', { source: 'peer' })
      if (redirect) assert.ok(proxied < 64 * 1024, `node 2's daemon redirected its containerd to node 1 (${proxied} bytes streamed through it)`)
      else assert.ok(proxied >= 3 * MiB, `node 2's daemon streamed the layers from node 1 (${proxied} bytes)`)
    })

    it('a client without a certificate, or with one of another CA, reads nothing; the probes need none', async () => {
      const n1 = cluster.nodes[0] as SpegelNode
      const layer = image.children.find((c) => c.size > MiB)!
      const blob = `${n1.mirrorUrl}/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
      assert.equal(await httpsStatus(blob, { ca: members.ca, client: members }), 200, 'a member reads the blob')
      assert.equal(await httpsStatus(blob, { ca: members.ca }), 401, 'no client certificate')
      assert.equal(await httpsStatus(blob, { ca: members.ca, client: outsider }), 401, 'a certificate of another CA')
      assert.equal(await httpsStatus(`${n1.mirrorUrl}/readyz`, { ca: members.ca }), 200, '/readyz without a certificate')
      await assert.rejects(fetch(blob.replace('https://', 'http://'), { signal: AbortSignal.timeout(5_000) }), 'plain HTTP gets no answer')
    })
  })
}
