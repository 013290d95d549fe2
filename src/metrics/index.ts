import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface TransferState {
  reserved: number
  /** Reserved by transfers whose clients take nothing now (not counted in `reserved`). */
  stalled: number
  queued: number
  inUse: number
  pooled: number
  chunkSize: number
}

/**
 * Distinct values the `registry` label of spegel_mirror_requests_total takes; requests for further registries count
 * under `other`. The value comes from the client (`?ns=`) and each new one is kept for the life of the process: without
 * a bound, a client cycling through made-up names grows the daemon's memory without end.
 */
export const maxRegistryLabels = 64

/**
 * The daemon's Prometheus metrics. Names, types and labels are Spegel's (spegel-behaviour.md §7) so existing
 * dashboards and alerts keep working.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly registryLabels = new Set<string>()

  /** The `registry` label for a request naming `registry`: itself, or `other` once maxRegistryLabels are in use. */
  registryLabel (registry: string): string {
    if (this.registryLabels.has(registry)) return registry
    if (this.registryLabels.size >= maxRegistryLabels) return 'other'
    this.registryLabels.add(registry)
    return registry
  }

  readonly mirrorRequests = new Counter({ name: 'spegel_mirror_requests_total', help: 'Total number of mirror requests.', labelNames: ['registry', 'cache'] as const, registers: [this.registry] })
  readonly tagChecks = new Counter({ name: 'spegel_tag_confirmations_total', help: 'Tags resolved by peers, by what the upstream registry said of them (confirmed, differs, unconfirmable, unreachable).', labelNames: ['outcome'] as const, registers: [this.registry] })
  readonly mirrorLastSuccess = new Gauge({ name: 'spegel_mirror_last_success_timestamp_seconds', help: 'The timestamp of the last successful mirror request.', registers: [this.registry] })
  readonly resolveDuration = new Histogram({ name: 'spegel_resolve_duration_seconds', help: 'The duration for router to resolve a peer.', labelNames: ['router'] as const, registers: [this.registry] })
  readonly advertisedImageTags = new Gauge({ name: 'spegel_advertised_image_tags', help: 'Number of advertised image tags.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly advertisedImageDigests = new Gauge({ name: 'spegel_advertised_image_digests', help: 'Number of advertised image digests.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly advertisedContentDigests = new Gauge({ name: 'spegel_advertised_content_digests', help: 'Number of advertised content digests.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly httpRequestDuration = new Histogram({ name: 'http_request_duration_seconds', help: 'The latency of the HTTP requests.', labelNames: ['handler', 'method', 'code'] as const, registers: [this.registry] })
  readonly httpResponseSize = new Histogram({
    name: 'http_response_size_bytes',
    help: 'The size of the HTTP responses.',
    labelNames: ['handler', 'method', 'code'] as const,
    buckets: Array.from({ length: 10 }, (_, i) => 1024 * 5 ** i),
    registers: [this.registry],
  })

  readonly httpRequestsInflight = new Gauge({ name: 'http_requests_inflight', help: 'The number of inflight requests being handled at the same time.', labelNames: ['handler'] as const, registers: [this.registry] })

  // Ours, beyond Spegel's: they answer "is it working?" without reading logs.
  /** Body bytes of successful GET /v2/ responses, by where they came from (`local` content store or a `peer`). */
  readonly servedBytes = new Counter({ name: 'spegel_served_bytes_total', help: 'Bytes of content served to clients, by source (local or peer).', labelNames: ['source'] as const, registers: [this.registry] })
  /** Requests to a peer that failed (`connect_timeout`, `stall`, `bad_response`, `connection`, `stream_broken`). */
  readonly peerFailures = new Counter({ name: 'spegel_peer_failures_total', help: 'Failed requests to peers, by reason.', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly verificationFailures = new Counter({ name: 'spegel_verification_failures_total', help: 'Content received from peers that did not match its digest.', registers: [this.registry] })
  /** Findings of the last `doctor` run, by check; 0 means the check passed or was skipped. */
  readonly doctorFindings = new Gauge({ name: 'spegel_doctor_findings', help: 'Misconfigurations found by the last doctor run, by check.', labelNames: ['check'] as const, registers: [this.registry] })

  // Load: the transfer budget (src/registry/budget.ts) and the registry's connections.
  readonly transferBudget = new Gauge({ name: 'spegel_transfer_budget_bytes', help: 'Memory blob transfers may reserve at once.', registers: [this.registry] })
  /** Transfers refused for lack of memory: `requester` peer (answered 429) or node (its containerd, answered 404). */
  readonly transferRejections = new Counter({ name: 'spegel_transfer_rejections_total', help: 'Transfers refused because the transfer budget was full, by requester, source and reason.', labelNames: ['requester', 'source', 'reason'] as const, registers: [this.registry] })
  readonly transferStallTimeouts = new Counter({ name: 'spegel_transfer_stall_timeouts_total', help: 'Blob transfers ended because the client took no bytes: for the stall timeout, or for 500 ms while stalled transfers already held as much memory as the transfer budget.', registers: [this.registry] })
  readonly transferQueueSeconds = new Histogram({
    name: 'spegel_transfer_queue_duration_seconds',
    help: 'Time requests of this node\'s containerd waited for room in the transfer budget, by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 5],
    registers: [this.registry],
  })

  private transferState: (() => TransferState) | undefined
  readonly transferBuffers = new Gauge({
    name: 'spegel_transfer_buffer_bytes',
    help: 'Transfer memory: reserved by moving transfers, by stalled ones, held in buffers in use, and kept free for reuse.',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const t = this.transferState?.()
      if (t === undefined) return
      this.transferBuffers.set({ state: 'reserved' }, t.reserved)
      this.transferBuffers.set({ state: 'stalled' }, t.stalled)
      this.transferBuffers.set({ state: 'in_use' }, t.inUse * t.chunkSize)
      this.transferBuffers.set({ state: 'pooled' }, t.pooled * t.chunkSize)
    },
  })

  readonly transferQueued = new Gauge({ name: 'spegel_transfer_queued', help: 'Requests waiting for room in the transfer budget.', registers: [this.registry], collect: () => { const t = this.transferState?.(); if (t !== undefined) this.transferQueued.set(t.queued) } })
  private connectionState: (() => { active: number, idle: number }) | undefined
  readonly httpConnections = new Gauge({
    name: 'spegel_http_connections',
    help: 'Open connections to the registry, by state (active: a request in progress).',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const c = this.connectionState?.()
      if (c === undefined) return
      this.httpConnections.set({ state: 'active' }, c.active)
      this.httpConnections.set({ state: 'idle' }, c.idle)
    },
  })

  readonly connectionsClosed = new Counter({ name: 'spegel_http_connections_closed_total', help: 'Registry connections closed by the daemon to stay within its limits, by reason.', labelNames: ['reason'] as const, registers: [this.registry] })
  // Herd protection (src/registry/herd.ts).
  /** What a blob nobody held came to: `followed` (streamed from a peer's download), `won` (this node downloads), `lost` (a rival downloads), `fallback` (could not follow: downloads itself), `held` (a peer held it complete after all). */
  readonly herdOutcomes = new Counter({ name: 'spegel_herd_outcomes_total', help: 'Blobs nobody held when asked, by outcome: followed, won, lost, fallback, held.', labelNames: ['outcome'] as const, registers: [this.registry] })
  /** Downloads in progress served to peers, and their bytes. */
  readonly inflightServed = new Counter({ name: 'spegel_inflight_served_total', help: 'Blobs served to peers while this node was still downloading them.', registers: [this.registry] })
  readonly inflightServedBytes = new Counter({ name: 'spegel_inflight_served_bytes_total', help: 'Bytes served to peers from downloads in progress.', registers: [this.registry] })
  /** Promise rejections nobody handled: each is a bug, logged and counted instead of ending the process. */
  readonly unhandledErrors = new Counter({ name: 'spegel_unhandled_errors_total', help: 'Errors no code path handled (bugs); the daemon logged them and kept running.', registers: [this.registry] })

  registerTransferGauges (state: () => TransferState): void {
    this.transferState = state
  }

  registerConnectionGauges (state: () => { active: number, idle: number }): void {
    this.connectionState = state
  }

  constructor (options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry })
      // Gauges named like counters fail `promtool check metrics`; each is the sum of its per-type gauge, which stays.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name)
    }
  }
}
