// MoECluster live routing page: renders each `stats` event of /v1/stats/stream (the /stats document).
// No dependencies; every figure keeps its raw value in data-value so tests (and curious readers) can check it.
'use strict';

const $ = (id) => document.getElementById(id);
const fmt = (v, digits) => Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ramp = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];

function setFigure(id, value, text) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = text;
}

function color(fraction) {
  if (fraction <= 0) return '#1a2540';
  const x = Math.min(1, fraction) * (ramp.length - 1);
  const i = Math.min(ramp.length - 2, Math.floor(x));
  const t = x - i;
  const a = parseInt(ramp[i].slice(1), 16), b = parseInt(ramp[i + 1].slice(1), 16);
  const mix = (shift) => Math.round(((a >> shift) & 255) * (1 - t) + ((b >> shift) & 255) * t);
  return `rgb(${mix(16)}, ${mix(8)}, ${mix(0)})`;
}

function svg(tag, attrs, text) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderGateway(g) {
  setFigure('tokens-per-second', g.tokens_per_second, fmt(g.tokens_per_second, 1));
  setFigure('tokens-total', g.tokens, fmt(g.tokens, 0));
  setFigure('requests-answered', g.requests.answered, fmt(g.requests.answered, 0));
  setFigure('requests-failed', g.requests.failed, fmt(g.requests.failed, 0));
  setFigure('requests-rejected', g.requests.rejected, fmt(g.requests.rejected, 0));
  setFigure('requests-overloaded', g.requests.overloaded ?? 0, fmt(g.requests.overloaded ?? 0, 0));
  setFigure('requests-busy', g.requests.busy ?? 0, fmt(g.requests.busy ?? 0, 0));
  setFigure('requests-disconnected', g.requests.disconnected ?? 0, fmt(g.requests.disconnected ?? 0, 0));
  $('requests-failed').classList.toggle('bad', g.requests.failed > 0);
  $('recent-window').textContent = g.recent_window_seconds;
  for (const [prefix, p] of [['latency', g.latency_ms], ['recent', g.recent_latency_ms]]) {
    for (const key of ['p50', 'p90', 'p99', 'p999', 'max']) {
      setFigure(`${prefix}-${key}`, p[key], p.count > 0 ? fmt(p[key], 2) : '–');
    }
  }

  const spark = $('throughput');
  spark.replaceChildren();
  const points = g.timeline || [];
  if (points.length > 1) {
    const max = Math.max(1, ...points.map((p) => p.tokens));
    const step = 240 / (points.length - 1);
    const coords = points.map((p, i) => `${(i * step).toFixed(1)},${(46 - (p.tokens / max) * 44).toFixed(1)}`);
    spark.append(svg('polygon', { points: `0,48 ${coords.join(' ')} 240,48`, fill: 'rgba(94,201,98,0.18)' }));
    spark.append(svg('polyline', { points: coords.join(' '), fill: 'none', stroke: '#5ec962', 'stroke-width': '1.5' }));
  }
}

function renderBytes(models, ratio) {
  const body = $('bytes-table').querySelector('tbody');
  body.replaceChildren();
  for (const m of models) {
    const row = document.createElement('tr');
    row.dataset.model = m.model;
    const cells = [
      [m.model, null], [m.mode, null], [fmt(m.hidden_size, 0), m.hidden_size], [fmt(m.routed_width, 0), m.routed_width],
      [fmt(m.tokens, 0), m.tokens], [fmt(m.measured_payload_bytes_per_token, 1), m.measured_payload_bytes_per_token],
      [fmt(m.predicted_payload_bytes_per_token, 1), m.predicted_payload_bytes_per_token], [fmt(m.measured_message_bytes_per_token, 1), m.measured_message_bytes_per_token],
    ];
    const names = ['model', 'mode', 'hidden-size', 'routed-width', 'tokens', 'measured', 'predicted', 'message'];
    cells.forEach(([text, value], i) => {
      const td = document.createElement('td');
      td.textContent = text;
      td.dataset.field = names[i];
      if (value !== null) td.dataset.value = String(value);
      if (i === 1) td.className = `mode-${m.mode}`;
      row.append(td);
    });
    body.append(row);
  }

  setFigure('bytes-ratio', ratio ?? '', ratio ? fmt(ratio, 2) : '–');
  const std = models.find((m) => m.mode === 'standard'), lat = models.find((m) => m.mode === 'latent');
  $('bytes-ratio-analytic').textContent = std && lat ? fmt(std.routed_width / lat.routed_width, 2) : '–';

  // Bars: measured (solid) beside predicted (outline) per model.
  const chart = $('bytes-chart');
  chart.replaceChildren();
  const rowHeight = 26, left = 110, width = 900;
  chart.setAttribute('viewBox', `0 0 ${width} ${models.length * rowHeight * 2 + 10}`);
  const max = Math.max(1, ...models.flatMap((m) => [m.measured_payload_bytes_per_token, m.predicted_payload_bytes_per_token]));
  models.forEach((m, i) => {
    const y = i * rowHeight * 2 + 4;
    const fill = m.mode === 'latent' ? '#5ec962' : '#60a5fa';
    const scale = (v) => (v / max) * (width - left - 140);
    chart.append(svg('text', { x: 0, y: y + 14 }, `${m.model} measured`));
    chart.append(svg('rect', { x: left, y, width: Math.max(0, scale(m.measured_payload_bytes_per_token)), height: rowHeight - 8, fill, rx: 2 }));
    chart.append(svg('text', { x: left + scale(m.measured_payload_bytes_per_token) + 6, y: y + 14 }, `${fmt(m.measured_payload_bytes_per_token, 1)} B/token`));
    chart.append(svg('text', { x: 0, y: y + rowHeight + 14 }, 'predicted'));
    chart.append(svg('rect', { x: left, y: y + rowHeight, width: Math.max(0, scale(m.predicted_payload_bytes_per_token)), height: rowHeight - 8, fill: 'none', stroke: fill, 'stroke-dasharray': '4 2', rx: 2 }));
    chart.append(svg('text', { x: left + scale(m.predicted_payload_bytes_per_token) + 6, y: y + rowHeight + 14 }, `${fmt(m.predicted_payload_bytes_per_token, 1)} B/token`));
  });
}

