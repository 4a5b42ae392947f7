'use strict';
// The kedge dashboard. It reads the Kubernetes API through /k8s/ as the signed-in user: each
// kind is listed page by page (the first page shows at once), then followed through its watch
// as server-sent events. Every value reaches the page as text (textContent), never as markup.

const PAGE = 100; // rows on a page, and the first list's size
const BATCH = 1000; // the next lists' size

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

async function api(path, init) {
  const r = await fetch('/k8s' + path, init);
  if (r.status === 401) {
    location.reload();
    throw new Error('signed out');
  }
  const text = await r.text();
  if (!r.ok) {
    let msg = text;
    try {
      msg = JSON.parse(text).message || text;
    } catch (_) {
      // not JSON: the text itself
    }
    const e = new Error(`${r.status}: ${msg}`);
    e.status = r.status;
    throw e;
  }
  return JSON.parse(text);
}

// One kind: its objects by namespace/name, kept current from the API's watch.
class Informer {
  constructor(path) {
    this.path = path;
    this.items = new Map();
    this.rv = '';
    this.synced = false;
    this.error = '';
    this.subs = new Set();
    this.started = false;
    this.lastTold = -Infinity;
    this.firstPage = new Promise((resolve) => {
      this.gotFirstPage = resolve;
    });
  }

  static key(o) {
    const m = o.metadata || {};
    return (m.namespace ? m.namespace + '/' : '') + m.name;
  }

  subscribe(f) {
    this.subs.add(f);
    if (!this.started) {
      this.started = true;
      this.list();
    }
    return () => this.subs.delete(f);
  }

  // Tells the pages at once, then at most every 100 ms (a busy watch does not redraw a page
  // for each event).
  changed() {
    if (this.timer) return;
    const wait = Math.max(0, this.lastTold + 100 - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.lastTold = performance.now();
      for (const f of this.subs) f();
    }, wait);
  }

  async list() {
    // The first load shows as it arrives; a later one (the watch fell too far behind) replaces
    // the objects once complete.
    const fresh = this.synced ? new Map() : this.items;
    let cont = '';
    let limit = PAGE;
    try {
      do {
        const q = `limit=${limit}` + (cont ? '&continue=' + encodeURIComponent(cont) : '');
        const r = await api(`${this.path}?${q}`);
        for (const o of r.items || []) fresh.set(Informer.key(o), o);
        // Every page of a list is of its first page's version: the watch starts there.
        if (!cont) this.rv = r.metadata.resourceVersion;
        cont = r.metadata.continue || '';
        limit = BATCH;
        if (!this.synced) this.changed();
        this.gotFirstPage();
      } while (cont);
    } catch (e) {
      this.error = e.message;
      this.gotFirstPage();
      this.changed();
      // Forbidden or not served (a token without that right, a cluster without the CRD) will
      // not change soon: ask again far less often than after a failure on the way.
      const settled = e.status === 403 || e.status === 404;
      setTimeout(() => this.list(), settled ? 30000 : 2000);
      return;
    }
    this.items = fresh;
    this.synced = true;
    this.error = '';
    this.changed();
    this.watch();
  }

  watch() {
    const q = `watch=1&allowWatchBookmarks=true&timeoutSeconds=240&resourceVersion=${encodeURIComponent(this.rv)}`;
    const es = new EventSource(`/k8s${this.path}?${q}`);
    let heard = false;
    es.onmessage = (m) => {
      heard = true;
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      const o = ev.object || {};
      if (ev.type === 'ERROR') {
        // Too old a version (410): list again.
        es.close();
        this.list();
        return;
      }
      if (o.metadata && o.metadata.resourceVersion) this.rv = o.metadata.resourceVersion;
      if (ev.type === 'BOOKMARK') return;
      if (ev.type === 'DELETED') this.items.delete(Informer.key(o));
      else this.items.set(Informer.key(o), o);
      this.changed();
    };
    es.onerror = () => {
      es.close();
      // A watch that ran and ended (its timeout, a restart) goes on from the last version; one
      // refused at once starts again from a list.
      if (heard) this.watch();
      else setTimeout(() => this.list(), 1000);
    };
  }
}

