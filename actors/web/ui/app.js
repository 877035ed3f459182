// ketch live view: "RaftScope, drawn from a real cluster".
//
// The node that serves this page runs a viewer actor that asks every member
// of the cluster for its status a few times a second and publishes a Frame
// (actors/web/frame.go documents every key). This script only draws frames:
//
//   - it listens to /events (server-sent events, one `data: <Frame JSON>`
//     per new frame) and, if the event stream fails, polls /view.json every
//     500 ms, trying the stream again now and then;
//   - for every frame it updates one box per node (role, term, leader, log,
//     the leader's view of its followers, the supervision tree, the
//     membership), the arrows of the message rates between the boxes, and
//     the list of events;
//   - when the server runs with --chaos it offers buttons that POST /crash
//     to crash one actor of one node, and shows the answer.
//
// It is plain JavaScript with no dependency and no build step. Every
// string that comes from the cluster goes into the page through
// textContent or setAttribute, never through innerHTML.
//
// Stable hooks for tests (keep them): each node box has data-node-id and
// data-role (updated every frame) and data-reachable; each child row of a
// tree has data-child and data-restarts; each crash button has data-crash;
// document.body.dataset.frames counts the frames received.

'use strict';

// ------------------------------------------------------------ constants

// The node supervisor's name when a node's answer does not carry it
// (node.supervisor): Raft group 1's.
const SUPERVISOR = 'raft/1';
// The children a crash request may name. The gateway is the actor that
// answers the crash request itself, so it is not offered.
const CRASHABLE = ['store', 'state', 'fsm', 'sender'];
// How many log indices each strip shows (the same window in every box).
const LOG_CELLS = 20;
// Polling period when the event stream is not available.
const POLL_MS = 500;
// While polling, try the event stream again this often.
const SSE_RETRY_MS = 10000;
// No frame for this long: say so at the top of the page.
const STALE_MS = 2000;
// Message rates are averaged over about this much time (a few frames), so
// that an answer that arrives a little late does not make the arrows blink.
const RATE_WINDOW_MS = 1200;
// How long a restarted child flashes (the CSS animation has the same length).
const FLASH_MS = 1500;

// Role colours, read from style.css so that both stay in one place.
const css = getComputedStyle(document.documentElement);
const ROLE_COLOUR = {
  leader: css.getPropertyValue('--leader').trim(),
  follower: css.getPropertyValue('--follower').trim(),
  candidate: css.getPropertyValue('--candidate').trim(),
  'pre-candidate': css.getPropertyValue('--precandidate').trim(),
  precandidate: css.getPropertyValue('--precandidate').trim(),
  starting: css.getPropertyValue('--starting').trim(),
  stopping: css.getPropertyValue('--stopped').trim(),
  stopped: css.getPropertyValue('--stopped').trim(),
  unreachable: css.getPropertyValue('--unreachable').trim(),
};
const MARK_COLOUR = {
  durable: css.getPropertyValue('--durable').trim(),
  commit: css.getPropertyValue('--commit').trim(),
  applied: css.getPropertyValue('--applied').trim(),
  snapshot: css.getPropertyValue('--snapshot').trim(),
};
// Entry colours by term: a small palette, term modulo its length, so two
// neighbouring terms never look alike.
const TERM_COLOURS = ['#ffd98a', '#a9d3ff', '#b9e8b0', '#ffb8b0', '#d9c2f5', '#9fe3dc', '#f7c6e4', '#d7dd8f'];
const termColour = (term) => TERM_COLOURS[term % TERM_COLOURS.length];

// ---------------------------------------------------------------- state

const state = {
  frames: 0,            // frames received (document.body.dataset.frames)
  last: null,           // the latest frame
  lastArrival: 0,       // Date.now() when it arrived
  mode: 'connecting',   // 'sse', 'poll' or 'connecting'
  why: '',              // why we poll
  es: null,             // the EventSource, while one is open
  lastSSETry: 0,
  pollTimer: null,
  polling: false,       // a /view.json request is in flight
  pollError: '',
  boxes: new Map(),     // node id -> the parts of its box (see makeBox)
  restarts: new Map(),  // "id/child" -> restarts in the previous frame
  samples: new Map(),   // node id -> [{t, sent: Map(peer -> sent_messages), bytes: Map}]
  eventsKey: '',        // what the events list shows, to redraw it only on change
};

// ------------------------------------------------------------ DOM helpers

// el('div', {class: 'x', title: 't'}, child, 'text', ...) makes an element.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const c of children) e.append(c);
  return e;
}

