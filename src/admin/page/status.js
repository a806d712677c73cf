// tcplb's live status page: draws /status and /status/history, every 2 s.
//
// Everything from the server is written with textContent or as attribute
// values, never parsed as markup: backend names come from configuration
// and DNS. The admin token typed into the page stays in this script's
// memory (never in storage, never in the URL) and is sent only as a bearer
// header to this same endpoint's control API.
"use strict";

const REFRESH_MS = 2000;
const SAMPLES = 900; // 15 minutes of one point a second, as the server keeps
// The shortest time axis: a fresh process's few seconds still make a line,
// not a dot, and the axis grows with the data up to SAMPLES.
const MIN_SPAN = 10;
const SVG = "http://www.w3.org/2000/svg";

let token = "";
let writeAccess = false;
// The newest sample number we hold; 0: ask for everything.
let lastSample = 0;
// Listener name -> {series: {from, rate, active, errors},
//   backends: Map name -> {from, rate, active, failures},
//   routes: Map route name -> Map backend name -> {from, rate, active, failures}}
let history = new Map();

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.001) return `${Math.round(value * 1e6)} µs`;
  if (value < 1) return `${(value * 1e3).toFixed(value < 0.01 ? 2 : 1)} ms`;
  return `${value.toFixed(2)} s`;
}

function perSecond(value) {
  if (value === undefined) return "–";
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function last(values) {
  return values && values.length ? values[values.length - 1] : undefined;
}

// Merges the points of one series from /status/history into what we hold.
function merge(held, incoming, keys) {
  if (held && held.from + held[keys[0]].length === incoming.from) {
    for (const key of keys) held[key] = held[key].concat(incoming[key]);
  } else {
    held = { from: incoming.from };
    for (const key of keys) held[key] = incoming[key].slice();
  }
  const extra = held[keys[0]].length - SAMPLES;
  if (extra > 0) {
    for (const key of keys) held[key] = held[key].slice(extra);
    held.from += extra;
  }
  return held;
}

function mergeHistory(h) {
  if (h.samples < lastSample) history = new Map(); // the server restarted
  const next = new Map();
  for (const l of h.listeners) {
    const held = history.get(l.name) || { series: null, backends: new Map(), routes: new Map() };
    const backends = (heldBackends, incoming) => {
      const merged = new Map();
      for (const b of incoming) {
        merged.set(b.name, merge(heldBackends.get(b.name), b, ["rate", "active", "failures"]));
      }
      return merged;
    };
    const routes = new Map();
    for (const r of l.routes || []) {
      routes.set(r.name, backends(held.routes.get(r.name) || new Map(), r.backends));
    }
    next.set(l.name, {
      series: merge(held.series, l, ["rate", "active", "errors"]),
      backends: backends(held.backends, l.backends),
      routes,
    });
  }
  history = next;
  lastSample = h.samples;
}

// The samples the charts span: from the oldest point held (up to 15
// minutes back) to the newest, at least MIN_SPAN, so the axis fits the data
// there is instead of always spanning 15 minutes. One span for every chart
// of the page, so their time axes line up.
function chartSpan(newest) {
  let oldest = newest;
  for (const held of history.values()) {
    const all = [held.series, ...held.backends.values()];
    for (const route of held.routes.values()) all.push(...route.values());
    for (const series of all) if (series && series.rate.length) oldest = Math.min(oldest, series.from);
  }
  return Math.min(SAMPLES - 1, Math.max(MIN_SPAN, newest - oldest));
}

// "42 s", "5 min", "3 h", "2 d": a span of seconds, short.
function span(secs) {
  if (secs < 90) return `${Math.max(0, Math.round(secs))} s`;
  if (secs < 90 * 60) return `${Math.round(secs / 60)} min`;
  if (secs < 36 * 3600) return `${Math.round(secs / 3600)} h`;
  return `${Math.round(secs / 86400)} d`;
}

// How long ago an RFC 3339 time was, as `span` writes it.
function ago(at) {
  const then = Date.parse(at);
  return Number.isNaN(then) ? "?" : span((Date.now() - then) / 1000);
}

let axis = MIN_SPAN;

// A chart of `lines` ([{values, from, cls, label}]) over the page's time
// axis (`axis` samples), the newest point at the right edge (sample number
// `newest`).
function chart(lines, newest, width, height, withScale) {
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart" });
  box.append(svg("rect", { x: 0, y: 0, width, height, class: "chart-bg" }));
  let top = 1;
  for (const line of lines) for (const v of line.values) top = Math.max(top, v);
  const x = (sample) => Math.max(0, width - ((newest - sample) * width) / axis);
  const y = (v) => height - 2 - (v / top) * (height - 4);
  for (const line of lines) {
    if (!line.values.length) continue;
    const points = line.values.map((v, i) => `${x(line.from + i).toFixed(1)},${y(v).toFixed(1)}`);
    if (points.length === 1) points.push(points[0]);
    const path = svg("polyline", { points: points.join(" "), class: `line ${line.cls}` });
    const title = svg("title");
    title.textContent = `${line.label}: now ${perSecond(last(line.values))}`;
    path.append(title);
    box.append(path);
  }
  if (withScale) {
    const label = svg("text", { x: 3, y: 11, class: "scale" });
    label.textContent = `max ${perSecond(top)}`;
    box.append(label);
    const ago = svg("text", { x: 3, y: height - 4, class: "scale" });
    ago.textContent = `${span(axis)} ago`;
    box.append(ago);
  }
  return box;
}

async function act(pool, backend, verb) {
  const outcome = $("outcome");
  if (!token) {
    outcome.textContent = "type the admin token first";
    $("token").focus();
    return;
  }
  const url = `api/v1/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(backend)}/${verb}`;
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    outcome.textContent = response.ok
      ? `${pool} ${backend}: ${body.change || verb}`
      : `${verb} ${backend}: ${response.status} ${body.error || response.statusText}`;
  } catch (e) {
    outcome.textContent = `${verb} ${backend}: ${e}`;
  }
  refresh();
}