const K = {
  nodes: new Informer('/api/v1/nodes'),
  leases: new Informer('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases'),
  pods: new Informer('/api/v1/pods'),
  devices: new Informer('/apis/devices.kubeedge.io/v1beta1/devices'),
  statuses: new Informer('/apis/devices.kubeedge.io/v1beta1/devicestatuses'),
  rules: new Informer('/apis/rules.kubeedge.io/v1/rules'),
  endpoints: new Informer('/apis/rules.kubeedge.io/v1/ruleendpoints'),
  events: new Informer('/api/v1/events'),
};

// A table whose rows are kept by key: a row (and what is typed into it) stays while its object
// does; only changed cells are written.
class Table {
  constructor(parent, id, columns) {
    this.cols = columns;
    this.rows = new Map();
    this.tbody = el('tbody');
    const head = el('tr', {}, ...columns.map((c) => el('th', {}, c.title)));
    parent.append(el('table', { id }, el('thead', {}, head), this.tbody));
  }

  row(key, data) {
    let tr = this.rows.get(key);
    if (!tr) {
      tr = el('tr');
      tr.dataset.key = key;
      tr.tds = this.cols.map((c) => {
        const td = el('td', { class: c.wrap ? 'wrap' : '' });
        td.dataset.col = c.id;
        if (c.link) td.append(el('a'));
        if (c.make) td.append(c.make(data));
        tr.append(td);
        return td;
      });
      this.rows.set(key, tr);
    }
    this.cols.forEach((c, i) => {
      const td = tr.tds[i];
      const target = c.link ? td.firstChild : td;
      if (c.link) target.setAttribute('href', c.link(data));
      if (c.text) {
        const v = String(c.text(data) ?? '');
        if (target.textContent !== v) target.textContent = v;
      }
      if (c.cls) td.className = c.cls(data) || '';
      if (c.update) c.update(data, td);
    });
    return tr;
  }

  show(rows) {
    const seen = new Set();
    let prev = null;
    for (const { key, data } of rows) {
      seen.add(key);
      const tr = this.row(key, data);
      const want = prev ? prev.nextSibling : this.tbody.firstChild;
      if (want !== tr) this.tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [k, tr] of this.rows) {
      if (!seen.has(k)) {
        tr.remove();
        this.rows.delete(k);
      }
    }
  }
}

// A search box, a filter and page buttons over a table.
class Paged {
  constructor(parent, id, columns, filters) {
    this.page = 0;
    this.search = el('input', { id: id + '-search', type: 'search', placeholder: 'search' });
    this.filter = el('select', { id: id + '-filter' }, ...filters.map((f) => el('option', { value: f }, f || 'all')));
    this.where = el('span', { class: 'muted', id: id + '-where' });
    const prev = el('button', { id: id + '-prev' }, '‹ previous');
    const next = el('button', { id: id + '-next' }, 'next ›');
    parent.append(el('div', { class: 'tools' }, this.search, this.filter, prev, this.where, next));
    this.table = new Table(parent, id, columns);
    this.search.oninput = () => this.turn(-Infinity);
    this.filter.onchange = () => this.turn(-Infinity);
    prev.onclick = () => this.turn(-1);
    next.onclick = () => this.turn(1);
  }

  turn(by) {
    this.page = by === -Infinity ? 0 : Math.max(0, this.page + by);
    if (this.render) this.render();
  }

  // rows: [{key, data, text (searched), tag (filtered)}], sorted.
  show(rows) {
    const q = this.search.value.trim().toLowerCase();
    const f = this.filter.value;
    const shown = rows.filter((r) => (!q || r.text.toLowerCase().includes(q)) && (!f || r.tag === f));
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    this.page = Math.min(this.page, pages - 1);
    const from = this.page * PAGE;
    const slice = shown.slice(from, from + PAGE);
    this.where.textContent = shown.length ? `${from + 1}–${from + slice.length} of ${shown.length}` : 'none';
    this.table.show(slice);
  }
}

const cond = (o, type) => ((o.status || {}).conditions || []).find((c) => c.type === type);
const isReady = (n) => (cond(n, 'Ready') || {}).status === 'True';
const byName = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

