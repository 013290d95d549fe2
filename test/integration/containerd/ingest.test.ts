// The in-flight reader against a real containerd: while `ctr content fetch` downloads a layer from a real registry
// through a slow link, the layer is found in containerd's ingest directory by its digest and read to the end as it
// arrives; the bytes hash to the digest. This pins containerd's on-disk layout (ref, total, data) that herd
// protection relies on.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import { followDownload, IngestDirectory, isCommitted } from '../../../src/containerd/ingest.ts'
import { ContainerdStore } from '../../../src/containerd/store.ts'
import { startContainerd, type ContainerdInstance } from '../../helpers/containerd.ts'
import { pushLargeBlobImage, type PushedImage } from '../../helpers/images.ts'
import { run } from '../../helpers/process.ts'
import { startRegistry, type RegistryHandle } from '../../helpers/registry.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

/** Forwards to `upstream`, sending response bodies at about `bytesPerSecond`. */
async function slowProxy (upstream: string, bytesPerSecond: number): Promise<{ host: string, close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const forward = http.request(`${upstream}${req.url ?? '/'}`, { method: req.method, headers: { ...req.headers, host: new URL(upstream).host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      up.on('data', (chunk: Buffer) => {
        up.pause()
        res.write(chunk, () => { setTimeout(() => { up.resume() }, Math.ceil(chunk.length / bytesPerSecond * 1000)) })
      })
      up.on('end', () => { res.end() })
      up.on('error', () => { res.destroy() })
    })
    forward.on('error', () => { res.destroy() })
    req.pipe(forward)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) },
  }
}

describe('following a real containerd download', { timeout: 120_000 }, () => {
  let registry: RegistryHandle
  let node: ContainerdInstance
  let proxy: Awaited<ReturnType<typeof slowProxy>>
  let image: PushedImage
  before(async () => {
    requireKnownTool('containerd')
    requireKnownTool('docker-registry')
    registry = await startRegistry()
    image = await pushLargeBlobImage(registry.host, 6 * 1024 * 1024, { repository: 'inflight/slow' })
    proxy = await slowProxy(registry.url, 3 * 1024 * 1024)
    node = await startContainerd()
  })
  after(async () => {
    await node?.stop()
    await proxy?.close()
    await registry?.stop()
  })

  it('finds the layer being downloaded and reads it to the end as it arrives', async () => {
    const layer = image.manifests[0]?.layers[0]
    assert.ok(layer !== undefined)
    const fetching = run('ctr', ['--address', node.socket, '-n', node.namespace, 'content', 'fetch', '--plain-http', `${proxy.host}/${image.repository}:${image.tag}`], { timeoutMs: 60_000 })
    fetching.catch(() => {})
    const ingest = new IngestDirectory({ contentPath: node.contentPath })
    let download
    for (let i = 0; i < 400 && download === undefined; i++) {
      download = await ingest.find(layer.digest)
      if (download === undefined) await sleep(10)
    }
    assert.ok(download !== undefined, 'the layer shows up in containerd\'s ingest directory')
    assert.equal(download.total, layer.size)
    // The store finds it too, through the content directory containerd reports (no path configured).
    const store = new ContainerdStore({ socket: node.socket, namespace: node.namespace, contentPath: '' })
    try {
      const viaStore = await store.download(layer.digest)
      assert.equal(viaStore?.total, layer.size)
      assert.equal(viaStore?.digest, layer.digest)
    } finally {
      await store.close()
    }
    assert.equal(await isCommitted(node.contentPath, layer.digest), false)
    const hash = createHash('sha256')
    let bytes = 0
    let chunks = 0
    for await (const chunk of followDownload(download)) {
      hash.update(chunk)
      bytes += chunk.length
      chunks++
    }
    assert.equal(bytes, layer.size)
    assert.equal('sha256:' + hash.digest('hex'), layer.digest)
    assert.ok(chunks > 3, `read in ${chunks} pieces while it arrived`)
    await fetching
    assert.equal(await isCommitted(node.contentPath, layer.digest), true)
    assert.equal(await ingest.find(layer.digest), undefined)
  })
})
