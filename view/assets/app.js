// The dashboard page (served by view/server.ts): the run list, the focused run's status and
// flags, and its curves, live over server-sent events, with the ticked runs overlaid.
// Plain browser JavaScript, no build step; charts by uPlot (window.uPlot, from node_modules).
// Everything from the runs is inserted as text (textContent), never as HTML.
'use strict';

(() => {
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
  const DASHES = [undefined, [8, 4], [2, 3], [10, 3, 2, 3]];
  // columns that are not curves
  const NOT_DRAWN = new Set(['step', 'time', 'epoch', 'stage', 'skipped']);
  // metrics.jsonl panels in page order; a numeric column no panel takes gets a panel of its own
  const METRIC_PANELS = [
    { id: 'loss', title: 'Loss and its terms', match: (k) => k === 'loss' || k.startsWith('loss_') },
    { id: 'head-loss', title: 'Loss per head', match: (k) => /^block\d+_loss$/.test(k) },
    { id: 'nn-acc', title: 'NN accuracy per head (share of picked neighbours with the sample\'s label)', match: (k) => /(^|_)nn_acc$/.test(k) },
    { id: 'nn-sim', title: 'NN similarity per head (cosine)', match: (k) => /(^|_)nn_sim$/.test(k) },
    { id: 'train-acc', title: 'Training accuracy', match: (k) => k === 'train_acc' },
    { id: 'lr', title: 'Learning rate', match: (k) => k === 'lr' },
    { id: 'images-per-s', title: 'Images / s', match: (k) => k === 'images_per_s' },
    { id: 'data-wait', title: 'Data wait share (of each step)', match: (k) => k === 'data_wait_share' },
    { id: 'grad-norm', title: 'Gradient norm (before clipping)', match: (k) => k === 'grad_norm' },
  ];

  const state = {
    runs: [],
    focused: undefined,
    /** Runs ticked for the overlay (the focused one is drawn either way). */
    ticked: new Set(),
    /** id -> { es, metrics: Table, memory: Table, detail } */
    live: new Map(),
  };

  // ---- small helpers
  const $ = (sel) => document.querySelector(sel);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  function duration(seconds) {
    if (seconds === undefined || seconds === null || !isFinite(seconds)) return '';
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }
  function fmt(v) {
    if (typeof v !== 'number') return String(v);
    return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : String(+v.toPrecision(5));
  }
  /** An axis tick: 3 significant digits, exponent form for the very small and large (lr 5e-4). */
  function tick(v) {
    if (v === 0) return '0';
    return Math.abs(v) >= 1e5 || Math.abs(v) < 1e-2 ? v.toExponential(1).replace('.0e', 'e') : String(+v.toPrecision(3));
  }
  /** A run's name: its folder below the runs folder, or the runs folder's own name where it is the run (--view). */
  function runName(id) {
    return id === '.' ? (state.runsDir || '.').split('/').filter(Boolean).pop() || '.' : id;
  }
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    return { run: p.get('run') || undefined, also: (p.get('also') || '').split(',').filter(Boolean) };
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (state.focused) p.set('run', state.focused);
    const also = [...state.ticked].filter((id) => id !== state.focused);
    if (also.length) p.set('also', also.join(','));
    history.replaceState(null, '', `#${p.toString()}`);
  }

  // ---- a growing column table per file of a run: x = step
  function newTable() {
    return { x: [], cols: new Map(), total: 0, downsampled: false, badLines: 0 };
  }
  function appendRows(table, rows) {
    for (const row of rows) {
      if (typeof row.step !== 'number') continue;
      const i = table.x.length;
      table.x.push(row.step);
      for (const [k, v] of Object.entries(row)) {
        if (NOT_DRAWN.has(k) || (typeof v !== 'number' && v !== null)) continue;
        let col = table.cols.get(k);
        if (!col) {
          col = new Array(i).fill(null);
          table.cols.set(k, col);
        }
        col.push(v);
      }
      for (const col of table.cols.values()) if (col.length < i + 1) col.push(null);
    }
  }

  // ---- the run list
  async function refreshRuns() {
    try {
      const res = await fetch('/api/runs', { cache: 'no-store' });
      if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
      const body = await res.json();
      state.runs = body.runs;
      state.runsDir = body.runsDir;
      $('#runs-dir').textContent = body.runsDir;
      const none = $('#no-runs');
      none.hidden = body.runs.length > 0;
      none.textContent = body.exists ? 'No runs yet: a folder with metrics.jsonl or a checkpoint appears here as soon as a run writes one.' : `${body.runsDir} does not exist yet.`;
      $('#connection').textContent = '';
      if (!state.focused && body.runs.length > 0) {
        const want = readHash();
        const known = new Set(body.runs.map((r) => r.id));
        focus(want.run && known.has(want.run) ? want.run : body.runs[0].id);
        for (const id of want.also) if (known.has(id)) toggle(id, true);
      }
      renderRunList();
    } catch (err) {
      $('#connection').textContent = `cannot reach the server (${err.message}); retrying`;
    }
  }

  function renderRunList() {
    const body = $('#run-list tbody');
    body.replaceChildren(
      ...state.runs.map((r) =>
        el(
          'tr',
          { class: r.id === state.focused ? 'focused' : '', 'data-run': r.id },
          el('td', {}, el('input', { type: 'checkbox', title: 'overlay this run', checked: state.ticked.has(r.id) || r.id === state.focused, onchange: (e) => toggle(r.id, e.target.checked) })),
          el('td', { class: 'run-name', title: r.id, text: runName(r.id), onclick: () => focus(r.id) }),
          el('td', { text: r.pipeline }),
          el('td', {}, el('span', { class: `status ${r.status}`, text: r.status })),
          el('td', { text: r.step === undefined ? '' : r.totalSteps ? `${r.step} / ${r.totalSteps}` : String(r.step) }),
          el('td', { text: r.status === 'running' ? duration(r.etaSeconds) : '' }),
        ),
      ),
    );
  }

  /** Shows a run; the one shown before stays drawn only if it is ticked. */
  function focus(id) {
    const previous = state.focused;
    state.focused = id;
    open(id);
    if (previous && previous !== id && !state.ticked.has(previous)) shut(previous);
    writeHash();
    renderRunList();
    renderInfo();
    scheduleDraw();
  }

  function toggle(id, on) {
    if (on) {
      state.ticked.add(id);
      open(id);
    } else {
      state.ticked.delete(id);
      if (id !== state.focused) shut(id);
    }
    writeHash();
    renderRunList();
    scheduleDraw();
  }

  function shut(id) {
    const live = state.live.get(id);
    if (live) live.es.close();
    state.live.delete(id);
  }

  // ---- one run's live stream
  function open(id) {
    if (state.live.has(id)) return;
    const live = { es: undefined, metrics: newTable(), memory: newTable(), detail: undefined };
    state.live.set(id, live);
    const es = new EventSource(`/api/stream?id=${encodeURIComponent(id)}`);
    live.es = es;
    es.addEventListener('metrics', (e) => {
      const msg = JSON.parse(e.data);
      if (msg.kind === 'snapshot') {
        const t = newTable();
        t.total = msg.total;
        t.downsampled = msg.downsampled;
        t.badLines = msg.badLines;
        appendRows(t, msg.rows);
        live[msg.file] = t;
      } else {
        appendRows(live[msg.file], msg.rows);
        live[msg.file].total += msg.rows.length;
        // how long after its writing a row arrived here (same clock where the run is on this machine)
        const newest = msg.rows[msg.rows.length - 1];
        const lag = Date.now() - Date.parse(newest && newest.time);
        if (msg.file === 'metrics' && isFinite(lag)) document.body.dataset.maxRowLagMs = String(Math.max(lag, Number(document.body.dataset.maxRowLagMs || 0)));
      }
      scheduleDraw();
    });
    es.addEventListener('detail', (e) => {
      live.detail = JSON.parse(e.data);
      if (id === state.focused) renderInfo();
      const i = state.runs.findIndex((r) => r.id === id);
      if (i >= 0) {
        state.runs[i] = { ...state.runs[i], ...live.detail };
        renderRunList();
      }
      scheduleDraw();
    });
    es.addEventListener('error', () => {
      // EventSource reconnects by itself; the server sends a fresh snapshot then
      $('#connection').textContent = es.readyState === EventSource.CLOSED ? 'stream closed' : 'reconnecting...';
    });
    es.addEventListener('open', () => ($('#connection').textContent = ''));
  }

  // ---- the focused run's facts
  function renderInfo() {
    const box = $('#run-info');
    const live = state.live.get(state.focused);
    const d = (live && live.detail) || state.runs.find((r) => r.id === state.focused);
    if (!d) return box.replaceChildren(el('p', { class: 'muted', text: 'No run chosen.' }));
    const facts = [
      ['pipeline', d.pipeline],
      ['status', el('span', { id: 'run-status', class: `status ${d.status}`, text: d.status })],
      d.message ? [d.status === 'failed' ? 'error' : 'note', d.message] : undefined,
      d.resume ? ['resume with', el('code', { text: d.resume })] : undefined,
      ['backend', [d.backend, d.adapter].filter(Boolean).join(', ') || 'not recorded (no status.json)'],
      d.ranks !== undefined ? ['ranks', d.ranks] : undefined,
      d.started ? ['started', new Date(d.started).toLocaleString()] : undefined,
      ['steps', d.step === undefined ? 'none logged yet' : d.totalSteps ? `${d.step} of ${d.totalSteps} (${((100 * d.step) / d.totalSteps).toFixed(1)}%)` : String(d.step)],
      d.stepsPerSecond ? ['rate', `${fmt(d.stepsPerSecond)} steps/s`] : undefined,
      d.status === 'running' && d.etaSeconds !== undefined ? ['ETA', duration(d.etaSeconds)] : undefined,
      d.lastRowTime ? ['last row', new Date(d.lastRowTime).toLocaleTimeString()] : undefined,
      d.checkpointStep !== undefined ? ['checkpoint', `step ${d.checkpointStep}`] : undefined,
    ].filter(Boolean);
    const children = [el('h2', { text: runName(d.id) }), el('dl', {}, ...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]))];
    if (d.problems && d.problems.length) children.push(el('p', { class: 'problems', text: d.problems.join('; ') }));
    if (d.flags) {
      const rows = Object.entries(d.flags).map(([k, v]) => el('tr', {}, el('td', {}, el('code', { text: `--${k}` })), el('td', { text: typeof v === 'object' ? JSON.stringify(v) : String(v) })));
      children.push(el('details', {}, el('summary', { text: `Flags (${rows.length}, resolved)` }), el('table', { class: 'flags' }, el('tbody', {}, ...rows))));
    }
    if (d.files && d.files.length) {
      const base = d.id === '.' ? '' : `${d.id.split('/').map(encodeURIComponent).join('/')}/`;
      children.push(el('p', {}, 'Files: ', ...d.files.flatMap((f, i) => [i ? ', ' : '', el('a', { href: `/files/${base}${encodeURIComponent(f)}`, target: '_blank', rel: 'noopener', text: f })])));
    }
    box.replaceChildren(...children);
  }

  // ---- charts
  const charts = new Map(); // panel id -> { box, plot, key }
  let drawPending = false;
  let lastDraw = 0;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    // at most one redraw a second: rows come in bursts (--log-every), and drawing costs the run CPU
    const wait = Math.max(0, 1000 - (performance.now() - lastDraw));
    setTimeout(() => requestAnimationFrame(() => {
      drawPending = false;
      lastDraw = performance.now();
      draw();
    }), wait);
  }

  /** The runs drawn: the focused one first, then the ticked ones. */
  function drawnRuns() {
    const ids = [state.focused, ...[...state.live.keys()].filter((id) => id !== state.focused)].filter((id) => id && state.live.has(id));
    return ids.map((id, i) => ({ id, i, live: state.live.get(id) }));
  }

  function draw() {
    const runs = drawnRuns();
    const panels = [];
    // metrics.jsonl panels
    const keys = new Set();
    for (const r of runs) for (const k of r.live.metrics.cols.keys()) keys.add(k);
    const taken = new Set();
    const metricPanels = METRIC_PANELS.map((p) => ({ ...p, keys: [...keys].filter((k) => p.match(k)) }));
    metricPanels.forEach((p) => p.keys.forEach((k) => taken.add(k)));
    for (const k of [...keys].sort()) if (!taken.has(k)) metricPanels.push({ id: `col-${k}`, title: k, keys: [k] });
    for (const p of metricPanels) {
      if (p.keys.length === 0) continue;
      panels.push({ id: p.id, title: p.title, xLabel: 'step', series: runs.flatMap((r) => p.keys.filter((k) => r.live.metrics.cols.has(k)).map((k) => ({ run: r, name: k, x: r.live.metrics.x, y: r.live.metrics.cols.get(k) }))), note: noteFor(runs, 'metrics') });
    }
    // memory.jsonl
    const memKeys = new Set();
    for (const r of runs) for (const k of r.live.memory.cols.keys()) memKeys.add(k);
    if (memKeys.size) panels.push({ id: 'memory', title: 'Memory (MB)', xLabel: 'step', series: runs.flatMap((r) => [...memKeys].filter((k) => r.live.memory.cols.has(k)).map((k) => ({ run: r, name: k, x: r.live.memory.x, y: r.live.memory.cols.get(k) }))) });
    // kNN during refinement: one series per block
    const during = runs.filter((r) => r.live.detail && r.live.detail.knnDuring && r.live.detail.knnDuring.length);
    if (during.length) {
      panels.push({
        id: 'knn-during',
        title: 'Per-block kNN top-1 (%) during refinement (EMA encoder; step 0: the MIM checkpoint)',
        xLabel: 'step',
        points: true,
        series: during.flatMap((r) => {
          const pts = r.live.detail.knnDuring;
          return pts[0].blocks.map((b, bi) => ({ run: r, name: `block ${b}`, x: pts.map((p) => p.step), y: pts.map((p) => 100 * p.top1[bi]) }));
        }),
      });
    }
    // kNN before/after (summary.json, knn.json): x = block
    const reports = runs.filter((r) => r.live.detail && r.live.detail.knnReports);
    if (reports.length) {
      panels.push({
        id: 'knn-blocks',
        title: 'Per-block kNN top-1 (%) before / after (summary.json, knn.json)',
        xLabel: 'block',
        points: true,
        series: reports.flatMap((r) =>
          r.live.detail.knnReports.flatMap((f) =>
            f.reports.flatMap((rep) => [
              { run: r, name: `${rep.label} (test)`, x: rep.blocks, y: rep.top1.map((v) => 100 * v) },
              ...(rep.valTop1 ? [{ run: r, name: `${rep.label} (validation)`, x: rep.blocks, y: rep.valTop1.map((v) => 100 * v) }] : []),
            ]),
          ),
        ),
      });
    }
    // fine-tuning's validation curve
    const val = runs.filter((r) => r.live.detail && r.live.detail.valCurve && r.live.detail.valCurve.length);
    if (val.length) {
      panels.push({ id: 'val-curve', title: 'Validation top-1 (%) at each evaluation', xLabel: 'step', points: true, series: val.map((r) => ({ run: r, name: 'validation top-1', x: r.live.detail.valCurve.map((c) => c.step), y: r.live.detail.valCurve.map((c) => 100 * c.val) })) });
    }
    renderPanels(panels, runs.length > 1);
  }

  function noteFor(runs, file) {
    const notes = [];
    for (const r of runs) {
      const t = r.live[file];
      const pre = runs.length > 1 ? `${runName(r.id)}: ` : '';
      if (t.downsampled) notes.push(`${pre}${t.total} rows: those sent at opening drawn as the min and max of each bucket of steps, later ones as they are`);
      if (t.badLines) notes.push(`${pre}${t.badLines} unreadable line(s) skipped`);
    }
    return notes.join('; ');
  }

  /** Aligns series with different x onto one sorted x (uPlot draws one x per chart). */
  function align(series) {
    if (series.every((s) => s.x === series[0].x)) return [series[0].x, ...series.map((s) => s.y)];
    const xs = [...new Set(series.flatMap((s) => s.x))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    return [xs, ...series.map((s) => {
      const y = new Array(xs.length).fill(null);
      s.x.forEach((x, i) => (y[index.get(x)] = s.y[i]));
      return y;
    })];
  }

  function renderPanels(panels, overlay) {
    const container = $('#charts');
    const wanted = new Set(panels.map((p) => p.id));
    for (const [id, c] of charts) {
      if (!wanted.has(id)) {
        c.plot && c.plot.destroy();
        c.box.remove();
        charts.delete(id);
      }
    }
    panels.forEach((p, order) => {
      let c = charts.get(p.id);
      if (!c) {
        const box = el('div', { class: 'panel', 'data-panel': p.id }, el('h3', { text: p.title }), el('p', { class: 'note' }), el('div', { class: 'plot' }));
        c = { box, plot: undefined, key: '' };
        charts.set(p.id, c);
      }
      if (container.children[order] !== c.box) container.insertBefore(c.box, container.children[order] || null);
      c.box.querySelector('.note').textContent = p.note || '';
      if (p.series.length === 0) return;
      const data = align(p.series);
      // points of the focused run's first series: what the page has drawn (read by the browser spec)
      c.box.dataset.points = String(p.series[0].run.i === 0 ? p.series[0].x.length : 0);
      const names = p.series.map((s) => (overlay ? `${runName(s.run.id)}: ${s.name}` : s.name));
      const key = names.join('\n');
      const width = Math.max(300, c.box.clientWidth - 14);
      if (c.plot && c.key === key) {
        c.plot.setData(data);
        if (Math.abs(c.plot.width - width) > 2) c.plot.setSize({ width, height: 220 });
        return;
      }
      c.plot && c.plot.destroy();
      c.key = key;
      const colourOf = new Map();
      c.plot = new uPlot(
        {
          width,
          height: 220,
          scales: { x: { time: false } },
          axes: [{ label: p.xLabel }, { size: 64, values: (_u, ticks) => ticks.map(tick) }],
          cursor: { drag: { x: true, y: false } },
          series: [
            { label: p.xLabel },
            ...p.series.map((s, i) => {
              if (!colourOf.has(s.name)) colourOf.set(s.name, PALETTE[colourOf.size % PALETTE.length]);
              return {
                label: names[i],
                stroke: colourOf.get(s.name),
                width: 1.25,
                dash: DASHES[s.run.i % DASHES.length],
                spanGaps: true,
                points: { show: Boolean(p.points) },
                value: (_u, v) => (v === null || v === undefined ? '-' : fmt(v)),
              };
            }),
          ],
        },
        data,
        c.box.querySelector('.plot'),
      );
    });
  }

  window.addEventListener('resize', scheduleDraw);
  refreshRuns();
  setInterval(refreshRuns, 2000);
})();
