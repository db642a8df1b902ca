// The univrs dashboard: members, leaders over time, request rates, workloads, nodes,
// credits and recent events, kept live from every member's API (see docs/ui.md).
//
// Loops (each survives any member dying):
//   members   every second: /v1/node/status of every known member; /v1/cluster/endpoints
//             of a live one every few seconds to learn addresses
//   metrics   every two seconds: /metrics of every live member -> rates and p99
//   state     list workloads, instances and nodes from one live member, then follow
//             /v1/watch from the list's revision + 1; on any failure resume on another
//             member from the last revision seen + 1 (list again only when compacted)
//   credits   every three seconds: /v1/credits/balances

import {
  ApiError,
  Members,
  NetworkError,
  describeError,
  expected,
  fetchOrFail,
  get,
  listAll,
  loadToken,
  saveToken,
} from "./api.js";
import { LeaderTimeline, LineChart, colorOf } from "./charts.js";
import { bucketDelta, buckets, mergeBuckets, parseMetrics, quantile, total } from "./metrics.js";

const $ = (sel) => document.querySelector(sel);
const members = new Members(location.host);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ DOM helpers

function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
    else if (k === "title") e.title = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function bytes(n) {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

let noticeText = "";
function notice(text) {
  if (text === noticeText) return;
  noticeText = text;
  const p = $("#notice");
  p.textContent = text;
  p.hidden = !text;
}

function onAuthError(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    notice(
      err.status === 401
        ? "This cluster needs an API token (a read token is enough): paste it above."
        : `The token may not read this: ${err.message}`,
    );
    return true;
  }
  return false;
}

// ------------------------------------------------------------------ token form

function setupToken() {
  const input = $("#token-input");
  input.value = loadToken();
  $("#token-remember").checked = !!localStorage.getItem("univrs.token");
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveToken(input.value.trim(), $("#token-remember").checked);
    notice("");
    feed.restart();
  });
  $("#token-clear").addEventListener("click", () => {
    input.value = "";
    saveToken("", false);
    feed.restart();
  });
}

// ------------------------------------------------------------------ members and leaders

const history = {
  segments: [], // [{leader, term, start, end}]
  terms: [], // [{t, term}]
  list: [], // [{t, text}]
  elections: 0,
  lastTerm: null,
};

const writesChart = new LineChart($("#writes-chart"), {
  series: [
    { key: "rate", label: "writes/s", color: "#2b6cb0", axis: "left", unit: "/s" },
    { key: "p99", label: "p99", color: "#c05621", axis: "right", unit: "ms" },
  ],
});
const readsChart = new LineChart($("#reads-chart"), {
  series: [
    { key: "rate", label: "reads/s", color: "#2f855a", axis: "left", unit: "/s" },
    { key: "p99", label: "p99", color: "#c05621", axis: "right", unit: "ms" },
  ],
});
const timeline = new LeaderTimeline($("#leader-timeline"));

function noteLeadership(now) {
  const { leader, term } = members.leader();
  const id = leader ? leader.id : null;
  if (members.live().length === 0) return;
  const cur = history.segments[history.segments.length - 1];
  if (history.lastTerm !== null && term > history.lastTerm) {
    history.elections += term - history.lastTerm;
    history.terms.push({ t: now, term });
  }
  if (history.lastTerm === null || term > history.lastTerm) history.lastTerm = term;
  if (!cur || cur.leader !== id || (id && cur.term !== term)) {
    if (cur) cur.end = now;
    history.segments.push({ leader: id, term, start: now, end: null });
    const text = id ? `term ${term}: ${id} leads` : `term ${term}: no leader`;
    history.list.unshift({ t: now, text, leader: id });
    history.list.length = Math.min(history.list.length, 20);
    if (cur) {
      writesChart.mark(now, id || "no leader");
      readsChart.mark(now, id || "no leader");
    }
  }
}