function backendRow(pool, b, series, newest) {
  const row = el("tr", {
    class: `health-${b.health} state-${b.admin_state}${b.backup ? " backup" : ""}`,
    "data-pool": pool,
    "data-backend": b.name,
    "data-health": b.health,
    "data-state": b.admin_state,
  });
  const rate = series ? last(series.rate) : undefined;
  const failures = series ? last(series.failures) : undefined;
  const weight =
    b.effective_weight < b.weight ? `${b.weight} (${b.effective_weight.toFixed(1)})` : String(b.weight);
  const name = el("td", { class: "name" }, b.name);
  if (b.backup) name.append(el("span", { class: "tag" }, "backup"));
  // The address only when the name does not say it (DNS names).
  if (b.address !== b.name) name.append(el("span", { class: "address muted" }, b.address));
  // The operator's state, and the agent's when it is the one in force.
  const state = el("td", { class: "state" }, b.admin_state);
  if (b.state && b.state !== b.admin_state) state.append(el("span", { class: "tag agent" }, `agent: ${b.state}`));
  // Health, since when, and why (the reason of the last change).
  const health = el("td", { class: "health" }, b.health, b.ejected ? el("span", { class: "tag" }, "ejected") : "");
  if (b.health_since) {
    health.append(el("span", { class: "since muted" }, `for ${ago(b.health_since)}`));
    health.title = `${b.health} since ${b.health_since}: ${b.health_reason}`;
  }
  // The last check: its result and what it saw; the agent's answer below.
  const check = el("td", { class: `check${b.check ? ` check-${b.check.result}` : ""}` });
  if (b.check) {
    check.append(el("span", { class: "result" }, b.check.result), el("span", { class: "why" }, b.check.reason));
    check.title = `${b.check.type} check at ${b.check.at}, ${seconds(b.check.seconds)}`;
  } else {
    check.append(el("span", { class: "muted" }, "not checked yet"));
  }
  if (b.agent) {
    check.append(el("span", { class: "why agent muted" }, `agent: ${b.agent.reason}`));
  }
  row.append(
    name,
    state,
    health,
    check,
    el("td", { class: "num weight" }, weight),
    el("td", { class: "num active" }, b.active),
    el("td", { class: "num rate" }, perSecond(rate)),
    el("td", { class: "num total" }, b.total),
    el("td", { class: `num errors${failures ? " bad" : ""}` }, b.connect_failures),
    el("td", { class: "num p50" }, seconds(b.connect_p50_seconds)),
    el("td", { class: "num p99" }, seconds(b.connect_p99_seconds)),
  );
  const spark = el("td", { class: "spark" });
  if (series) {
    spark.append(
      chart(
        [
          { values: series.rate, from: series.from, cls: "rate", label: "connections/s" },
          { values: series.failures, from: series.from, cls: "errors", label: "failed connects/s" },
        ],
        newest,
        150,
        26,
        false,
      ),
    );
  }
  row.append(spark);
  if (writeAccess) {
    const actions = el("td", { class: "actions" });
    for (const verb of ["drain", "maintenance", "ready"]) {
      const button = el("button", { type: "button", class: `act-${verb}`, "data-verb": verb }, verb);
      button.disabled = b.admin_state === verb;
      button.addEventListener("click", () => act(pool, b.name, verb));
      actions.append(button);
    }
    row.append(actions);
  }
  return row;
}

