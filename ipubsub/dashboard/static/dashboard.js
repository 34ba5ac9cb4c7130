// ipubsub dashboard: plain JavaScript, no framework, no build step.
// Polls the JSON the serving node gathers (api/overview every 2 s, plus the
// selected node's series) and draws small SVG charts by hand.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const DETAIL_SERIES = [
  ["deliveredPerSecond", "Delivered/s", fmtRate],
  ["sentPerSecond", "Sent/s", fmtRate],
  ["forwardedPerSecond", "Forwarded/s", fmtRate],
  ["waitingReceivers", "Waiting receivers", fmtCount],
  ["blockedSenders", "Blocked senders", fmtCount],
  ["bufferedMessages", "Buffered messages", fmtCount],
  ["bufferedBytes", "Buffered bytes", fmtBytes],
  ["droppedPerSecond", "Drops/s", fmtRate],
  ["errorsPerSecond", "5xx answers/s", fmtRate],
  ["storageWriteMs", "Storage batch write, ms", fmtMs],
  ["streams", "Streams in memory", fmtCount],
];

const state = { selected: null, self: null, filter: "", members: [] };
const $ = (id) => document.getElementById(id);

// -- formatting -----------------------------------------------------------------
function fmtCount(n) {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en-US");
}
function fmtRate(n) {
  if (n === null || n === undefined) return "–";
  return n >= 100 ? fmtCount(n) : n.toFixed(1);
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
function fmtMs(n) { return n === null || n === undefined ? "–" : n.toFixed(2) + " ms"; }
function fmtUptime(s) {
  if (s === null || s === undefined) return "–";
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  return m + "m " + Math.floor(s % 60) + "s";
}

// -- DOM helpers ------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}
function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: "not JSON (HTTP " + response.status + ")" }));
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

// -- charts -------------------------------------------------------------------------
// Points as "x,y" in a 300x90 box; nulls (no storage write in an interval) are skipped.
function chartPoints(values, width, height) {
  const known = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...known);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const points = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    points.push((i * step).toFixed(1) + "," + (height - 2 - (v / max) * (height - 6)).toFixed(1));
  });
  return { points, max };
}

function drawChart(figure, values, format) {
  const svg = figure.querySelector("svg");
  svg.replaceChildren();
  for (const y of [1, 45, 89]) svg.append(svgEl("line", { class: "grid", x1: 0, x2: 300, y1: y, y2: y }));
  const { points } = chartPoints(values, 300, 90);
  if (points.length === 0) {
    const text = svgEl("text", { class: "empty", x: 6, y: 50 });
    text.textContent = values.length ? "no data in this window" : "collecting…";
    svg.append(text);
  } else {
    const first = points[0].split(",")[0], last = points[points.length - 1].split(",")[0];
    svg.append(svgEl("path", { class: "area", d: "M" + first + ",90 L" + points.join(" L") + " L" + last + ",90 Z" }));
    svg.append(svgEl("polyline", { class: "line", points: points.join(" ") }));
  }
  let caption = figure.querySelector("figcaption .now");
  if (!caption) {
    caption = el("span", { class: "now" });
    figure.querySelector("figcaption").append(caption);
  }
  const latest = values.length ? values[values.length - 1] : null;
  const known = values.filter((v) => v !== null && v !== undefined);
  const peak = known.length ? Math.max(...known) : null;
  caption.textContent = format(latest) + " (max " + format(peak) + ")";
  figure.dataset.points = String(points.length);
  figure.dataset.peak = String(peak === null ? 0 : peak);
  figure.dataset.latest = latest === null || latest === undefined ? "" : String(latest);
}

function sparkline(values) {
  const svg = svgEl("svg", { class: "spark", viewBox: "0 0 80 20", preserveAspectRatio: "none" });
  const { points } = chartPoints(values || [], 80, 20);
  if (points.length) svg.append(svgEl("polyline", { points: points.join(" ") }));
  return svg;
}