function renderMembers(now) {
  const ids = [...members.byId.keys()].sort();
  const { leader, term } = members.leader();
  const peers = new Map();
  if (leader) for (const p of leader.status.peers || []) peers.set(p.id, p);
  const rows = ids.map((id) => {
    const m = members.byId.get(id);
    const s = m.ok ? m.status : null;
    const role = s ? s.role : "unreachable";
    let lag = "–";
    let contact = "–";
    if (leader && id === leader.id) {
      lag = "0";
      contact = "leader";
    } else if (peers.has(id)) {
      const p = peers.get(id);
      lag = String(p.lag);
      contact = p.last_contact_s === null || p.last_contact_s === undefined
        ? "never" : `${p.last_contact_s.toFixed(1)} s ago`;
    }
    const here = m.api === location.host ? " (this page)" : "";
    const swatch = h("i", { class: "swatch" });
    swatch.style.background = colorOf(id, ids);
    return h(
      "tr",
      { class: `role-${role}`, data: { member: id, role, ok: m.ok ? "1" : "0" } },
      h("td", {}, swatch, id),
      h("td", { class: "mono" }, (m.api || "?") + here),
      h("td", { class: "role" }, role),
      h("td", {}, s ? s.term : "–"),
      h("td", {}, s ? s.last_index : "–"),
      h("td", {}, s ? s.commit_index : "–"),
      h("td", {}, s ? s.applied_index : "–"),
      h("td", { data: { lag } }, lag),
      h("td", {}, contact),
      h("td", { class: m.ok ? "ok" : "bad" }, m.ok ? "ok" : `${m.error} (seen ${m.seen ? clock(m.seen) : "never"})`),
    );
  });
  replaceRows($("#members tbody"), rows);
  const any = members.live()[0];
  if (any) $("#cluster-id").textContent = any.status.cluster || any.status.cluster_id || "?";
  const leaderEl = $("#leader");
  leaderEl.textContent = leader ? leader.id : "none";
  leaderEl.dataset.leader = leader ? leader.id : "";
  $("#term").textContent = term || "?";
  $("#elections-count").textContent = `${history.elections} election(s) seen since the page opened`;
  replaceRows(
    $("#leader-history"),
    history.list.map((e) => h("li", { data: { leader: e.leader || "" } }, `${clock(e.t)}  ${e.text}`)),
  );
  timeline.render(history.segments, history.terms, ids, now);
}

async function membersLoop() {
  for (let tick = 0; ; tick++) {
    await members.refresh();
    const unknown = [...members.byId.values()].some((m) => !m.api);
    if (tick % 5 === 0 || unknown || members.byId.size === 0) {
      for (const m of members.live()) {
        try {
          members.learn(await get(m.api, "/v1/cluster/endpoints", { timeoutMs: 1500 }));
          break;
        } catch (err) {
          if (!expected(err)) console.error("dashboard bug (endpoints):", err);
        }
      }
    }
    const now = Date.now();
    noteLeadership(now);
    renderMembers(now);
    if (!members.live().length) notice("No member answers: the cluster is down or unreachable from here.");
    else if (noticeText.startsWith("No member answers")) notice("");
    await sleep(1000);
  }
}

// ------------------------------------------------------------------ metrics

const scrapes = new Map(); // member id -> {t, writes, reads, forwarded, wb, rb}

async function scrape(m) {
  const text = await get(m.api, "/metrics", { text: true, timeoutMs: 1500 });
  const s = parseMetrics(text);
  return {
    t: Date.now(),
    writes: total(s, "univrs_api_write_seconds_count"),
    reads: total(s, "univrs_api_read_seconds_count"),
    forwarded: total(s, "univrs_api_forwarded_total"),
    wb: buckets(s, "univrs_api_write_seconds"),
    rb: buckets(s, "univrs_api_read_seconds"),
  };
}

async function metricsLoop() {
  for (;;) {
    const now = Date.now();
    let writes = 0;
    let reads = 0;
    let fresh = 0;
    const wDeltas = [];
    const rDeltas = [];
    await Promise.all(
      members.live().map(async (m) => {
        let cur;
        try {
          cur = await scrape(m);
        } catch (err) {
          if (!expected(err)) console.error("dashboard bug (metrics):", err);
          scrapes.delete(m.id);
          return;
        }
        const prev = scrapes.get(m.id);
        scrapes.set(m.id, cur);
        if (!prev || cur.t - prev.t > 10000 || cur.writes < prev.writes || cur.reads < prev.reads) return;
        const dt = (cur.t - prev.t) / 1000;
        if (dt <= 0) return;
        fresh++;
        // A write a follower forwarded is counted by the follower and again by the leader.
        writes += Math.max(0, cur.writes - prev.writes - (cur.forwarded - prev.forwarded)) / dt;
        reads += (cur.reads - prev.reads) / dt;
        wDeltas.push(bucketDelta(prev.wb, cur.wb));
        rDeltas.push(bucketDelta(prev.rb, cur.rb));
      }),
    );
    if (fresh) {
      const wp = quantile(0.99, mergeBuckets(wDeltas));
      const rp = quantile(0.99, mergeBuckets(rDeltas));
      writesChart.push(now, { rate: writes, p99: wp === null ? null : wp * 1000 });
      readsChart.push(now, { rate: reads, p99: rp === null ? null : rp * 1000 });
      $("#writes-panel").dataset.rate = writes.toFixed(2);
      $("#reads-panel").dataset.rate = reads.toFixed(2);
    }
    writesChart.render(now);
    readsChart.render(now);
    await sleep(2000);
  }
}

