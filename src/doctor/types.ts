import type { CriLayout } from './cri-config.ts'

/** The checks, in the order they run; also the `check` label of spegel_doctor_findings. */
export const checkNames = ['containerd', 'config-path', 'discard-unpacked-layers', 'missing-layers', 'hosts-toml', 'mirror-traffic'] as const
export type CheckName = typeof checkNames[number]

/** One thing that is wrong, with why it matters and how to fix it. */
export interface Finding {
  check: CheckName
  problem: string
  impact: string
  /** A command, config snippet or patch, possibly several lines. */
  fix: string
}

export interface CheckResult {
  check: CheckName
  status: 'ok' | 'finding' | 'skipped'
  /** One line: what was checked and the outcome, or why the check could not run. */
  summary: string
  findings: Finding[]
}

export interface DoctorReport {
  results: CheckResult[]
  findings: Finding[]
  talos: boolean
  containerdVersion?: string
  layout?: CriLayout
  finishedAt: Date
}
