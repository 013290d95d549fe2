// HTML of the debug page. Self-contained (inline CSS and JS, no CDN: clusters are often offline) and rendered on the
// server, so the page shows everything even without JavaScript; the script only refreshes the stats every 2 s and
// submits the measure form in place. Every value is escaped.
import type { AdvertisedImage } from '../advertise/index.ts'
import type { DoctorReport } from '../doctor/index.ts'
import type { HerdEvent } from '../registry/herd.ts'
import type { PeerInfo } from '../routing/types.ts'
import { escapeHtml as e, formatBytes, formatDuration } from './format.ts'
import type { MeasureResult } from './measure.ts'
import type { RecentRequest } from './recent.ts'

export interface StatsView {
  peerId: string
  addresses: string[]
  router?: { ready: boolean, routingTableSize: number, lastBootstrapError?: string }
  peers: PeerInfo[]
  images: AdvertisedImage[]
  advertisedKeys: number
  /** Unix seconds, undefined before the first success. */
  lastMirrorSuccess?: number
  recent: RecentRequest[]
  doctor?: DoctorReport
  /** Newest first; undefined when the node has no herd source (the section is left out). */
  herd?: HerdEvent[]
  now: number
}

const style = `
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:1rem 2rem;background:#f6f7f9;color:#1d2430}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.6rem .9rem;min-width:9rem}
.card .label{font-size:.75rem;color:#5b6573;text-transform:uppercase;letter-spacing:.04em}.card .value{font-size:1.3rem;font-weight:600;margin-top:.2rem}
.ok{color:#1a7f37}.warn{color:#b35900}.bad{color:#c62828}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e7;font-size:.85rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eceff3;vertical-align:top}th{background:#eef1f5}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.8rem;word-break:break-all}
.empty{color:#5b6573;font-style:italic}form{display:flex;gap:.5rem;margin:.4rem 0}input[type=text]{flex:1;max-width:40rem;padding:.35rem}
button{padding:.35rem .9rem}.error{color:#c62828}pre{background:#fff;border:1px solid #dde1e7;padding:.5rem;white-space:pre-wrap}
.finding{background:#fff4e5;border:1px solid #f0c36d;border-radius:6px;padding:.5rem .8rem;margin:.4rem 0}
`

const script = `
(function(){
  var stats=document.getElementById('stats');
  function refresh(){
    fetch('/debug/web/stats',{cache:'no-store'}).then(function(r){return r.ok?r.text():null}).then(function(h){if(h!==null)stats.innerHTML=h}).catch(function(){});
  }
  setInterval(refresh,2000);
  var form=document.getElementById('measure-form'),out=document.getElementById('measure-result');
  form.addEventListener('submit',function(ev){
    ev.preventDefault();
    out.innerHTML='<p class="empty">Measuring…</p>';
    fetch('/debug/web/measure?image='+encodeURIComponent(form.elements.image.value),{cache:'no-store'})
      .then(function(r){return r.text()}).then(function(h){out.innerHTML=h})
      .catch(function(err){out.textContent=String(err)});
  });
})();
`

/** The whole page served at `/debug/web/`. */
export function renderPage (view: StatsView): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Spegel ${e(shortId(view.peerId))}</title><style>${style}</style></head>
<body>
<h1>Spegel debug</h1>
<div id="stats">${renderStats(view)}</div>
<h2>Measure image pull</h2>
<form id="measure-form" action="/debug/web/measure" method="get">
<input type="text" name="image" placeholder="ghcr.io/spegel-org/spegel:v0.30.0" aria-label="image" required>
<button type="submit">Measure</button>
</form>
<div id="measure-result"></div>
<script>${script}</script>
</body></html>
`
}

/** The refreshable part: identity, counters, doctor findings, peers, images, recent requests and herd events. */
export function renderStats (view: StatsView): string {
  const tags = view.images.filter((i) => i.tag !== undefined).length
  const last = view.lastMirrorSuccess
  const lastHtml = last === undefined || last <= 0
    ? '<span class="warn">Pending</span>'
    : `<span class="ok">${e(formatDuration(view.now - last * 1000))} ago</span>`
  const ready = view.router === undefined ? '' : view.router.ready ? '<span class="ok">ready</span>' : '<span class="bad">not ready</span>'
  const findings = view.doctor?.findings ?? []
  const parts: string[] = []
  parts.push(`<section id="node"><h2>Node</h2><table><tbody>