function renderHeatmaps(models) {
  const root = $('heatmaps');
  root.replaceChildren();
  for (const m of models) {
    const block = document.createElement('div');
    block.className = 'heatmap';
    block.dataset.model = m.model;
    const title = document.createElement('h3');
    title.innerHTML = `<span class="mode-${m.mode}"></span>`;
    title.firstChild.textContent = `${m.model} (${m.mode})`;
    block.append(title);
    for (const layer of m.layers) {
      const counts = layer.expert_tokens || [];
      const max = Math.max(0, ...counts);
      const row = document.createElement('div');
      row.className = 'heatrow';
      row.dataset.layer = String(layer.layer);
      const label = document.createElement('span');
      label.className = 'label';
      label.textContent = `layer ${layer.layer}`;
      const cells = document.createElement('div');
      cells.className = 'cells';
      cells.style.gridTemplateColumns = `repeat(${counts.length}, minmax(3px, 1fr))`;
      counts.forEach((n, e) => {
        const cell = document.createElement('div');
        cell.className = 'cell';
        cell.dataset.expert = String(e);
        cell.dataset.tokens = String(n);
        cell.style.background = color(max > 0 ? n / max : 0);
        cell.title = `${m.model} layer ${layer.layer} expert ${e}: ${fmt(n, 0)} tokens`;
        cells.append(cell);
      });
      row.append(label, cells);
      block.append(row);
    }
    root.append(block);
  }
  if (models.length > 0) {
    const legend = document.createElement('div');
    legend.className = 'legend';
    legend.innerHTML = '<span>0</span><span class="ramp"></span><span>busiest expert of the layer</span>';
    root.append(legend);
  }
}

function renderPlacement(silos) {
  const root = $('placement');
  root.replaceChildren();
  const order = { frontend: 0, expert: 1 };
  for (const s of [...silos].sort((a, b) => (order[a.role] ?? 2) - (order[b.role] ?? 2) || a.name.localeCompare(b.name))) {
    const card = document.createElement('div');
    card.className = 'silo';
    card.dataset.silo = s.name;
    card.dataset.role = s.role;
    const head = document.createElement('div');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = s.name;
    const role = document.createElement('span');
    role.className = 'role';
    role.textContent = `${s.role} · ${s.shards.length} shard${s.shards.length === 1 ? '' : 's'}`;
    head.append(name, role);
    const addr = document.createElement('div');
    addr.className = 'addr';
    addr.textContent = s.address;
    const shards = document.createElement('div');
    shards.className = 'shards';
    for (const key of s.shards) {
      const chip = document.createElement('span');
      chip.className = 'shard';
      chip.dataset.shard = key;
      chip.textContent = key;
      shards.append(chip);
    }
    card.append(head, addr, shards);
    root.append(card);
  }
}