function when(t) {
  if (t === undefined || t === null || t === '') return '';
  const d = typeof t === 'number' ? new Date(t) : new Date(/^\d+$/.test(t) ? Number(t) : t);
  if (isNaN(d)) return String(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function ago(t) {
  if (!t) return '';
  const s = Math.round((Date.now() - new Date(t)) / 1000);
  if (isNaN(s)) return '';
  if (s < 120) return `${Math.max(s, 0)} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function markOnce(name) {
  if (!performance.getEntriesByName(name).length) performance.mark(name);
}

function countBy(informer, keyOf) {
  const n = new Map();
  for (const o of informer.items.values()) {
    const k = keyOf(o);
    if (k) n.set(k, (n.get(k) || 0) + 1);
  }
  return n;
}

function loading(...kinds) {
  const errors = kinds.map((k) => K[k].error).filter(Boolean);
  if (errors.length) return `(${errors[0]})`;
  return kinds.every((k) => K[k].synced) ? '' : '(loading…)';
}

// --- the pages ---

let stops = [];

// Subscribes `render` to the kinds: the first (what the page is about) at once, the others once
// its first page is in, so that page is not queued behind their lists.
function follow(kinds, render) {
  const [first, ...rest] = kinds;
  stops.push(K[first].subscribe(render));
  let stopped = false;
  stops.push(() => {
    stopped = true;
  });
  K[first].firstPage.then(() => {
    if (!stopped) for (const k of rest) stops.push(K[k].subscribe(render));
  });
  render();
}

function total(label, id) {
  const b = el('b', { id });
  return [el('div', {}, b, label), b];
}

const VIEWS = {};

VIEWS[''] = (main) => {
  const [nodesBox, nodesN] = total('nodes', 'total-nodes');
  const [readyBox, readyN] = total('Ready', 'total-ready');
  const [notBox, notN] = total('not Ready', 'total-notready');
  const [podsBox, podsN] = total('pods', 'total-pods');
  const [devBox, devN] = total('devices', 'total-devices');
  const note = el('span', { class: 'muted' });
  main.append(
    el('h2', {}, 'Fleet ', note),
    el('div', { class: 'totals' }, nodesBox, readyBox, notBox, podsBox, devBox),
  );
  const canvas = el('canvas', { id: 'chart', width: 720, height: 150 });
  main.append(canvas);
  stops.push(chart(canvas));
  const leaseOf = (name) => (K.leases.items.get('kube-node-lease/' + name) || { spec: {} }).spec;
  const list = new Paged(main, 'fleet', [
    { id: 'name', title: 'node', link: (r) => '#/node/' + encodeURIComponent(r.n.metadata.name), text: (r) => r.n.metadata.name },
    { id: 'ready', title: 'Ready', text: (r) => (isReady(r.n) ? 'Ready' : 'NotReady'), cls: (r) => (isReady(r.n) ? 'ok' : 'bad') },
    { id: 'since', title: 'connected since', text: (r) => (isReady(r.n) ? when((cond(r.n, 'Ready') || {}).lastTransitionTime) : '') },
    { id: 'heartbeat', title: 'last heartbeat', text: (r) => ago(leaseOf(r.n.metadata.name).renewTime) },
    { id: 'version', title: 'version', text: (r) => ((r.n.status || {}).nodeInfo || {}).kubeletVersion },
    { id: 'pods', title: 'pods', text: (r) => r.pods },
    { id: 'devices', title: 'devices', text: (r) => r.devices },
    { id: 'replica', title: 'cloud replica', text: (r) => (r.n.metadata.annotations || {})['kedge.io/cloud-replica'] || '' },
  ], ['', 'Ready', 'NotReady']);
  const render = () => {
    const pods = countBy(K.pods, (p) => (p.spec || {}).nodeName);
    const devices = countBy(K.devices, (d) => (d.spec || {}).nodeName);
    const nodes = [...K.nodes.items.values()];
    const ready = nodes.filter(isReady).length;
    nodesN.textContent = nodes.length;
    readyN.textContent = ready;
    notN.textContent = nodes.length - ready;
    podsN.textContent = K.pods.items.size;
    devN.textContent = K.devices.items.size;
    note.textContent = loading('nodes', 'pods', 'devices');
    const rows = nodes.map((n) => {
      const name = n.metadata.name;
      const r = { n, pods: pods.get(name) || 0, devices: devices.get(name) || 0 };
      return { key: name, data: r, text: name, tag: isReady(n) ? 'Ready' : 'NotReady' };
    });
    list.show(rows.sort(byName));
    // For kedge-bench: when the first rows showed, and when the whole fleet was listed.
    if (rows.length) markOnce('kedge-fleet-first-rows');
    if (K.nodes.synced) markOnce('kedge-fleet-listed');
  };
  list.render = render;
  follow(['nodes', 'leases', 'pods', 'devices'], render);
};

VIEWS.node = (main, [name]) => {
  const note = el('span', { class: 'muted' });
  main.append(el('h2', {}, 'Node ', el('span', { id: 'node-name' }, name), ' ', note));
  const facts = new Table(main, 'node-facts', [
    { id: 'what', title: '', text: (r) => r[0] },
    { id: 'value', title: '', text: (r) => r[1], wrap: true },
  ]);
  main.append(el('h3', {}, 'Pods'));
  const pods = new Table(main, 'node-pods', podColumns(false));
  main.append(el('h3', {}, 'Devices'));
  const devices = new Table(main, 'node-devices', [
    { id: 'name', title: 'device', link: () => '#/devices/' + encodeURIComponent(name), text: (d) => Informer.key(d) },
    { id: 'model', title: 'model', text: (d) => ((d.spec || {}).deviceModelRef || {}).name },
    { id: 'properties', title: 'properties', text: (d) => ((d.spec || {}).properties || []).map((p) => p.name).join(', ') },
  ]);
  main.append(el('h3', {}, 'Recent events'));
  const events = new Table(main, 'node-events', eventColumns());
  const render = () => {
    const n = K.nodes.items.get(name);
    note.textContent = n ? loading('nodes') : K.nodes.synced ? '(no such node)' : '(loading…)';
    const info = ((n || {}).status || {}).nodeInfo || {};
    const ready = cond(n || {}, 'Ready') || {};
    const lease = (K.leases.items.get('kube-node-lease/' + name) || { spec: {} }).spec;
    facts.show([
      ['Ready', `${ready.status === 'True' ? 'Ready' : 'NotReady'} since ${when(ready.lastTransitionTime)} (${ready.reason || ''})`],
      ['last heartbeat', `${when(lease.renewTime)} (${ago(lease.renewTime)})`],
      ['version', info.kubeletVersion],
      ['system', `${info.osImage || ''} ${info.architecture || ''}, kernel ${info.kernelVersion || ''}`],
      ['addresses', (((n || {}).status || {}).addresses || []).map((a) => `${a.type} ${a.address}`).join(', ')],
      ['cloud replica', ((n || { metadata: {} }).metadata.annotations || {})['kedge.io/cloud-replica'] || ''],
    ].map((r) => ({ key: r[0], data: r })));
    const on = [...K.pods.items.values()].filter((p) => (p.spec || {}).nodeName === name);
    pods.show(on.map((p) => ({ key: Informer.key(p), data: p })).sort(byName));
    const devs = [...K.devices.items.values()].filter((d) => (d.spec || {}).nodeName === name);
    devices.show(devs.map((d) => ({ key: Informer.key(d), data: d })).sort(byName));
    const podNames = new Set(on.map((p) => Informer.key(p)));
    const mine = (e) => {
      const o = e.involvedObject || {};
      return (o.kind === 'Node' && o.name === name) || podNames.has(`${o.namespace}/${o.name}`) || (e.source || {}).host === name;
    };
    events.show(recentEvents((e) => mine(e), 50));
  };
  follow(['nodes', 'leases', 'pods', 'devices', 'events'], render);
};

function podColumns(withNode) {
  const ready = (p) => {
    const cs = (p.status || {}).containerStatuses || [];
    return `${cs.filter((c) => c.ready).length}/${((p.spec || {}).containers || []).length}`;
  };
  const restarts = (p) => ((p.status || {}).containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
  const cols = [
    { id: 'name', title: 'pod', text: (p) => Informer.key(p) },
    { id: 'phase', title: 'status', text: (p) => (p.status || {}).phase || 'Pending', cls: (p) => ((p.status || {}).phase === 'Running' ? 'ok' : (p.status || {}).phase === 'Failed' ? 'bad' : '') },
    { id: 'ready', title: 'ready', text: ready },
    { id: 'restarts', title: 'restarts', text: restarts },
    { id: 'started', title: 'started', text: (p) => when((p.status || {}).startTime) },
  ];
  if (withNode) {
    const node = (p) => (p.spec || {}).nodeName || '';
    cols.splice(1, 0, { id: 'node', title: 'node', link: (p) => '#/node/' + encodeURIComponent(node(p)), text: node });
  }
  return cols;
}

VIEWS.pods = (main) => {
  const note = el('span', { class: 'muted' });
  main.append(el('h2', {}, 'Pods ', note));
  const list = new Paged(main, 'pods', podColumns(true), ['', 'Running', 'Pending', 'Succeeded', 'Failed']);
  const render = () => {
    note.textContent = loading('pods');
    const rows = [...K.pods.items.values()].map((p) => {
      const key = Informer.key(p);
      return { key, data: p, text: `${key} ${(p.spec || {}).nodeName || ''}`, tag: (p.status || {}).phase || 'Pending' };
    });
    list.show(rows.sort(byName));
  };
  list.render = render;
  follow(['pods'], render);
};

function eventTime(e) {
  return e.lastTimestamp || e.eventTime || (e.metadata || {}).creationTimestamp || '';
}

function recentEvents(keep, n) {
  const all = [...K.events.items.values()].filter(keep);
  all.sort((a, b) => (eventTime(a) < eventTime(b) ? 1 : -1));
  return all.slice(0, n).map((e) => ({ key: Informer.key(e), data: e }));
}

function eventColumns() {
  return [
    { id: 'time', title: 'time', text: (e) => when(eventTime(e)) },
    { id: 'type', title: 'type', text: (e) => e.type, cls: (e) => (e.type === 'Warning' ? 'bad' : '') },
    { id: 'reason', title: 'reason', text: (e) => e.reason },
    { id: 'object', title: 'object', text: (e) => `${(e.involvedObject || {}).kind || ''} ${(e.involvedObject || {}).namespace || ''}/${(e.involvedObject || {}).name || ''}` },
    { id: 'count', title: 'count', text: (e) => e.count || 1 },
    { id: 'message', title: 'message', text: (e) => e.message, wrap: true },
  ];
}

VIEWS.events = (main) => {
  const note = el('span', { class: 'muted' });
  main.append(el('h2', {}, 'Events (the latest 200) ', note));
  const table = new Table(main, 'events', eventColumns());
  follow(['events'], () => {
    note.textContent = loading('events');
    table.show(recentEvents(() => true, 200));
  });
};

// --- devices ---

// When this page first saw each value (a value without a timestamp of its own).
const seen = new Map();

function seenAt(key, value) {
  const s = seen.get(key);
  if (s && s.value === value) return s.at;
  const at = Date.now();
  seen.set(key, { value, at });
  return at;
}

// Each property of each device: desired (the Device), reported (its DeviceStatus, or the
// Device's own status for a v1alpha2 one).
function deviceRows(node) {
  const rows = [];
  for (const d of K.devices.items.values()) {
    const spec = d.spec || {};
    if (node && spec.nodeName !== node) continue;
    const key = Informer.key(d);
    const st = K.statuses.items.get(key);
    const twins = new Map();
    for (const t of (d.status || {}).twins || []) twins.set(t.propertyName, t);
    for (const t of ((st || {}).status || {}).twins || []) twins.set(t.propertyName, t);
    const names = (spec.properties || []).map((p) => p.name);
    for (const n of twins.keys()) if (!names.includes(n)) names.push(n);
    for (const name of names) {
      const prop = (spec.properties || []).find((p) => p.name === name) || {};
      const desired = prop.desired || {};
      const reported = (twins.get(name) || {}).reported || {};
      const k = `${key}/${name}`;
      const stamp = (v, side) => ((v.metadata || {}).timestamp ? Number(v.metadata.timestamp) : seenAt(`${k}/${side}`, v.value));
      rows.push({
        key: k,
        data: {
          device: d, key, node: spec.nodeName || '', name,
          desired: desired.value, desiredAt: desired.value === undefined ? '' : stamp(desired, 'd'),
          reported: reported.value, reportedAt: reported.value === undefined ? '' : stamp(reported, 'r'),
        },
      });
    }
  }
  return rows.sort(byName);
}

async function setDesired(device, name, value) {
  const props = (device.spec || {}).properties;
  const i = (props || []).findIndex((p) => p.name === name);
  let ops;
  if (!props) ops = [{ op: 'add', path: '/spec/properties', value: [{ name, desired: { value } }] }];
  else if (i < 0) ops = [{ op: 'add', path: '/spec/properties/-', value: { name, desired: { value } } }];
  else {
    // The index is checked: the list may have changed since this page read it.
    ops = [{ op: 'test', path: `/spec/properties/${i}/name`, value: name }];
    if (props[i].desired) ops.push({ op: 'replace', path: `/spec/properties/${i}/desired/value`, value });
    else ops.push({ op: 'add', path: `/spec/properties/${i}/desired`, value: { value } });
  }
  const m = device.metadata;
  await api(`/apis/devices.kubeedge.io/v1beta1/namespaces/${encodeURIComponent(m.namespace)}/devices/${encodeURIComponent(m.name)}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json-patch+json', 'x-kedge-dashboard': '1' },
    body: JSON.stringify(ops),
  });
}