<tr><th>Peer ID</th><td class="mono" id="peer-id">${e(view.peerId)}</td></tr>
<tr><th>Router</th><td>${ready}${view.router !== undefined ? ` (routing table: ${e(view.router.routingTableSize)} peers)` : ''}${view.router?.lastBootstrapError !== undefined ? ` <span class="bad">last bootstrap error: ${e(view.router.lastBootstrapError)}</span>` : ''}</td></tr>
<tr><th>Addresses</th><td class="mono">${view.addresses.length === 0 ? '<span class="empty">none</span>' : view.addresses.map((a) => e(a)).join('<br>')}</td></tr>
</tbody></table></section>`)
  parts.push(`<div class="cards">
${card('Last mirror success', lastHtml, 'last-success')}
${card('Connected peers', e(view.peers.length), 'peer-count')}
${card('Images', e(view.images.length), 'image-count')}
${card('Tags', e(tags), 'tag-count')}
${card('Advertised keys', e(view.advertisedKeys), 'key-count')}
${card('Doctor', view.doctor === undefined ? '<span class="empty">not run</span>' : findings.length === 0 ? '<span class="ok">no findings</span>' : `<span class="bad">${e(findings.length)} finding${findings.length === 1 ? '' : 's'}</span>`, 'doctor')}
</div>`)
  if (findings.length > 0) {
    parts.push(`<section id="findings"><h2>Doctor findings</h2>${findings.map((f) => `<div class="finding"><strong>${e(f.check)}</strong>: ${e(f.problem)}<br><em>Why it matters:</em> ${e(f.impact)}<pre>${e(f.fix)}</pre></div>`).join('')}</section>`)
  }
  parts.push(`<section><h2>Peers</h2><table id="peers"><thead><tr><th>Peer ID</th><th>Addresses</th></tr></thead><tbody>
${view.peers.length === 0 ? '<tr><td colspan="2" class="empty">no connected peers</td></tr>' : view.peers.map((p) => `<tr class="peer"><td class="mono">${e(p.id)}</td><td class="mono">${p.addresses.map((a) => e(a)).join('<br>')}</td></tr>`).join('\n')}
</tbody></table></section>`)
  parts.push(`<section><h2>Images</h2><table id="images"><thead><tr><th>Image</th><th>Tag</th><th>Digest</th><th>Advertised digests</th></tr></thead><tbody>
${view.images.length === 0 ? '<tr><td colspan="4" class="empty">no images</td></tr>' : view.images.map((i) => `<tr class="image"><td class="mono">${e(withoutRef(i.name))}</td><td>${e(i.tag ?? '')}</td><td class="mono">${e(i.digest)}</td><td>${e(i.digests.length)}</td></tr>`).join('\n')}
</tbody></table></section>`)
  parts.push(`<section><h2>Recent mirror requests</h2><table id="requests"><thead><tr><th>Time</th><th>Request</th><th>Source</th><th>Status</th><th>Size</th><th>Duration</th></tr></thead><tbody>
${view.recent.length === 0 ? '<tr><td colspan="6" class="empty">no requests yet</td></tr>' : view.recent.map((r) => `<tr class="request"><td>${e(new Date(r.at).toISOString().slice(11, 23))}</td><td class="mono">${e(r.method)} ${e(r.registry !== '' ? r.registry + '/' : '')}${e(r.repository)} ${e(r.kind)}/${e(r.reference)}</td><td class="source-${e(r.source)}">${e(r.source)}</td><td>${e(r.status)}</td><td>${e(formatBytes(r.bytes))}</td><td>${e(formatDuration(r.durationMs))}</td></tr>`).join('\n')}
</tbody></table></section>`)
  if (view.herd !== undefined) {
    parts.push(`<section><h2>Herd protection</h2><table id="herd"><thead><tr><th>Blob</th><th>Outcome</th><th>When</th></tr></thead><tbody>
