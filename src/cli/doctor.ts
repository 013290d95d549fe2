import { ContainerdClient, ContainerdStore } from '../containerd/index.ts'
import { CriClient, Doctor, formatReport } from '../doctor/index.ts'
import { ExitCode, type CommandContext } from './context.ts'
import type { DoctorConfig } from './spec.ts'

/**
 * `spegel doctor`: checks this node's containerd and mirror configuration and prints each finding with its fix.
 * Exit code 0: nothing found; 1: findings (or containerd unreachable).
 */
export async function doctorCommand (ctx: CommandContext<DoctorConfig>): Promise<number> {
  const { config, signal } = ctx
  const namespace = config.containerdNamespace
  const client = new ContainerdClient({ socket: config.containerdSock, namespace, callTimeoutMs: 5000 })
  const store = new ContainerdStore({ client, contentPath: config.containerdContentPath })
  // One connection to containerd for both APIs.
  const cri = new CriClient({ channel: client.channel })
  try {
    const doctor = new Doctor({
      store,
      cri,
      plugins: async (options) => await client.plugins([], options),
    }, {
      registryConfigPath: config.containerdRegistryConfigPath,
      mirroredRegistries: config.mirroredRegistries,
      mirrorTargets: config.mirrorTargets,
      namespace,
      hostRoot: config.hostRoot,
    })
    const report = await doctor.run({ signal })
    if (config.format === 'json') process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    else process.stdout.write(formatReport(report))
    return report.findings.length === 0 ? ExitCode.ok : ExitCode.failure
  } finally {
    cri.close()
    await store.close()
    client.close()
  }
}