function renderBatching(batches) {
  const body = $('batching-table').querySelector('tbody');
  body.replaceChildren();
  for (const b of batches) {
    const row = document.createElement('tr');
    row.dataset.shard = b.shard;
    row.dataset.meanRequests = String(b.mean_requests);
    const cells = [b.shard, b.silo, fmt(b.batches, 0), fmt(b.requests, 0), fmt(b.mean_requests, 2), fmt(b.mean_rows, 1),
      fmt(b.merged_batches, 0), `${fmt(b.max_requests, 0)}, ${fmt(b.max_rows, 0)}`];
    for (const text of cells) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    body.append(row);
  }
}

function renderBalance(layers) {
  const body = $('balance-table').querySelector('tbody');
  body.replaceChildren();
  for (const l of layers) {
    l.silos.forEach((w, i) => {
      const row = document.createElement('tr');
      row.dataset.layer = `${l.model}/${l.layer}`;
      row.dataset.computeImbalance = String(l.compute_imbalance);
      const imbalance = i === 0 ? `${fmt(l.rows_imbalance, 2)}, ${fmt(l.pairs_imbalance, 2)}, ${fmt(l.compute_imbalance, 2)}` : '';
      const cells = [l.model, String(l.layer), w.silo, fmt(w.shards, 0), fmt(w.rows, 0), fmt(w.pairs, 0), fmt(w.compute_microseconds / 1000, 1), imbalance];
      for (const text of cells) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.append(cell);
      }
      body.append(row);
    });
  }
}

function renderPlans(placements) {
  const body = $('plan-table').querySelector('tbody');
  body.replaceChildren();
  for (const p of placements) {
    const history = p.history.length > 0 ? [...p.history].reverse() : [null];
    for (const h of history) {
      const row = document.createElement('tr');
      row.dataset.model = p.model;
      row.dataset.epoch = String(p.epoch);
      const cells = h === null
        ? [p.model, String(p.epoch), '', '', 'no re-plan yet', '', '', '', '', '', '']
        : [p.model, String(h.epoch), String(h.layer), h.at.replace('T', ' ').slice(0, 19), h.changed ? 'yes' : 'no', fmt(h.imbalance_before, 3), fmt(h.imbalance_after, 3),
          fmt(h.extra_replicas, 0), fmt(h.new_shards, 0), fmt(h.window_tokens, 0), h.reason];
      for (const text of cells) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.append(cell);
      }
      body.append(row);
    }
  }
}

function renderFrontEndBatching(batches) {
  const body = $('frontend-batching-table').querySelector('tbody');
  body.replaceChildren();
  for (const b of batches) {
    const row = document.createElement('tr');
    // The wire pair's text is "dispatch/combine": each direction's element type in a column of its own.
    const [dispatch, combine] = String(b.wire).includes('/') ? String(b.wire).split('/', 2) : [b.wire, b.wire];
    row.dataset.target = `${b.model}/${b.target}/${b.wire}`;
    row.dataset.silo = b.silo;
    row.dataset.dispatch = dispatch;
    row.dataset.combine = combine;
    row.dataset.meanRequests = String(b.mean_requests);
    const cells = [b.model, b.target, dispatch, combine, b.silo, fmt(b.batches, 0), fmt(b.requests, 0), fmt(b.mean_requests, 2), fmt(b.mean_tokens, 1),
      fmt(b.merged_batches, 0), `${fmt(b.max_requests, 0)}, ${fmt(b.max_tokens, 0)}`];
    for (const text of cells) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    body.append(row);
  }
}

function render(doc) {
  renderGateway(doc.gateway);
  renderBytes(doc.models, doc.standard_over_latent_bytes_per_token);
  renderHeatmaps(doc.models);
  renderFrontEndBatching(doc.front_end_batches ?? []);
  renderBatching(doc.shard_batches ?? []);
  renderBalance(doc.balance ?? []);
  renderPlans(doc.placement ?? []);
  renderPlacement(doc.silos);
  const updated = $('updated');
  updated.dataset.unixSeconds = String(doc.gateway.unix_seconds);
  updated.textContent = `updated ${new Date(doc.gateway.unix_seconds * 1000).toLocaleTimeString()}`;
  document.body.dataset.events = String(Number(document.body.dataset.events || 0) + 1);
}

function connect() {
  const source = new EventSource('/v1/stats/stream');
  const state = $('connection');
  source.addEventListener('stats', (e) => {
    state.className = 'connection live';
    state.dataset.state = 'live';
    state.textContent = 'live';
    render(JSON.parse(e.data));
  });
  source.addEventListener('problem', (e) => {
    state.className = 'connection connecting';
    state.dataset.state = 'problem';
    state.textContent = `cluster: ${JSON.parse(e.data).error}`;
  });
  source.onerror = () => {
    state.className = 'connection connecting';
    state.dataset.state = 'connecting';
    state.textContent = 'reconnecting…';
  };
}

connect();
