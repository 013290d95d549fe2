// Pulls and removes images through containerd's CRI image service, as the kubelet does: containerd fetches and
// unpacks in one pipeline inside the daemon, using the hosts.toml files of its CRI `config_path`.
import { fileURLToPath } from 'node:url'
import { Client, Metadata, credentials } from '@grpc/grpc-js'
import type { ServiceError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import type { MethodDefinition } from '@grpc/proto-loader'

interface ImageSpec { image: string }
interface Methods {
  pull: MethodDefinition<{ image: ImageSpec }, { image_ref: string }>
  remove: MethodDefinition<{ image: ImageSpec }, Record<string, never>>
}

function loadMethods (): Methods {
  const pkg = loadSync(fileURLToPath(new URL('./proto/cri-images.proto', import.meta.url)), { keepCase: true, defaults: true })
  const service = pkg['runtime.v1.ImageService'] as unknown as Record<string, MethodDefinition<never, never>>
  return { pull: service.PullImage as unknown as Methods['pull'], remove: service.RemoveImage as unknown as Methods['remove'] }
}

export class CriImages {
  private readonly grpc: Client
  private readonly methods = loadMethods()

  constructor (socket: string) {
    this.grpc = new Client(`unix://${socket}`, credentials.createInsecure())
  }

  /** PullImage; resolves with the image's reference (`sha256:<config digest>`). */
  async pull (image: string, timeoutMs = 900_000): Promise<string> {
    const res = await this.call(this.methods.pull, { image: { image } }, timeoutMs)
    return res.image_ref
  }

  /** RemoveImage: every name of the image goes (tag, repo digest and id); containerd then collects its content. */
  async remove (image: string, timeoutMs = 60_000): Promise<void> {
    await this.call(this.methods.remove, { image: { image } }, timeoutMs)
  }

  close (): void {
    this.grpc.close()
  }

  private async call<Req, Res> (def: MethodDefinition<Req, Res>, request: Req, timeoutMs: number): Promise<Res> {
    return await new Promise<Res>((resolve, reject) => {
      this.grpc.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new Metadata(),
        { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res?: Res) => {
          if (err !== null) reject(new Error(`CRI ${def.path}: ${err.details || err.message}`, { cause: err }))
          else resolve(res as Res)
        })
    })
  }
}

/** One CRI PullImage on the containerd at `socket`, as the kubelet pulls, with a client of its own; the image ref. */
export async function criPull (socket: string, image: string, timeoutMs?: number): Promise<string> {
  const cri = new CriImages(socket)
  try {
    return await cri.pull(image, timeoutMs)
  } finally {
    cri.close()
  }
}
