// agentplay ui: polls the JSON endpoints and redraws; charts are plain SVG.
// Hand-written because the page must work offline with no build step and load
// nothing from outside the server; it draws lines and stacked bars only.
"use strict";

const POLL_MS = Number(document.body.dataset.pollMs || 2000);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x) {
  if (x === null || x === undefined) return "-";
  return Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(3);
}

async function getJSON(url) {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return res.json();
}

function live(ok) {
  const badge = document.getElementById("live");
  if (badge) badge.className = ok ? "live" : "live stale";
}

function poll(fn) {
  const tick = async () => {
    try { await fn(); live(true); } catch (err) { live(false); console.error(err); }
    setTimeout(tick, POLL_MS);
  };
  tick();
}

// -- runs list

function runRow(run) {
  const tr = el("tr", { "data-run-id": run.run_id, class: run.parent ? "child" : "" });
  const link = el("a", { href: "/runs/" + run.run_id }, run.run_id);
  const c = run.status_counts;
  const cells = [link, run.recipe, el("span", { class: "status " + run.status }, run.status),
    String(run.episodes), `${c.ok || 0} / ${c.invalid || 0} / ${c.error || 0}`,
    fmt(run.mean_reward), run.iterations ? String(run.iterations) : "-", run.updated];
  cells.forEach((cell, i) => {
    const td = el("td", [3, 4, 5, 6].includes(i) ? { class: "num" } : {});
    if (typeof cell === "string") td.textContent = cell; else td.appendChild(cell);
    tr.appendChild(td);
  });
  return tr;
}

function runsPage() {
  const body = document.querySelector("#runs tbody");
  poll(async () => {
    const runs = await getJSON("/api/runs");
    if (!runs.length) return;
    body.replaceChildren(...runs.map(runRow));
  });
}

// -- charts