// ------------------------------------------------------------------ state: list + watch

const state = {
  workloads: new Map(),
  instances: new Map(),
  nodes: new Map(),
  listRevision: { workload: 0, instance: 0, node: 0 },
  revision: 0, // the last revision applied here
  events: [], // newest first
};

const MAPS = { workload: state.workloads, instance: state.instances, node: state.nodes };

function applyEvent(ev) {
  const map = MAPS[ev.kind];
  if (!map || ev.revision <= state.listRevision[ev.kind]) return; // already in the list
  if (ev.type === "delete") map.delete(ev.id);
  else if (ev.object) map.set(ev.id, ev.object);
  state.events.unshift({ t: Date.now(), ev });
  if (state.events.length > 60) state.events.length = 60;
}

class Feed {
  constructor() {
    this.via = null;
    this.ctrl = null;
    this.generation = 0;
    this.needList = true;
  }

  restart() {
    this.needList = true;
    this.restarted = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async run() {
    let failed = null; // the member the last attempt failed on: try another first
    for (;;) {
      const live = members.live();
      const others = live.filter((x) => x.id !== failed);
      const leader = members.leader().leader;
      const m =
        others.find((x) => x.id === this.via) ||
        (leader && leader.id !== failed ? leader : null) ||
        others[0] ||
        live[0];
      if (!m) {
        await sleep(500);
        continue;
      }
      this.via = m.id;
      $("#via").textContent = m.id;
      this.ctrl = new AbortController();
      this.restarted = false;
      try {
        if (this.needList) await this.list(m);
        await this.watch(m);
      } catch (err) {
        if (!expected(err)) console.error("dashboard bug (state feed):", err);
        failed = this.restarted || onAuthError(err) ? null : m.id;
        if (err instanceof ApiError && err.code === "compacted") this.needList = true;
        await sleep(this.restarted ? 0 : 500);
      }
    }
  }

  async list(m) {
    const opts = { timeoutMs: 8000, signal: this.ctrl.signal };
    const [w, i, n] = await Promise.all([
      listAll(m.api, "/v1/workloads?consistency=local", opts),
      listAll(m.api, "/v1/instances?consistency=local", opts),
      listAll(m.api, "/v1/nodes?consistency=local", opts),
    ]);
    for (const [kind, res] of [["workload", w], ["instance", i], ["node", n]]) {
      const map = MAPS[kind];
      map.clear();
      for (const obj of res.items) map.set(obj.id, obj);
      state.listRevision[kind] = res.revision;
    }
    state.revision = Math.min(w.revision, i.revision, n.revision);
    this.needList = false;
    if (noticeText.startsWith("This cluster needs")) notice("");
    renderState();
  }

  async watch(m) {
    const url = `${location.protocol}//${m.api}/v1/watch?from_revision=${state.revision + 1}&progress_ms=1000`;
    const token = loadToken();
    const resp = await fetchOrFail(url, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: this.ctrl.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (!resp.ok) {
      let code = String(resp.status);
      let message = resp.statusText;
      try {
        const doc = await resp.json();
        code = doc.error.code;
        message = doc.error.message;
      } catch (_) {
        // keep the status
      }
      throw new ApiError(resp.status, code, message);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let stall = setTimeout(() => this.ctrl.abort(), 5000);
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (err instanceof TypeError) throw new NetworkError(err.message); // cut off
          throw err;
        }
        const { value, done } = chunk;
        if (done) throw new ApiError(0, "ended", "the watch stream ended");
        clearTimeout(stall);
        stall = setTimeout(() => this.ctrl.abort(), 5000); // a paused member says nothing
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const doc = JSON.parse(line);
          if (doc.error) throw new ApiError(0, doc.error.code, doc.error.message);
          for (const ev of doc.events || []) applyEvent(ev);
          if (doc.revision > state.revision) state.revision = doc.revision;
          if ((doc.events || []).length) renderState();
          else $("#revision").textContent = state.revision;
          if (!members.byId.get(m.id)?.ok && members.live().length) {
            // the members loop says this one stopped answering: move on
            throw new ApiError(0, "unreachable", `${m.id} stopped answering`);
          }
        }
      }
    } finally {
      clearTimeout(stall);
      reader.cancel().catch(() => {}); // already failed or closed: nothing to release
    }
  }
}

const feed = new Feed();

function shortId(id) {
  return id.length > 12 ? id.slice(0, 8) : id;
}