function editor(r) {
  const input = el('input', { type: 'text', 'aria-label': `desired ${r.name}` });
  const status = el('span', { class: 'muted' });
  const send = async () => {
    const row = input.closest('tr');
    const data = row && row.data;
    if (!data || input.value === '') return;
    status.textContent = 'setting…';
    try {
      await setDesired(data.device, data.name, input.value);
      status.textContent = 'set';
      input.value = '';
    } catch (e) {
      status.textContent = e.message;
    }
  };
  input.onkeydown = (e) => {
    if (e.key === 'Enter') send();
  };
  return el('span', { class: 'edit' }, input, ' ', el('button', { onclick: send }, 'set'), ' ', status);
}

VIEWS.devices = (main, [node]) => {
  const note = el('span', { class: 'muted' });
  main.append(el('h2', {}, 'Devices', node ? ` on ${node} ` : ' ', note));
  const table = new Table(main, 'devices', [
    { id: 'device', title: 'device', text: (r) => r.key },
    { id: 'node', title: 'node', link: (r) => '#/node/' + encodeURIComponent(r.node), text: (r) => r.node },
    { id: 'property', title: 'property', text: (r) => r.name },
    { id: 'desired', title: 'desired', text: (r) => r.desired ?? '', wrap: true },
    { id: 'desired-at', title: 'desired set', text: (r) => when(r.desiredAt) },
    { id: 'reported', title: 'reported', text: (r) => r.reported ?? '', wrap: true },
    { id: 'reported-at', title: 'reported at', text: (r) => when(r.reportedAt) },
    { id: 'edit', title: 'set desired', make: editor, update: (r, td) => { td.parentNode.data = r; } },
  ]);
  follow(['devices', 'statuses'], () => {
    note.textContent = loading('devices', 'statuses');
    table.show(deviceRows(node));
  });
};