function drawChart(chart, xLabel) {
  const W = 420, H = 220, L = 48, R = 12, T = 10, B = 34;
  const box = el("figure", { class: "chart", "data-chart": chart.key });
  box.appendChild(el("figcaption", {}, chart.title));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  box.appendChild(root);
  const series = chart.series.filter(s => s.points.length);
  if (!series.length) {
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "nodata" }, "no data yet"));
    return box;
  }
  const xs = [...new Set(series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
  let yMin = 0, yMax = 0;
  if (chart.stacked) {
    for (const x of xs) {
      const sum = series.reduce((acc, s) => acc + (s.points.find(p => p[0] === x) || [0, 0])[1], 0);
      yMax = Math.max(yMax, sum);
    }
  } else {
    const ys = series.flatMap(s => s.points.map(p => p[1]));
    yMin = Math.min(0, ...ys); yMax = Math.max(...ys);
  }
  if (yMax - yMin < 1e-9) yMax = yMin + 1;
  const xMin = xs[0], xMax = xs[xs.length - 1], pad = chart.stacked ? 22 : 8;
  const px = x => xMax === xMin ? L + (W - L - R) / 2
    : L + pad + (x - xMin) / (xMax - xMin) * (W - L - R - 2 * pad);
  const py = y => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
  root.appendChild(svg("line", { x1: L, y1: py(yMin), x2: W - R, y2: py(yMin), class: "axis" }));
  root.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const y of [yMin, (yMin + yMax) / 2, yMax]) {
    root.appendChild(svg("text", { x: L - 4, y: py(y) + 4, "text-anchor": "end", class: "tick" }, fmt(y)));
    root.appendChild(svg("line", { x1: L, y1: py(y), x2: W - R, y2: py(y), class: "grid" }));
  }
  const step = Math.max(1, Math.ceil(xs.length / 8));
  for (const x of xs.filter((_, i) => i % step === 0 || i === xs.length - 1)) {
    root.appendChild(svg("text", { x: px(x), y: H - B + 14, "text-anchor": "middle", class: "tick" }, String(x)));
  }
  root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, xLabel));
  if (chart.stacked) {
    const bw = Math.max(3, Math.min(30, (W - L - R - 2 * pad) / xs.length * 0.6));
    const base = Object.fromEntries(xs.map(x => [x, 0]));
    series.forEach((s, i) => {
      for (const [x, y] of s.points) {
        const rect = svg("rect", { x: px(x) - bw / 2, y: py(base[x] + y), width: bw,
          height: Math.max(0, py(base[x]) - py(base[x] + y)), fill: COLORS[i % COLORS.length], class: "point" });
        rect.appendChild(svg("title", {}, `${s.name} @ ${x}: ${fmt(y)}`));
        root.appendChild(rect);
        base[x] += y;
      }
    });
  } else {
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      root.appendChild(svg("polyline", { points: s.points.map(p => `${px(p[0])},${py(p[1])}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 2 }));
      for (const [x, y] of s.points) {
        const dot = svg("circle", { cx: px(x), cy: py(y), r: 3, fill: color, class: "point" });
        dot.appendChild(svg("title", {}, `${s.name} @ ${x}: ${fmt(y)}`));
        root.appendChild(dot);
      }
    });
  }
  const legend = el("div", { class: "chart-legend" });
  series.forEach((s, i) => {
    const last = s.points[s.points.length - 1][1];
    const item = el("span", {}, ` ${s.name} ${fmt(last)}`);
    item.prepend(el("i", { style: `background:${COLORS[i % COLORS.length]}` }));
    legend.appendChild(item);
  });
  box.appendChild(legend);
  return box;
}

// -- episodes

function episodeRow(ep) {
  const tr = el("tr", { "data-episode-id": ep.episode_id, "data-seq": ep.seq, class: "episode" });
  const link = el("a", { href: "/episodes/" + ep.episode_id }, String(ep.index));
  const rewards = Object.entries(ep.rewards).map(([r, v]) => `${r} ${fmt(v)}`).join("  ");
  const cells = [link, String(ep.seq), el("span", { class: "status " + ep.status }, ep.status),
    rewards || "-", ep.summary || ep.error || "", ep.run_id];
  for (const cell of cells) {
    const td = el("td");
    if (typeof cell === "string") td.textContent = cell; else td.appendChild(cell);
    tr.appendChild(td);
  }
  tr.addEventListener("click", ev => { if (ev.target.tagName !== "A") location.href = link.href; });
  return tr;
}

function runPage() {
  const runId = document.getElementById("run-figures").dataset.runId;
  const api = "/api/runs/" + runId.split("/").map(encodeURIComponent).join("/");
  const form = document.getElementById("filters");
  const body = document.querySelector("#episodes tbody");
  let lastSeq = null, query = "";

  function params() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") p.set(k, String(v).trim());
    return p.toString();
  }

  async function episodes(reset) {
    const q = params();
    if (reset || q !== query) { query = q; lastSeq = null; body.replaceChildren(); }
    const url = `${api}/episodes?${q}${lastSeq !== null ? `${q ? "&" : ""}since_seq=${lastSeq}` : ""}`;
    const data = await getJSON(url);
    if (query !== q) return;  // the filter changed while this was in flight
    const rows = data.episodes.map(episodeRow);
    body.prepend(...rows);
    if (lastSeq === null || data.last_seq > lastSeq) lastSeq = data.last_seq;
    document.getElementById("episodes-count").textContent =
      `${data.total} match${q ? " (filtered)" : ""}`;
  }

  async function charts() {
    const data = await getJSON(`${api}/metrics`);
    document.getElementById("charts-source").textContent =
      data.source === "metrics" ? "per training iteration" : `derived from ${data.episodes} episodes`;
    document.getElementById("charts").replaceChildren(...data.charts.map(c => drawChart(c, data.x_label)));
    const run = await getJSON(api);
    for (const node of document.querySelectorAll("#run-figures [data-field]")) {
      const v = run[node.dataset.field];
      node.textContent = typeof v === "number" && node.dataset.field === "mean_reward" ? fmt(v) : String(v ?? "-");
      if (node.dataset.field === "status") node.className = "status " + v;
    }
  }

  form.addEventListener("submit", ev => { ev.preventDefault(); episodes(true).catch(console.error); });
  form.addEventListener("reset", () => setTimeout(() => episodes(true).catch(console.error), 0));
  poll(async () => { await episodes(false); await charts(); });
}

const page = document.body.dataset.page;
if (page === "runs") runsPage();
if (page === "run") runPage();