function describeEvent(ev) {
  const o = ev.object || ev.prev || {};
  if (ev.kind === "workload") {
    const spec = o.spec || {};
    return { name: spec.name || ev.id, detail: `${spec.image || ""} × ${spec.replicas ?? "?"}` };
  }
  if (ev.kind === "instance") {
    const w = state.workloads.get(o.workload_id);
    return {
      name: `${(w && w.spec && w.spec.name) || o.workload_id || "?"}/${shortId(ev.id)}`,
      detail: `${o.status || ""}${o.node_id ? ` on ${o.node_id}` : ""}${o.message ? `: ${o.message}` : ""}`,
    };
  }
  return { name: ev.id, detail: o.status || "" };
}

function renderState() {
  $("#revision").textContent = state.revision;
  // Workloads: desired vs instances by status.
  const counts = new Map();
  const onNode = new Map();
  for (const inst of state.instances.values()) {
    const c = counts.get(inst.workload_id) || { running: 0, pending: 0, other: 0 };
    if (inst.status === "running") c.running++;
    else if (inst.status === "pending") c.pending++;
    else c.other++;
    counts.set(inst.workload_id, c);
    if (inst.node_id) onNode.set(inst.node_id, (onNode.get(inst.node_id) || 0) + 1);
  }
  const workloads = [...state.workloads.values()].sort((a, b) =>
    (a.spec?.name || a.id).localeCompare(b.spec?.name || b.id),
  );
  replaceRows(
    $("#workloads tbody"),
    workloads.map((w) => {
      const c = counts.get(w.id) || { running: 0, pending: 0, other: 0 };
      const desired = w.spec?.replicas ?? 0;
      const bar = h("div", { class: "bar" });
      const fill = h("span", {});
      fill.style.width = `${desired ? Math.min(100, (100 * c.running) / desired) : 100}%`;
      bar.append(fill);
      const short = c.running < desired;
      return h(
        "tr",
        { class: short ? "short" : "", data: { workload: w.id, name: w.spec?.name || "", desired, running: c.running } },
        h("td", {}, w.spec?.name || "?"),
        h("td", { class: "mono", title: w.id }, shortId(w.id)),
        h("td", { class: "mono" }, w.spec?.image || ""),
        h("td", {}, desired),
        h("td", { class: "running" }, c.running),
        h("td", {}, c.pending),
        h("td", {}, c.other),
        h("td", {}, bar),
      );
    }),
  );
  $("#workloads-count").textContent = `${workloads.length}`;
  // Nodes: status, capacity, instances placed.
  const nodes = [...state.nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  replaceRows(
    $("#nodes tbody"),
    nodes.map((n) =>
      h(
        "tr",
        { class: `status-${n.status}`, data: { node: n.id, status: n.status } },
        h("td", {}, n.id),
        h("td", { class: "status" }, n.status),
        h("td", {}, n.capacity?.cpu_millis ? `${n.capacity.cpu_millis} m` : "–"),
        h("td", {}, bytes(n.capacity?.memory_bytes)),
        h("td", {}, onNode.get(n.id) || 0),
      ),
    ),
  );
  $("#nodes-count").textContent = `${nodes.length}`;
  // Recent events.
  replaceRows(
    $("#events tbody"),
    state.events.map(({ t, ev }) => {
      const d = describeEvent(ev);
      return h(
        "tr",
        { class: `ev-${ev.type}`, data: { revision: ev.revision, kind: ev.kind } },
        h("td", {}, clock(t)),
        h("td", {}, ev.revision),
        h("td", {}, `${ev.kind} ${ev.type === "delete" ? "deleted" : ev.prev ? "changed" : "created"}`),
        h("td", { class: "mono" }, d.name),
        h("td", {}, d.detail),
      );
    }),
  );
}

// ------------------------------------------------------------------ credits

async function creditsLoop() {
  for (;;) {
    const m = members.pick(feed.via);
    if (m) {
      try {
        const { items, doc } = await listAll(m.api, "/v1/credits/balances?consistency=local", { timeoutMs: 3000 });
        const rows = items
          .slice()
          .sort((a, b) => (b.balance ?? 0) - (a.balance ?? 0))
          .slice(0, 25)
          .map((b) => h("tr", { data: { peer: b.peer } }, h("td", {}, b.peer), h("td", {}, b.balance)));
        replaceRows($("#credits tbody"), rows);
        const supply = doc && doc.total_supply !== undefined ? doc.total_supply : "?";
        $("#credits-supply").textContent = `${items.length} peer(s), total supply ${supply}`;
      } catch (err) {
        if (!expected(err)) console.error("dashboard bug (credits):", err);
        if (!onAuthError(err)) $("#credits-supply").textContent = describeError(err);
      }
    }
    await sleep(3000);
  }
}

// ------------------------------------------------------------------ start

setupToken();
membersLoop();
metricsLoop();
feed.run();
creditsLoop();
window.addEventListener("resize", () => renderMembers(Date.now()));