// --- rules ---

const resource = (r) => Object.entries(r || {}).map(([k, v]) => `${k}=${v}`).join(' ');

VIEWS.rules = (main) => {
  const note = el('span', { class: 'muted' });
  main.append(el('h2', {}, 'Rules ', note));
  const rules = new Table(main, 'rules', [
    { id: 'name', title: 'rule', text: (r) => Informer.key(r) },
    { id: 'from', title: 'from', text: (r) => `${(r.spec || {}).source || ''} ${resource((r.spec || {}).sourceResource)}`, wrap: true },
    { id: 'to', title: 'to', text: (r) => `${(r.spec || {}).target || ''} ${resource((r.spec || {}).targetResource)}`, wrap: true },
    { id: 'success', title: 'succeeded', text: (r) => (r.status || {}).successMessages || 0, cls: () => 'ok' },
    { id: 'fail', title: 'failed', text: (r) => (r.status || {}).failMessages || 0, cls: (r) => ((r.status || {}).failMessages ? 'bad' : '') },
    { id: 'errors', title: 'last errors', text: (r) => ((r.status || {}).errors || []).slice(-3).join(' · '), wrap: true },
  ]);
  main.append(el('h3', {}, 'Endpoints'));
  const endpoints = new Table(main, 'endpoints', [
    { id: 'name', title: 'endpoint', text: (e) => Informer.key(e) },
    { id: 'type', title: 'type', text: (e) => (e.spec || {}).ruleEndpointType },
    { id: 'properties', title: 'properties', text: (e) => resource((e.spec || {}).properties), wrap: true },
  ]);
  follow(['rules', 'endpoints'], () => {
    note.textContent = loading('rules', 'endpoints');
    rules.show([...K.rules.items.values()].map((r) => ({ key: Informer.key(r), data: r })).sort(byName));
    endpoints.show([...K.endpoints.items.values()].map((e) => ({ key: Informer.key(e), data: e })).sort(byName));
  });
};

