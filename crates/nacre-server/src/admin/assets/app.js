// The Nacre dashboard (docs/operations.md, "Dashboard"). Polls this node's
// /api/cluster and /api/samples once a second, /api/scripts every few
// seconds, and /api/keys on demand. Data is only ever put in the page as
// text (textContent), never as markup.
'use strict';
(() => {
  const POLL_MS = 1000;
  const SCRIPTS_EVERY_POLLS = 5;
  const FETCH_TIMEOUT_MS = 2500;
  const KEYS_LIMIT = 50;
  const CHART_WINDOW_MS = 10 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const cell = (text, cls) => el('td', text === undefined || text === null ? '–' : text, cls);
  const clock = (ms) => new Date(ms).toLocaleTimeString();

  async function getJson(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(path, { cache: 'no-store', signal: ctl.signal });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || 'HTTP ' + r.status);
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  // Bytes from the API ({encoding, data, len, truncated}) as a text node
  // tree: base64 gets a marker, a cut value says how long it was.
  function shown(s) {
    const span = el('span');
    if (s.encoding === 'text') {
      span.append(el('span', s.data, 'data'));
    } else {
      span.append(el('span', 'base64', 'marker'), el('span', s.data, 'data'));
    }
    if (s.truncated) span.append(el('span', '… (' + s.len + ' bytes)', 'marker'));
    return span;
  }

  // The leader: the member that says it leads in the highest term.
  function findLeader(members) {
    let best = null;
    for (const m of members) {
      const s = m.status;
      if (s && s.role === 'leader' && (!best || s.term > best.status.term)) best = m;
    }
    return best;
  }

  function memberRow(m, leader) {
    const s = m.status;
    const tr = el('tr');
    tr.dataset.name = m.name;
    const lag = leader && leader.status.members.find((x) => x.name === m.name);
    if (s) {
      const health = s.health.reason ? s.health.reason : 'ok';
      const keys = s.store.user_keys;
      tr.append(cell(m.name + (m.this_node ? ' (this node)' : '')), cell(s.role, 'role'),
        cell(s.term, 'num'), cell(s.applied_index, 'num applied'), cell(s.commit_index, 'num'),
        cell(lag ? lag.lag_entries : null, 'num lag'), cell(health, 'health'), cell(keys, 'num'));
    } else {
      tr.className = 'down';
      const why = el('td', m.error || 'unreachable', 'health');
      why.colSpan = 2;
      tr.append(cell(m.name), cell('unreachable', 'role'), cell(null), cell(null), cell(null),
        cell(lag ? lag.lag_entries : null, 'num lag'), why);
    }
    if (leader && m.name === leader.name) tr.classList.add('leader');
    return tr;
  }

  let everShown = false;
  function showCluster(c) {
    $('node').textContent = c.node;
    const leader = findLeader(c.members);
    $('leader').textContent = leader ? leader.name : 'none known';
    $('term').textContent = leader ? '(term ' + leader.status.term + ')' : '';
    $('members').tBodies[0].replaceChildren(...c.members.map((m) => memberRow(m, leader)));
    if (!everShown) {
      everShown = true;
      window.nacreMembersShownMs = performance.now();
    }
  }

  function setConnection(ok, text) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'conn ' + (ok ? 'ok' : 'bad');
    document.body.classList.toggle('stale', !ok);
  }

  // A line chart of `series` over the samples' times, on a canvas.
  function drawChart(canvas, samples, series) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const now = samples.length ? samples[samples.length - 1].at_ms : Date.now();
    const from = now - CHART_WINDOW_MS;
    let max = 0;
    for (const s of samples) for (const k of series) max = Math.max(max, s[k.key] || 0);
    const top = max > 0 ? max * 1.15 : 1;
    const x = (t) => ((t - from) / CHART_WINDOW_MS) * (w - 2) + 1;
    const y = (v) => h - 14 - (v / top) * (h - 26);
    g.font = '10px sans-serif';
    g.fillStyle = '#888';
    g.fillText('max ' + (max < 10 ? max.toFixed(2) : Math.round(max)), 3, 10);
    g.fillText('-10 min', 3, h - 2);
    g.fillText('now', w - 22, h - 2);
    g.strokeStyle = '#eee';
    g.beginPath(); g.moveTo(0, y(0)); g.lineTo(w, y(0)); g.stroke();
    for (const k of series) {
      g.strokeStyle = k.color;
      g.lineWidth = 1.5;
      g.beginPath();
      let open = false;
      for (const s of samples) {
        const v = s[k.key];
        if (v === null || v === undefined) { open = false; continue; }
        if (open) g.lineTo(x(s.at_ms), y(v)); else g.moveTo(x(s.at_ms), y(v));
        open = true;
      }
      g.stroke();
      // A dot on each point, so that a lone sample shows too.
      g.fillStyle = k.color;
      for (const s of samples) {
        const v = s[k.key];
        if (v !== null && v !== undefined) g.fillRect(x(s.at_ms) - 1, y(v) - 1, 2, 2);
      }
    }
  }

  function showSamples(v) {
    const s = v.samples;
    drawChart($('chart-requests'), s, [{ key: 'requests_per_s', color: '#36c' }]);
    drawChart($('chart-applied'), s, [{ key: 'applied_per_s', color: '#393' }]);
    drawChart($('chart-latency'), s, [
      { key: 'latency_p50_ms', color: '#36c' },
      { key: 'latency_p99_ms', color: '#c63' },
    ]);
    const items = v.leader_changes.slice().reverse().map((c) => {
      const who = c.leader_id === 0 ? 'no leader' : (c.leader || '#' + c.leader_id);
      const li = el('li', clock(c.at_ms) + ' — ' + who + ' (term ' + c.term + ')');
      li.dataset.leader = c.leader || '';
      return li;
    });
    $('leader-changes').replaceChildren(...items);
  }

  function showScripts(v) {
    const rows = v.scripts.map((s) => {
      const tr = el('tr');
      tr.append(cell(s.name), cell(s.live === 0 ? 'deleted' : s.live, 'num'), cell(s.latest, 'num'));
      return tr;
    });
    $('scripts').tBodies[0].replaceChildren(...rows);
  }

  // The key browser: a prefix, then pages after the last key shown.
  let keysQuery = null;
  async function loadKeys(after) {
    const q = new URLSearchParams({ prefix: keysQuery, limit: String(KEYS_LIMIT) });
    if (after) q.set('after_b64', after);
    const info = $('keys-info');
    try {
      const page = await getJson('/api/keys?' + q.toString());
      const rows = page.keys.map((k) => {
        const tr = el('tr');
        const key = el('td', null, 'key');
        key.append(shown(k.key));
        const value = el('td', null, 'value');
        value.append(shown(k.value));
        tr.append(key, value, cell(k.create_revision, 'num'), cell(k.mod_revision, 'num'),
          cell(k.version, 'num'));
        return tr;
      });
      $('keys').tBodies[0].replaceChildren(...rows);
      const next = $('keys-next');
      next.disabled = !page.more;
      next.dataset.after = page.next_after_b64 || '';
      info.textContent = page.keys.length + ' keys' + (page.more ? ', more follow' : '') +
        '; read from this node at applied index ' + page.applied_index_at_least + ' or later';
    } catch (e) {
      info.textContent = 'keys: ' + e.message;
    }
  }

  $('keys-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    keysQuery = $('prefix').value;
    loadKeys(null);
  });
  $('keys-next').addEventListener('click', () => loadKeys($('keys-next').dataset.after));

  let polls = 0;
  let lastOkMs = null;
  async function poll() {
    const [cluster, samples] = await Promise.allSettled([
      getJson('/api/cluster'), getJson('/api/samples'),
    ]);
    if (cluster.status === 'fulfilled') {
      showCluster(cluster.value);
      lastOkMs = Date.now();
      setConnection(true, 'live, ' + clock(lastOkMs));
    } else {
      const since = lastOkMs ? 'stale since ' + clock(lastOkMs) : 'no answer yet';
      setConnection(false, 'this node is unreachable (' + since + ')');
    }
    if (samples.status === 'fulfilled') showSamples(samples.value);
    if (polls % SCRIPTS_EVERY_POLLS === 0) {
      getJson('/api/scripts').then(showScripts, () => {});
    }
    polls += 1;
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