// -- overview ---------------------------------------------------------------------------
function renderOverview(o) {
  state.self = o.self;
  if (state.selected === null) state.selected = o.self;
  $("cluster-name").textContent = o.cluster;
  $("self-node").textContent = o.self;
  const agreement = o.ringAgreement;
  const badge = $("ring-badge");
  const silent = o.ringMembers - agreement.answered, differ = agreement.answered - agreement.sameAsHere;
  badge.textContent = agreement.agreed
    ? "ring agreed by " + agreement.answered + "/" + o.ringMembers + " (hash " + o.ringHash + ")"
    : "ring: " + agreement.sameAsHere + " of " + o.ringMembers + " agree" +
      (differ ? ", " + differ + " differ" : "") + (silent ? ", " + silent + " no answer" : "");
  badge.className = "badge " + (agreement.agreed ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date(o.generatedAt).toLocaleTimeString();

  const t = o.totals;
  $("total-delivered").textContent = fmtCount(t.delivered);
  $("rate-delivered").textContent = fmtRate(t.deliveredPerSecond);
  $("rate-sent").textContent = fmtRate(t.sentPerSecond);
  $("rate-forwarded").textContent = fmtRate(t.forwardedPerSecond);
  $("total-waiting").textContent = fmtCount(t.waitingReceivers);
  $("total-blocked").textContent = fmtCount(t.blockedSenders);
  $("total-buffered").textContent = fmtCount(t.bufferedMessages) + " / " + fmtBytes(t.bufferedBytes);
  $("rate-dropped").textContent = fmtRate(t.droppedPerSecond);
  const alive = o.members.filter((m) => m.status === "alive").length;
  $("members-count").textContent = alive + " / " + o.members.length;

  for (const figure of document.querySelectorAll("#chart-cluster-delivered, #chart-cluster-sent, #chart-cluster-forwarded")) {
    drawChart(figure, o.series[figure.dataset.series] || [], fmtRate);
  }
  state.members = o.members;
  renderMembers();
}

function renderMembers() {
  const rows = [];
  const filter = state.filter.toLowerCase();
  for (const m of state.members) {
    if (filter && !m.name.toLowerCase().includes(filter) && !m.address.toLowerCase().includes(filter)) continue;
    const latest = m.latest || {};
    const storage = m.storage || {};
    const share = m.inRing ? (m.ringShare * 100).toFixed(1) + " %" : "–";
    const ring = m.ringHashMatches === null ? "?" : m.ringHashMatches ? "✓" : "✗ " + m.ringHash;
    const fill = el("span");
    fill.style.width = (m.ringShare * 100).toFixed(1) + "%";  // CSSOM: allowed by the page's CSP
    const shareBar = el("span", { class: "share" }, fill);
    const status = el("span", { class: "status " + m.status }, m.status + (m.error ? " (no answer)" : ""));
    const row = el("tr", { "data-node": m.name, title: m.error || "" },
      el("td", {}, m.name + (m.name === state.self ? " ★" : "")),
      el("td", {}, status),
      el("td", {}, m.address),
      el("td", {}, m.version || "–"),
      el("td", { class: "num" }, fmtUptime(m.uptimeSeconds)),
      el("td", {}, shareBar, share),
      el("td", { class: "ring" }, ring),
      el("td", { class: "num delivered" }, fmtRate(latest.deliveredPerSecond)),
      el("td", {}, sparkline(m.spark)),
      el("td", { class: "num" }, fmtRate(latest.sentPerSecond)),
      el("td", { class: "num" }, fmtRate(latest.forwardedPerSecond)),
      el("td", { class: "num" }, fmtCount(latest.waitingReceivers)),
      el("td", { class: "num" }, fmtCount(latest.blockedSenders)),
      el("td", { class: "num" }, fmtCount(latest.bufferedMessages) + " / " + fmtBytes(latest.bufferedBytes)),
      el("td", { class: "num" }, fmtRate(latest.droppedPerSecond)),
      el("td", {}, storage.backend ? storage.backend + " " + (storage.status || "") +
        (latest.storageWriteMs != null ? " · " + fmtMs(latest.storageWriteMs) : "") : "–"),
    );
    if (m.stale) row.classList.add("stale");
    if (m.name === state.selected) row.classList.add("selected");
    row.addEventListener("click", () => { state.selected = m.name; renderMembers(); refreshDetail(); });
    rows.push(row);
  }
  document.querySelector("#members tbody").replaceChildren(...rows);
}

// -- one node's charts ---------------------------------------------------------------------
function renderDetail(summary) {
  $("detail-name").textContent = summary.node + " · " + summary.address + " · up " + fmtUptime(summary.uptimeSeconds);
  const box = $("detail-charts");
  for (const [name, label, format] of DETAIL_SERIES) {
    let figure = box.querySelector('[data-series="' + name + '"]');
    if (!figure) {
      figure = el("figure", { class: "chart", id: "chart-node-" + name, "data-series": name }, el("figcaption", {}, label));
      figure.append(svgEl("svg", { viewBox: "0 0 300 90", preserveAspectRatio: "none" }));
      box.append(figure);
    }
    drawChart(figure, (summary.series || {})[name] || [], format);
  }
}

async function refreshDetail() {
  if (state.selected === null) return;
  const name = state.selected;
  try {
    const summary = await getJSON("api/node?node=" + encodeURIComponent(name));
    if (name !== state.selected) return;
    $("detail-error").hidden = true;
    renderDetail(summary);
  } catch (err) {
    $("detail-name").textContent = name;
    $("detail-error").textContent = err.message;
    $("detail-error").hidden = false;
  }
}

async function refresh() {
  try {
    renderOverview(await getJSON("api/overview"));
    $("conn-error").hidden = true;
    await refreshDetail();
  } catch (err) {
    $("conn-error").textContent = "cannot reach this node: " + err.message;
    $("conn-error").hidden = false;
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

// -- stream inspector ------------------------------------------------------------------------
function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [label, value, id] of pairs) {
    dl.append(el("dt", {}, label), el("dd", id ? { id } : {}, value));
  }
  return dl;
}

function renderStream(s) {
  const mem = s.memory, dur = s.durable;
  const out = [facts([
    ["Stream", s.streamId, "inspect-stream"],
    ["Owner", s.owner.node + " (" + s.owner.address + ")", "inspect-owner"],
    ["Answered by", s.servedBy + (s.askedNode !== s.servedBy ? ", asked through " + s.askedNode : "")],
    ["Holds", s.mode, "inspect-mode"],
    ["In memory", mem.present ? mem.mode + (mem.size !== null ? ", size " + mem.size : "") : "no", "inspect-memory"],
    ["Buffered", mem.present ? fmtCount(mem.bufferedMessages) + " messages, " + fmtBytes(mem.bufferedBytes) : "0", "inspect-buffered"],
    ["Waiting receivers", mem.present ? fmtCount(mem.waitingReceivers) : "0", "inspect-waiting"],
    ["Blocked senders", mem.present ? fmtCount(mem.blockedSenders) : "0", "inspect-blocked"],
    ["Durable log", !dur.configured ? "not configured" : dur.backend + " " + dur.status + (dur.error ? ": " + dur.error : "")],
  ])];
  if (dur.messages && dur.messages.length) {
    const body = dur.messages.slice().reverse().map((m) => el("tr", {},
      el("td", { class: "num" }, m.position),
      el("td", {}, m.timestamp),
      el("td", {}, m.messageUuid),
      el("td", { class: "num" }, fmtBytes(m.bytes)),
      el("td", { class: "token" }, m.token),
      el("td", { class: "preview", title: m.preview }, m.preview)));
    const table = el("table", { id: "inspect-messages" },
      el("thead", {}, el("tr", {}, ...["Position", "Time", "messageUuid", "Size", "Token (resume after)", "Payload"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...body));
    out.push(el("h3", {}, "Newest durable messages"), el("div", { class: "scroll" }, table));
  } else if (dur.configured) {
    out.push(el("p", { class: "muted" }, "No durable message."));
  }
  $("inspect-result").replaceChildren(...out);
}

$("inspect-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("inspect-input").value;
  $("inspect-result").replaceChildren(el("p", { class: "muted" }, "looking up " + id + " …"));
  try {
    renderStream(await getJSON("api/stream?streamId=" + encodeURIComponent(id)));
  } catch (err) {
    $("inspect-result").replaceChildren(el("p", { class: "error", id: "inspect-error" }, err.message));
  }
});

$("member-filter").addEventListener("input", (event) => { state.filter = event.target.value; renderMembers(); });

refresh();