${view.herd.length === 0 ? '<tr><td colspan="3" class="empty">no rollout seen yet</td></tr>' : view.herd.map((h) => `<tr class="herd-event herd-${e(h.outcome)}"><td class="mono" title="${e(h.digest)}">${e(shortDigest(h.digest))}</td><td>${herdOutcome(h)}</td><td>${e(formatDuration(view.now - h.at))} ago</td></tr>`).join('\n')}
</tbody></table></section>`)
  }
  return parts.join('\n')
}

/** A herd event's outcome in words, as HTML (the peer, from the network, escaped). */
function herdOutcome (event: HerdEvent): string {
  const peer = event.peer === undefined ? 'a peer' : `<span class="mono" title="${e(event.peer)}">${e(shortId(event.peer))}</span>`
  switch (event.outcome) {
    case 'followed': return `streamed from ${peer} while it downloaded`
    case 'won': return '<span class="ok">downloaded here</span> (others stream from this node)'
    case 'lost': return `a peer downloaded it; streamed from ${peer}`
    case 'fallback': return '<span class="warn">could not follow; downloaded here</span>'
    case 'held': return `${peer} held it after all (found late); streamed from it`
    default: return e(event.outcome) // an outcome added to HerdMirror later still shows, in its own name
  }
}

/** The measure form's result. */
export function renderMeasure (result: MeasureResult): string {
  const parts: string[] = []
  const peers = result.lookup.peers
  parts.push(`<h3>Lookup of <code>${e(result.key)}</code>: ${e(peers.length)} peer${peers.length === 1 ? '' : 's'} in ${e(formatDuration(result.lookup.ms))}</h3>`)
  if (result.lookup.error !== undefined) parts.push(`<p class="error">${e(result.lookup.error)}</p>`)
  if (peers.length === 0) {
    parts.push('<p class="empty">No peers found for image</p>')
    return parts.join('\n')
  }
  parts.push(`<table id="measure-lookup"><thead><tr><th>Peer</th><th>Addresses</th><th>Found after</th></tr></thead><tbody>
${peers.map((p) => `<tr><td class="mono">${e(p.id)}</td><td class="mono">${e(p.addresses.join(', '))}</td><td>${e(formatDuration(p.ms))}</td></tr>`).join('\n')}
</tbody></table>`)
  const pull = result.pull
  if (pull !== undefined) {
    parts.push(`<h3>Pull of <code>${e(result.image)}</code> through this node: ${e(formatBytes(pull.bytes))} in ${e(formatDuration(pull.ms))}</h3>`)
    if (pull.error !== undefined) parts.push(`<p class="error">${e(pull.error)}</p>`)
    parts.push(`<table id="measure-pull"><thead><tr><th>Item</th><th>Type</th><th>Source</th><th>Status</th><th>Size</th><th>Duration</th></tr></thead><tbody>
${pull.items.map((i) => `<tr class="pulled"><td class="mono">${e(i.reference)}</td><td>${e(i.kind)}</td><td class="source-${e(i.source)}">${e(i.source)}</td><td>${e(i.status)}</td><td>${e(formatBytes(i.size))}</td><td>${e(formatDuration(i.ms))}</td></tr>`).join('\n')}
</tbody></table>`)
  }
  return parts.join('\n')
}

export function renderError (message: string): string {
  return `<p class="error">${e(message)}</p>`
}

function card (label: string, valueHtml: string, id: string): string {
  return `<div class="card" id="${e(id)}"><div class="label">${e(label)}</div><div class="value">${valueHtml}</div></div>`
}

function shortId (id: string): string {
  return id.length > 12 ? '…' + id.slice(-8) : id
}

/** `sha256:` and the first 12 hex digits, enough to tell blobs apart at a glance (the full digest is its title). */
function shortDigest (digest: string): string {
  const colon = digest.indexOf(':')
  return digest.length > colon + 13 ? digest.slice(0, colon + 13) + '…' : digest
}

/** `registry/repo:tag` → `registry/repo` (the tag has its own column). */
function withoutRef (name: string): string {
  const at = name.indexOf('@')
  const base = at === -1 ? name : name.slice(0, at)
  const colon = base.lastIndexOf(':')
  return colon > base.lastIndexOf('/') ? base.slice(0, colon) : base
}