function listenerSection(l, newest) {
  const held = history.get(l.name);
  const series = held ? held.series : null;
  const section = el("section", { class: "listener", "data-listener": l.name });
  const all = l.backends.concat(...(l.routes || []).map((r) => r.backends));
  const ready = all.filter((b) => b.admin_state === "ready" && b.health === "up").length;
  section.append(
    el(
      "h2",
      {},
      l.name,
      " ",
      el("span", { class: "muted" }, l.name === l.listen ? l.strategy : `${l.listen} · ${l.strategy}`),
    ),
  );
  // Every 503, and those of them a limit answered (overload), each reason
  // that has any in the figure's tooltip.
  const reasons = Object.entries(l.failures["503_by_reason"] || {}).filter(([, n]) => n > 0);
  const limits = reasons.filter(([reason]) => reason !== "no_backend");
  const overload = limits.reduce((sum, [, n]) => sum + n, 0);
  const listed = (pairs) => pairs.map(([reason, n]) => `${reason.replaceAll("_", " ")}: ${n}`).join(", ");
  const figures = el("dl", { class: "figures" });
  for (const [term, value, cls, title] of [
    ["backends", `${ready} of ${all.length} ready and up`, ready ? "" : "bad"],
    ["active", l.active, ""],
    ["connections/s", perSecond(series ? last(series.rate) : undefined), ""],
    ["accepted", l.accepted, ""],
    ["rejected", l.rejected, l.rejected ? "warn" : ""],
    ["502", l.failures["502"], l.failures["502"] ? "bad" : ""],
    ["503", l.failures["503"], l.failures["503"] ? "bad" : "", listed(reasons)],
    ["503 over limits", overload, overload ? "bad" : "", listed(limits)],
  ].concat(l.panic && l.panic.active ? [["panic", "all ready primaries", "bad", ""]] : [])
    .concat(l.udp ? udpFigures(l.udp, listed) : [])) {
    const attrs = { class: cls, "data-figure": term };
    if (title) attrs.title = title;
    figures.append(el("div", attrs, el("dt", {}, term), el("dd", {}, value)));
  }
  section.append(figures);
  if (series) {
    const legend = el(
      "div",
      { class: "legend" },
      el("span", { class: "key rate" }, "connections/s"),
      el("span", { class: "key active" }, "open"),
      el("span", { class: "key errors" }, "502/503 per s"),
    );
    section.append(
      el(
        "div",
        { class: "chart-box" },
        chart(
          [
            { values: series.active, from: series.from, cls: "active", label: "open connections" },
            { values: series.rate, from: series.from, cls: "rate", label: "connections/s" },
            { values: series.errors, from: series.from, cls: "errors", label: "502/503 per s" },
          ],
          newest,
          600,
          90,
          true,
        ),
        legend,
      ),
    );
  }
  section.append(backendTable(l.name, l.backends, held ? held.backends : null, newest));
  for (const r of l.routes || []) {
    const routed = [
      r.server_names.length ? r.server_names.join(", ") : "any name",
      r.alpn.length ? `ALPN ${r.alpn.join(", ")}` : null,
      r.strategy,
      `${r.connections} connections`,
    ].filter(Boolean);
    section.append(
      el(
        "h3",
        { "data-route": r.name },
        "route ",
        r.name,
        " ",
        el("span", { class: "muted" }, routed.join(" · ")),
      ),
    );
    const heldRoute = held ? held.routes.get(r.name) : null;
    section.append(backendTable(r.name, r.backends, heldRoute || null, newest));
  }
  return section;
}

// The backends of one pool (a listener's own or a TLS route's).
function backendTable(pool, backends, heldBackends, newest) {
  const head = el("tr");
  for (const title of [
    "backend", "state", "health", "last check", "weight", "active", "conn/s", "total",
    "errors", "connect p50", "p99", `last ${span(axis)}`,
  ]) {
    head.append(el("th", {}, title));
  }
  if (writeAccess) head.append(el("th", {}, "actions"));
  const body = el("tbody");
  for (const b of backends) {
    body.append(backendRow(pool, b, heldBackends ? heldBackends.get(b.name) : null, newest));
  }
  return el("table", { class: "backends", "data-pool": pool }, el("thead", {}, head), body);
}

function render(status) {
  writeAccess = Boolean(status.write_access);
  $("auth").hidden = !writeAccess;
  axis = chartSpan(lastSample);
  const sections = status.listeners.map((l) => listenerSection(l, lastSample));
  $("listeners").replaceChildren(...sections);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

let timer = null;
let running = false;

async function refresh() {
  if (running) return;
  running = true;
  clearTimeout(timer);
  try {
    const [status, h] = await Promise.all([
      fetch("status", { cache: "no-store" }).then(checked),
      fetch(`status/history?after=${lastSample}`, { cache: "no-store" }).then(checked),
    ]);
    mergeHistory(h);
    render(status);
    $("problem").hidden = true;
  } catch (e) {
    const problem = $("problem");
    problem.textContent = `cannot reach tcplb: ${e.message || e}`;
    problem.hidden = false;
  } finally {
    running = false;
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function checked(response) {
  if (!response.ok) throw new Error(`${response.url}: ${response.status}`);
  return response.json();
}

$("token").addEventListener("input", (event) => {
  token = event.target.value.trim();
});

refresh();

// A UDP listener's datagrams (its "active" and "accepted" are sessions),
// and its drops with their reasons in the tooltip.
function udpFigures(udp, listed) {
  const drops = Object.entries(udp.dropped || {}).filter(([, n]) => n > 0);
  const dropped = drops.reduce((sum, [, n]) => sum + n, 0);
  return [
    ["datagrams to backends", udp.datagrams_to_backends, ""],
    ["datagrams to clients", udp.datagrams_to_clients, ""],
    ["datagrams dropped", dropped, dropped ? "warn" : "", listed(drops)],
  ];
}