// --- the chart: messages per second and connected nodes over the last hour ---

function chart(canvas) {
  let points = [];
  const es = new EventSource('/metrics/stream');
  es.addEventListener('history', (m) => {
    points = JSON.parse(m.data);
    draw(canvas, points);
  });
  es.onmessage = (m) => {
    points.push(JSON.parse(m.data));
    const from = Date.now() - 3600e3;
    while (points.length && points[0].at < from) points.shift();
    draw(canvas, points);
  };
  draw(canvas, points);
  return () => es.close();
}

function draw(canvas, points) {
  canvas.dataset.points = points.length;
  canvas.dataset.connected = points.length ? points[points.length - 1].connected : '';
  const g = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  const pad = { l: 40, r: 40, t: 22, b: 16 };
  g.clearRect(0, 0, w, h);
  const to = Date.now();
  const from = to - 3600e3;
  const x = (t) => pad.l + ((t - from) / 3600e3) * (w - pad.l - pad.r);
  const top = (k) => Math.max(1, ...points.map((p) => p[k]));
  const series = [
    ['rate', '#1f6feb', 'messages/s'],
    ['connected', '#2da44e', 'connected nodes'],
  ];
  g.font = '12px system-ui, sans-serif';
  g.strokeStyle = '#d0d7de';
  g.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  series.forEach(([k, color, label], i) => {
    const max = top(k);
    const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
    g.strokeStyle = color;
    g.fillStyle = color;
    g.beginPath();
    points.forEach((p, j) => (j ? g.lineTo(x(p.at), y(p[k])) : g.moveTo(x(p.at), y(p[k]))));
    g.stroke();
    const last = points.length ? points[points.length - 1][k] : 0;
    g.fillText(`${label}: ${last} (max ${max})`, pad.l + i * 260, 14);
    g.fillText(String(max), i ? w - pad.r + 4 : 4, pad.t + 10);
  });
  g.fillStyle = '#6a737d';
  g.fillText('an hour ago', pad.l, h - 3);
  g.fillText('now', w - pad.r - 24, h - 3);
}

// --- routing: #/, #/node/NAME, #/devices[/NODE], #/rules, #/pods, #/events ---

function route() {
  for (const stop of stops) stop();
  stops = [];
  const [page, ...args] = (location.hash || '#/').replace(/^#\/?/, '').split('/');
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('here', a.getAttribute('href') === '#/' + (page === 'node' ? '' : page));
  }
  const main = document.getElementById('main');
  main.replaceChildren();
  (VIEWS[page] || VIEWS[''])(main, args.map(decodeURIComponent));
}

window.addEventListener('hashchange', route);
route();