const SVGNS = 'http://www.w3.org/2000/svg';
// svg('rect', {x: 1, ...}) makes an SVG element; a 'text' attribute sets
// its text content and a 'title' one a tooltip.
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else if (k === 'title') e.append(svgTitle(v));
    else e.setAttribute(k, v);
  }
  return e;
}
function svgTitle(text) {
  const t = document.createElementNS(SVGNS, 'title');
  t.textContent = text;
  return t;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
}

// setText changes an element's text only when it differs (no needless
// layout work four times a second).
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function ago(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function clock(unixMillis) {
  const d = new Date(unixMillis);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// ---------------------------------------------------------- connection

// connectSSE opens the event stream. Its first message makes it the
// source of frames (and stops the polling, if any); an error closes it
// and falls back to polling.
function connectSSE() {
  if (!('EventSource' in window)) {
    startPolling('this browser has no EventSource');
    return;
  }
  state.lastSSETry = Date.now();
  const es = new EventSource('events'); // relative: /events when served at /
  state.es = es;
  es.onmessage = (ev) => {
    if (state.mode !== 'sse') {
      stopPolling();
      state.mode = 'sse';
    }
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch (err) {
      return; // not a frame: ignore it
    }
    receive(frame);
  };
  es.onerror = () => {
    // EventSource would retry by itself, but a page that shows nothing
    // while it does is no use: poll meanwhile, and try again later.
    es.close();
    if (state.es === es) state.es = null;
    startPolling('the event stream /events failed');
  };
}

function startPolling(why) {
  state.mode = 'poll';
  state.why = why;
  if (state.pollTimer === null) {
    state.pollTimer = setInterval(pollOnce, POLL_MS);
    pollOnce();
  }
}

function stopPolling() {
  if (state.pollTimer !== null) clearInterval(state.pollTimer);
  state.pollTimer = null;
}

async function pollOnce() {
  if (!state.polling) {
    state.polling = true;
    try {
      const r = await fetch('view.json', { cache: 'no-store' });
      if (!r.ok) throw new Error(`GET /view.json: ${r.status} ${r.statusText}`);
      receive(await r.json());
      state.pollError = '';
    } catch (err) {
      state.pollError = String(err.message || err);
    } finally {
      state.polling = false;
    }
  }
  // Now and then try the event stream again; while it connects, polling
  // goes on, and its first message stops it.
  if (state.es === null && Date.now() - state.lastSSETry > SSE_RETRY_MS) connectSSE();
}

// showConnection says where the frames come from and how fresh they are.
function showConnection() {
  const box = document.getElementById('conn');
  const text = document.getElementById('conn-text');
  const age = state.lastArrival ? Date.now() - state.lastArrival : Infinity;
  let cls = state.mode, msg;
  if (state.mode === 'sse') msg = 'live: server-sent events from /events';
  else if (state.mode === 'poll') msg = `polling /view.json every ${POLL_MS} ms (${state.why})`;
  else msg = 'connecting…';
  if (state.lastArrival && age > STALE_MS) {
    cls = 'stale';
    msg = `no new frame for ${(age / 1000).toFixed(1)} s: is this page's node down?` +
      (state.pollError ? ` (${state.pollError})` : '');
  }
  msg += ` · ${state.frames} frames`;
  box.className = cls;
  setText(text, msg);
}
setInterval(showConnection, 250);

// ------------------------------------------------------------ one frame

// receive draws one frame.
function receive(frame) {
  if (!frame || !Array.isArray(frame.nodes)) return; // the server has no frame yet
  // Polling may read the same frame twice, and switching to the stream
  // repeats the latest one: draw each frame once.
  if (state.last && frame.at_unix_millis === state.last.at_unix_millis) return;
  state.frames++;
  document.body.dataset.frames = String(state.frames);
  state.lastArrival = Date.now();
  state.last = frame;
  document.body.classList.toggle('chaos', !!frame.chaos);

  takeSamples(frame);
  const win = logWindow(frame.nodes);
  syncBoxes(frame.nodes);
  for (const n of frame.nodes) drawNode(state.boxes.get(n.id), n, frame, win);
  drawWires(frame);
  drawEvents(frame.events || []);
  drawSummary(frame);
  showConnection();
}

// drawSummary fills the header: the cluster, who serves the page, the
// leader (as the reachable nodes report it).
function drawSummary(frame) {
  const s = document.getElementById('summary');
  const leaders = frame.nodes.filter((n) => n.role === 'leader' && n.reachable);
  let lead = 'no leader';
  if (leaders.length === 1) lead = `leader: node ${leaders[0].id} (term ${leaders[0].term})`;
  else if (leaders.length > 1) {
    // Possible for a moment: an old leader that has not heard of the new
    // term yet (Raft §5.1: at most one leader per term).
    lead = 'leaders: ' + leaders.map((n) => `node ${n.id} (term ${n.term})`).join(', ');
  }
  s.replaceChildren(
    'cluster ', el('b', { text: frame.cluster_id || '?' }),
    ` · ${frame.nodes.length} nodes · `, el('b', { text: lead }),
    ` · this page is served by node ${frame.self}, which asks every node every ${frame.interval_millis} ms`);
}

// ------------------------------------------------------------ node boxes

// syncBoxes makes one box per node, in id order, and removes the boxes of
// nodes that left the frame. Boxes persist across frames, so that a button
// under the mouse stays the same element and an animation can run.
function syncBoxes(nodes) {
  const row = document.getElementById('nodes');
  const ids = new Set(nodes.map((n) => n.id));
  for (const [id, box] of state.boxes) {
    if (!ids.has(id)) {
      box.root.remove();
      state.boxes.delete(id);
    }
  }
  let prev = null;
  for (const n of nodes) {
    let box = state.boxes.get(n.id);
    if (!box) {
      box = makeBox(n.id);
      state.boxes.set(n.id, box);
    }
    // Keep the DOM order the frame's (id) order.
    const want = prev ? prev.nextSibling : row.firstChild;
    if (want !== box.root) row.insertBefore(box.root, want);
    prev = box.root;
  }
}

// makeBox builds the skeleton of a node's box; drawNode fills it.
function makeBox(id) {
  const b = {};
  b.title = el('div', { class: 'node-title' });
  b.role = el('div', { class: 'role-badge' });
  b.addr = el('div', { class: 'addr' });
  b.facts = el('div', { class: 'facts' });
  b.age = el('div', { class: 'age' });
  b.error = el('div', { class: 'node-error' });
  const head = el('header', { class: 'node-head' }, b.title, b.addr, b.role, b.facts, b.age, b.error);

  b.strip = svg('svg', { class: 'strip' });
  b.logFacts = el('div', { class: 'log-facts' });
  const log = el('section', { class: 'log' },
    el('h3', {}, 'Log ', el('span', { class: 'hint', text: '(the latest entries; bars: durable, commit, applied, snapshot)' })),
    b.strip, b.logFacts);

  b.progress = el('section', { class: 'progress-section' });

  b.treeRows = el('div', { class: 'tree-rows' });
  b.treeRoot = el('div', { class: 'tree-root' });
  b.chaosNote = el('div', { class: 'chaos-note' });
  b.crashResult = el('div', { class: 'crash-result' });
  const tree = el('section', { class: 'tree' },
    el('h3', {}, 'Supervision tree'), b.treeRoot, b.treeRows, b.chaosNote, b.crashResult);
  b.children = new Map(); // child name -> its row's parts

  b.members = el('section', { class: 'membership' });

  b.root = el('article', { class: 'node', 'data-node-id': String(id), 'data-role': 'starting' },
    head, log, b.progress, tree, b.members);
  return b;
}

// drawNode updates a node's box from its NodeView n.
function drawNode(b, n, frame, win) {
  const r = b.root;
  r.dataset.role = n.role;
  r.dataset.reachable = String(!!n.reachable);

  // --- head: who it is, its role and term, whom it follows.
  b.title.replaceChildren(`node ${n.id}`);
  if (n.id === frame.self) b.title.append(el('span', { class: 'self-tag', text: 'serves this page' }));
  setText(b.addr, n.address || '');
  let badge = n.role;
  if (!n.reachable && n.role !== 'unreachable') badge = `unreachable · was ${n.role}`;
  setText(b.role, badge);

  const facts = [];
  if (n.role === 'unreachable') {
    facts.push('never answered: no picture of it yet');
  } else {
    facts.push(el('span', {}, 'term ', el('b', { text: String(n.term) })));
    if (n.role === 'leader') facts.push(el('span', {}, 'leads term ', el('b', { text: String(n.term) })));
    else if (n.leader) facts.push(el('span', {}, 'follows ', el('b', { text: `node ${n.leader}` })));
    else facts.push(el('span', { text: 'knows no leader' }));
    if (n.transferee) facts.push(el('span', { text: `hands leadership over to node ${n.transferee}` }));
  }
  b.facts.replaceChildren(...facts.flatMap((f, i) => (i ? [' · ', f] : [f])));
  if (n.role === 'unreachable') setText(b.age, `no answer from ${n.address}`);
  else setText(b.age, (n.reachable ? 'answered ' : 'last answered ') + ago(n.age_millis));
  setText(b.error, n.error || '');

  // --- log strip.
  drawStrip(b.strip, n, win);
  const lf = [];
  if (n.role !== 'unreachable') {
    lf.push(`log holds ${n.first_index}…${n.last_index}`);
    if (n.recent && n.recent.length && n.recent[0].index > n.first_index) lf.push(`detail of ${n.recent[0].index}…${n.recent[n.recent.length - 1].index}`);
    lf.push(n.snapshot_index ? `snapshot ≤ ${n.snapshot_index} (${bytes(n.snapshot_bytes)})` : 'no snapshot');
  }
  setText(b.logFacts, lf.join(' · '));

  // --- the leader's view of its followers.
  drawProgress(b.progress, n);

  // --- supervision tree, crash buttons.
  drawTree(b, n, frame);

  // --- membership.
  drawMembers(b.members, n);
}

// ------------------------------------------------------------ log strip

// logWindow is the range of indices every strip shows: the last LOG_CELLS
// up to the highest last index of any node, so that the same index sits
// at the same place in every box (as in RaftScope) and a follower that
// lags shows as a shorter log.
function logWindow(nodes) {
  let hi = 0;
  for (const n of nodes) hi = Math.max(hi, n.last_index || 0);
  const lo = Math.max(1, hi - LOG_CELLS + 1);
  return { lo, hi: lo + LOG_CELLS - 1 };
}

// Geometry of a strip, in SVG units (the SVG scales to the box's width).
const LABEL_W = 84;           // the left column: the marks' names and indices
const CELL = 17;              // width of one index
const IDX_Y = 9;              // baseline of the index numbers
const CELL_Y = 12, CELL_H = 20;
const KIND_Y = CELL_Y + CELL_H + 1; // the N / C tags under a cell
const BAR_Y0 = 50, BAR_DY = 12; // the four mark rows

// drawStrip draws n's log over the window win: a cell per index, and the
// durable, commit, applied and snapshot marks as bars under it, each
// named with its index in the left column.
function drawStrip(s, n, win) {
  const width = LABEL_W + LOG_CELLS * CELL;
  const height = BAR_Y0 + 3 * BAR_DY + 6;
  s.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const parts = [];
  const known = n.role !== 'unreachable';
  const recent = new Map((n.recent || []).map((e) => [e.index, e]));
  const xOf = (i) => LABEL_W + (i - win.lo) * CELL; // left edge of index i

  parts.push(svg('text', { class: 'idx', x: 0, y: IDX_Y, text: 'index' }));
  parts.push(svg('text', { class: 'idx', x: 0, y: CELL_Y + 14, text: 'term' }));
  for (let i = win.lo; i <= win.hi; i++) {
    const x = xOf(i);
    // Number every fifth index, and the first one unless a fifth is near.
    if (i % 5 === 0 || (i === win.lo && i % 5 <= 2)) {
      parts.push(svg('text', { class: 'idx', x: x + CELL / 2, y: IDX_Y, 'text-anchor': 'middle', text: String(i) }));
    }
    const cell = { x: x + 1, y: CELL_Y, width: CELL - 2, height: CELL_H, rx: 2 };
    const e = recent.get(i);
    if (e) {
      // An entry we know: coloured by term, its term written in it.
      parts.push(svg('rect', { ...cell, fill: termColour(e.term), stroke: e.type === 'config' ? '#1d232a' : '#7d8893',
        'stroke-width': e.type === 'config' ? 2 : 0.6,
        title: `index ${e.index}, term ${e.term}, ${e.type}, ${e.bytes} bytes` }));
      parts.push(svg('text', { class: 'term', x: x + CELL / 2, y: CELL_Y + 14, 'text-anchor': 'middle', text: String(e.term) }));
      if (e.type === 'noop' || e.type === 'config') {
        const label = e.type === 'noop' ? 'N' : 'C';
        parts.push(svg('rect', { x: x + 3, y: KIND_Y, width: CELL - 6, height: 10, rx: 2, fill: e.type === 'noop' ? '#5b6672' : '#1d232a',
          title: e.type === 'noop' ? `index ${e.index}: the no-op the leader of term ${e.term} appended (Raft §8)` : `index ${e.index}: a configuration entry` }));
        parts.push(svg('text', { class: 'kind', x: x + CELL / 2, y: KIND_Y + 8, 'text-anchor': 'middle', text: label }));
      }
    } else if (known && i < n.first_index && i <= n.snapshot_index) {
      // Compacted into the snapshot (Raft §7).
      parts.push(svg('rect', { ...cell, fill: '#efe0f7', stroke: MARK_COLOUR.snapshot, 'stroke-width': 0.5,
        title: `index ${i}: compacted into the snapshot` }));
    } else if (known && i >= n.first_index && i <= n.last_index) {
      // In the log, but older than the detail the node sent.
      parts.push(svg('rect', { ...cell, fill: '#d5d9de', title: `index ${i}: in the log (no detail in the frame)` }));
    } else {
      // Not in this node's log (yet).
      parts.push(svg('rect', { ...cell, fill: 'none', stroke: '#c3c9d0', 'stroke-dasharray': '2 2', 'stroke-width': 0.8,
        title: `index ${i}: not in this node's log` }));
    }
  }

  // The marks: each a bar that ends at the right edge of its index
  // ("everything up to here is ..."), named in the left column.
  if (known) {
    const marks = [
      ['durable', n.durable, `durable ${n.durable}`, 'written and fsynced to this node\'s disk up to here'],
      ['commit', n.commit, `commit ${n.commit}`, 'known committed (stored by a majority) up to here'],
      ['applied', n.applied, `applied ${n.applied}`, 'applied to the key-value store up to here'],
      ['snapshot', n.snapshot_index, n.snapshot_index ? `snapshot ≤ ${n.snapshot_index}` : 'no snapshot',
        'the entries up to here are in the latest snapshot'],
    ];
    marks.forEach(([name, index, label, what], row) => {
      const y = BAR_Y0 + row * BAR_DY;
      const colour = MARK_COLOUR[name];
      const tip = `${label}: ${what}`;
      parts.push(svg('text', { class: 'mark-label', x: 0, y: y + 3.5, fill: colour, text: label, title: tip }));
      if (index >= win.lo) {
        const xEnd = xOf(Math.min(index, win.hi)) + CELL;
        parts.push(svg('line', { x1: xEnd - 0.5, y1: CELL_Y + CELL_H, x2: xEnd - 0.5, y2: y, stroke: colour, 'stroke-width': 1, opacity: 0.45 }));
        parts.push(svg('rect', { x: LABEL_W, y: y - 2, width: xEnd - LABEL_W, height: 4, rx: 2, fill: colour, title: tip }));
        parts.push(svg('rect', { x: xEnd - 3, y: y - 5, width: 3, height: 10, fill: colour, title: tip }));
      } else if (index > 0) {
        // The mark falls before the strip (a snapshot of older entries,
        // a follower far behind): an arrowhead pointing left.
        parts.push(svg('path', { d: `M${LABEL_W},${y} l7,-4 v8 z`, fill: colour, title: tip + ' (before the strip)' }));
      }
    });
  }
  s.replaceChildren(...parts);
}

// ------------------------------------------------------ leader progress

// drawProgress shows, on the leader, its view of each follower (Raft
// Figure 2's matchIndex and nextIndex, and the replication state).
function drawProgress(sec, n) {
  if (n.role !== 'leader' || !n.progress || n.progress.length === 0) {
    sec.hidden = true;
    sec.replaceChildren();
    return;
  }
  sec.hidden = false;
  const head = el('tr', {}, ...['follower', 'match', 'next', 'state', 'inflight', 'lag', 'heard']
    .map((h) => el('th', { text: h })));
  const rows = n.progress.map((p) => {
    const label = { replicate: 'replicate (pipeline)', probe: 'probe', snapshot: 'snapshot' }[p.state] || p.state;
    return el('tr', { 'data-follower': String(p.id) },
      el('td', { text: `node ${p.id}` }),
      el('td', { text: String(p.match) }),
      el('td', { text: String(p.next) }),
      el('td', {}, el('span', { class: `pstate ${p.state}`, text: label })),
      el('td', { text: String(p.inflight) }),
      el('td', { text: String(Math.max(0, n.last_index - p.match)), title: 'entries the leader holds that the follower has not acknowledged' }),
      // silent_rounds: heartbeat rounds since the follower last answered.
      // A follower silent for a whole election timeout does not count
      // towards check-quorum (thesis §6.2).
      el('td', { class: p.silent_rounds > 1 ? 'inactive' : '',
        text: p.silent_rounds === 0 ? 'this round' : p.silent_rounds === 1 ? '1 round ago' : `${p.silent_rounds} rounds ago`,
        title: 'heartbeat rounds since the follower last answered' }));
  });
  sec.replaceChildren(
    el('h3', {}, "Leader's view of its followers ", el('span', { class: 'hint', text: '(Raft Figure 2: matchIndex, nextIndex)' })),
    el('table', { class: 'progress' }, el('thead', {}, head), el('tbody', {}, ...rows)));
}

// ------------------------------------------------------ supervision tree

// drawTree draws the node supervisor and its children, in start order
// (children[] is that order), with their restart counts; a child whose
// restart count rose since the previous frame flashes.
function drawTree(b, n, frame) {
  const kids = n.children || [];
  b.treeRoot.replaceChildren(n.supervisor || SUPERVISOR, ' ', el('span', { class: 'hint',
    text: n.role === 'stopping' || n.role === 'stopped' ? `(supervisor ${n.role})` : '(rest_for_one supervisor)' }));

  // Rebuild the rows only if the set of children changed.
  const names = kids.map((c) => c.name).join(',');
  if (b.childNames !== names) {
    b.childNames = names;
    b.children.clear();
    b.treeRows.replaceChildren(...kids.map((c, i) => {
      const row = {};
      row.root = el('div', { class: 'child', 'data-child': c.name, 'data-restarts': '0' });
      row.restarts = el('span', { class: 'restarts' });
      row.crashes = el('span', { class: 'crashes' });
      row.last = el('div', { class: 'lastcrash' });
      row.root.append(el('span', { class: 'branch', text: i === kids.length - 1 ? '└── ' : '├── ' }),
        el('span', { class: 'cname', text: c.name }), row.restarts, row.crashes);
      if (CRASHABLE.includes(c.name)) {
        row.button = el('button', { type: 'button', 'data-crash': c.name, text: `crash ${c.name}` });
        row.root.append(row.button);
      }
      row.root.append(row.last);
      b.children.set(c.name, row);
      return row.root;
    }));
  }

  for (const c of kids) {
    const row = b.children.get(c.name);
    row.root.dataset.restarts = String(c.restarts);
    setText(row.restarts, `restarts ${c.restarts}`);
    row.restarts.classList.toggle('some', c.restarts > 0);
    setText(row.crashes, c.crashes ? `crashes ${c.crashes}` : '');
    if (c.last_crash) {
      const when = c.last_crash_unix_millis ? ` ${ago(frame.at_unix_millis - c.last_crash_unix_millis)}` : '';
      setText(row.last, `last crash${when}: ${c.last_crash}`);
      row.last.title = c.last_crash;
    } else {
      setText(row.last, '');
      row.last.removeAttribute('title');
    }
    if (row.button) {
      row.button.disabled = !n.reachable;
      row.button.title = n.reachable
        ? `POST /crash?node=${n.id}&child=${c.name}: make node ${n.id}'s ${c.name} actor panic (ketch crash)`
        : `node ${n.id} does not answer`;
    }
    // Flash when the restart count rose (not when a restarted process
    // starts again from 0, nor on the first frame).
    const key = `${n.id}/${c.name}`;
    const before = state.restarts.get(key);
    if (before !== undefined && c.restarts > before) flash(row.root);
    state.restarts.set(key, c.restarts);
  }

  let note = '';
  if (frame.chaos && n.reachable && !n.chaos) note = `node ${n.id} runs without --chaos: it will refuse to crash`;
  setText(b.chaosNote, note);
}

function flash(e) {
  e.classList.remove('flash');
  void e.offsetWidth; // restart the animation if it is still running
  e.classList.add('flash');
  clearTimeout(e.flashTimer);
  e.flashTimer = setTimeout(() => e.classList.remove('flash'), FLASH_MS);
}

// Crash buttons: one listener for all of them. The answer (or the
// refusal: 403 without --chaos, 409 with the node's reason, 504 when it
// does not answer) is shown under the tree.
document.getElementById('nodes').addEventListener('click', async (ev) => {
  const button = ev.target.closest('button[data-crash]');
  if (!button) return;
  const nodeBox = button.closest('[data-node-id]');
  const id = nodeBox.dataset.nodeId, child = button.dataset.crash;
  const box = state.boxes.get(Number(id));
  const out = box.crashResult;
  const url = `crash?node=${encodeURIComponent(id)}&child=${encodeURIComponent(child)}`;
  out.className = 'crash-result';
  out.textContent = `POST /${url} …`;
  try {
    const r = await fetch(url, { method: 'POST' });
    const body = (await r.text()).trim().replace(/\s+/g, ' ');
    out.className = 'crash-result ' + (r.ok ? 'ok' : 'err');
    out.textContent = `POST /${url} → ${r.status} ${r.statusText}: ${body}`;
  } catch (err) {
    out.className = 'crash-result err';
    out.textContent = `POST /${url} failed: ${err.message || err}`;
  }
});

// ------------------------------------------------------------ membership

// drawMembers shows the configuration n uses: each member with its role
// (voter or learner), C_old during a joint change, and whether n itself
// is out of it.
function drawMembers(sec, n) {
  if (n.role === 'unreachable') {
    sec.hidden = true;
    return;
  }
  sec.hidden = false;
  const chips = (ms) => ms.map((m) => el('span', { class: `chip ${m.role}${m.id === n.id ? ' me' : ''}`,
    text: `${m.id} ${m.role}`, title: m.address }));
  const parts = [el('h3', {}, 'Membership ', el('span', { class: 'hint',
    text: n.configuration_index ? `(configuration of entry ${n.configuration_index})` : '(the initial configuration, from --peers)' }))];
  parts.push(el('div', { class: 'chips' }, ...chips(n.members || [])));
  if (n.outgoing && n.outgoing.length) {
    // Joint consensus (Raft §6, thesis §4.3): while both configurations
    // are in force, elections and commits need a majority of each.
    parts.push(el('div', { class: 'joint' },
      'joint configuration: old voters ', el('b', { text: `{${n.outgoing.map((m) => m.id).join(', ')}}` }),
      ' and new members ', el('b', { text: `{${(n.members || []).map((m) => m.id).join(', ')}}` }),
      ': every decision needs a majority of both'));
  }
  if (n.not_member) parts.push(el('div', { class: 'not-member', text: 'not a member of this configuration' }));
  sec.replaceChildren(...parts);
}

// ------------------------------------------------------- message rates

// takeSamples records, for each node that answered since the last frame,
// its counters of messages sent to each peer and when it answered
// (frame time minus the answer's age).
function takeSamples(frame) {
  for (const n of frame.nodes) {
    if (!n.reachable || n.role === 'unreachable') {
      state.samples.delete(n.id); // no arrows from a node that does not answer
      continue;
    }
    const t = frame.at_unix_millis - n.age_millis;
    const sent = new Map(), sentBytes = new Map();
    for (const tr of n.traffic || []) {
      sent.set(tr.peer, tr.sent_messages);
      sentBytes.set(tr.peer, tr.sent_bytes);
    }
    let list = state.samples.get(n.id) || [];
    const last = list[list.length - 1];
    if (last && Math.abs(last.t - t) < 1) continue; // the same answer as before
    // A counter that went down: the node restarted; start over.
    if (last && [...sent].some(([p, v]) => v < (last.sent.get(p) || 0))) list = [];
    list.push({ t, sent, bytes: sentBytes });
    while (list.length > 2 && list[list.length - 1].t - list[1].t >= RATE_WINDOW_MS) list.shift();
    state.samples.set(n.id, list);
  }
}

// rate is messages (and bytes) per second from node a to node b, over the
// samples kept (the first and the last); null if there are not two yet.
function rate(a, b) {
  const list = state.samples.get(a);
  if (!list || list.length < 2) return null;
  const s0 = list[0], s1 = list[list.length - 1];
  const dt = (s1.t - s0.t) / 1000;
  if (dt <= 0 || !s1.sent.has(b)) return null;
  return {
    msgs: ((s1.sent.get(b) || 0) - (s0.sent.get(b) || 0)) / dt,
    bytes: ((s1.bytes.get(b) || 0) - (s0.bytes.get(b) || 0)) / dt,
  };
}

// drawWires draws, in the band above the boxes, one arc per direction
// between every two nodes that exchanged messages: the arc from a to b
// ends in an arrowhead on b, has the colour of a's role, a width that
// grows with the rate and a label in messages per second.
//
// Layout: for two boxes L (left) and R (right), the two arcs nest, the
// rightward one outside. Arcs between boxes further apart run higher, and
// start nearer the boxes' centres, so that they nest around the shorter
// ones.
function drawWires(frame) {
  const wires = document.getElementById('wires');
  const stage = document.getElementById('stage');
  const row = document.getElementById('nodes');
  const nodes = frame.nodes;
  const S = Math.max(1, nodes.length - 1); // the longest span
  const height = (span, outer) => 44 + 46 * (span - 1) + (outer ? 30 : 0); // control-point height
  const band = Math.round(0.75 * height(S, true)) + 30;
  row.style.paddingTop = `${band}px`;

  const sr = stage.getBoundingClientRect();
  wires.setAttribute('width', String(stage.scrollWidth));
  wires.setAttribute('height', String(band + 4));
  const centre = new Map();
  nodes.forEach((n, i) => {
    const r = state.boxes.get(n.id).root.getBoundingClientRect();
    centre.set(n.id, { i, x: r.left - sr.left + r.width / 2 });
  });
  const y0 = band; // the top edge of the boxes

  const defs = svg('defs');
  const markers = new Set();
  const marker = (colour) => {
    const id = 'arrow-' + colour.replace(/[^a-z0-9]/gi, '');
    if (!markers.has(id)) {
      markers.add(id);
      const m = svg('marker', { id, viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 4, markerHeight: 4,
        orient: 'auto-start-reverse', markerUnits: 'strokeWidth' });
      m.append(svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: colour }));
      defs.append(m);
    }
    return `url(#${id})`;
  };

  const arcs = [], labels = [];
  for (const a of nodes) {
    for (const b of nodes) {
      if (a.id === b.id) continue;
      const r = rate(a.id, b.id);
      if (!r || r.msgs < 0.05) continue; // nothing sent: no arrow
      const ca = centre.get(a.id), cb = centre.get(b.id);
      const span = Math.abs(ca.i - cb.i);
      const rightward = ca.i < cb.i;
      const outer = rightward;
      // Anchors: on the left box's right half and the right box's left half.
      const off = 8 + 36 * (S - span) + (outer ? 0 : 13);
      const xa = ca.x + (rightward ? off : -off);
      const xb = cb.x + (rightward ? -off : off);
      const h = height(span, outer);
      const colour = ROLE_COLOUR[a.role] || ROLE_COLOUR.starting;
      const w = Math.min(10, 1 + 0.8 * Math.sqrt(r.msgs));
      const tip = `node ${a.id} → node ${b.id}: ${r.msgs.toFixed(1)} messages/s, ${bytes(Math.round(r.bytes))}/s`;
      arcs.push(svg('path', { d: `M${xa},${y0} C${xa},${y0 - h} ${xb},${y0 - h} ${xb},${y0 - 3}`, fill: 'none',
        stroke: colour, 'stroke-width': w.toFixed(2), 'stroke-linecap': 'round', 'marker-end': marker(colour),
        'data-from': a.id, 'data-to': b.id, opacity: 0.85, title: tip }));
      const text = `${a.id}→${b.id}  ${r.msgs >= 10 ? Math.round(r.msgs) : r.msgs.toFixed(1)} msg/s`;
      const lx = (xa + xb) / 2, ly = y0 - 0.75 * h;
      const lw = text.length * 6.7 + 6;
      labels.push(svg('rect', { class: 'rate-bg', x: lx - lw / 2, y: ly - 8, width: lw, height: 15, rx: 4 }));
      labels.push(svg('text', { class: 'rate-label', x: lx, y: ly + 3.5, 'text-anchor': 'middle', text: `${text}`,
        title: tip }));
    }
  }
  const title = svg('text', { class: 'band-title', x: 2, y: 13,
    text: 'Raft messages per second between nodes (arrow colour: the sender\'s role)' });
  wires.replaceChildren(defs, title, ...arcs, ...labels);
}

// ------------------------------------------------------------ events

// drawEvents lists the frame's events (oldest first in the frame), newest
// first.
function drawEvents(events) {
  const key = events.length + '|' + (events.length ? events[events.length - 1].at_unix_millis + events[events.length - 1].text : '');
  if (key === state.eventsKey) return;
  state.eventsKey = key;
  const list = document.getElementById('events');
  if (events.length === 0) {
    list.replaceChildren(el('li', { class: 'none', text: 'nothing yet' }));
    return;
  }
  list.replaceChildren(...events.slice().reverse().map((e) => el('li', { 'data-kind': e.kind },
    el('span', { class: 'at', text: clock(e.at_unix_millis) }),
    el('span', { class: `kind ${e.kind}`, text: e.kind }),
    el('span', { class: 'text', text: e.text }))));
}

// Redraw the arrows when the window changes size (the boxes move).
window.addEventListener('resize', () => { if (state.last) drawWires(state.last); });

connectSSE();
