import { ContainerdClient, ContainerdStore } from '../containerd/index.ts'
import { CriClient, Doctor, formatReport } from '../doctor/index.ts'
import { ExitCode, list, str, type CommandContext } from './context.ts'

/**
 * `spegel doctor`: checks this node's containerd and mirror configuration and prints each finding with its fix.
 * Exit code 0: nothing found; 1: findings (or containerd unreachable).
 */
export async function doctorCommand (ctx: CommandContext): Promise<number> {
  const { values, signal } = ctx
  const socket = str(values, 'containerd-sock')
  const namespace = str(values, 'containerd-namespace')
  const client = new ContainerdClient({ socket, namespace, callTimeoutMs: 5000 })
  const store = new ContainerdStore({ client, contentPath: str(values, 'containerd-content-path') })
  // One connection to containerd for both APIs.
  const cri = new CriClient({ channel: client.channel })
  try {
    const doctor = new Doctor({
      store,
      cri,
      plugins: async (options) => await client.plugins([], options),
    }, {
      registryConfigPath: str(values, 'containerd-registry-config-path'),
      mirroredRegistries: list(values, 'mirrored-registries'),
      mirrorTargets: list(values, 'mirror-targets'),
      namespace,
      hostRoot: str(values, 'host-root'),
    })
    const report = await doctor.run({ signal })
    if (str(values, 'format') === 'json') process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    else process.stdout.write(formatReport(report))
    return report.findings.length === 0 ? ExitCode.ok : ExitCode.failure
  } finally {
    cri.close()
    await store.close()
    client.close()
  }
}
