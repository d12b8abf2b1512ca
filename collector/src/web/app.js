// The reachability heat map: polls api/v1/matrix and api/v1/nodes every
// POLL_MS, rebuilds the table only when the node list changes and otherwise
// updates cells in place. Data only ever reaches the page as textContent.
"use strict";

(() => {
  const POLL_MS = 2000;
  const PROBE_PORT = 7442;
  const STATES = ["ok", "degraded", "failing", "unknown"];
  const SYMBOL = { ok: "", degraded: "~", failing: "×", unknown: "?" };
  const HINTS = {
    unknown: "No results for this path: the source's agent is not connected, or it has not probed yet.",
    refused: "The destination answered with a reset: nothing listens on that port there, or a firewall rule rejects it.",
    timeout: "No answer at all: a firewall rule drops the packets, or something on the path blocks them.",
    unreachable: "An ICMP unreachable came back: a router or the destination's firewall refuses the path.",
    no_route: "The source has no route to the destination address.",
    reset: "The connection was reset after it opened: the service or a middlebox closed it.",
    dns_error: "The destination name did not resolve.",
    http_status: "The service answered, with an HTTP status other than the expected one.",
    degraded: "Some probes failed or were slow in the window: intermittent loss or congestion.",
    ok: "Every probe in the window succeeded.",
  };

  const $ = (id) => document.getElementById(id);
  const model = {
    nodes: [], // names, matrix order
    connected: new Map(), // name -> bool
    cells: [], // all cells of the last answer
    index: new Map(), // "src\0dst" -> cell, for the current view
    view: null, // key of the view shown
    selected: null, // {src, dst}
    cellEls: new Map(), // "src\0dst" -> td
    rowHeads: new Map(), // name -> th
    gridKey: null, // node list the table was built for
    shown: null, // grid and view the cells' data attributes describe
    polls: 0,
  };

  // ------------------------------------------------------------ pure helpers

  const pairKey = (src, dst) => `${src}\u0000${dst}`;
  const viewKey = (c) => `${c.kind}/${c.port}/${c.service || ""}`;

  function viewLabel(kind, port, service) {
    if (kind === "icmp") return service ? `icmp ${service}` : "icmp";
    if (service && service !== "probe") return `${kind}/${port} ${service}`;
    return `probe ${kind}/${port}`;
  }

  const DEFAULT_VIEW = { key: `tcp/${PROBE_PORT}/`, label: viewLabel("tcp", PROBE_PORT, ""), rank: 0, port: PROBE_PORT };

  // The views present in `cells`, probe first, then ICMP, then services by port.
  function buildViews(cells, keep) {
    const views = new Map([[DEFAULT_VIEW.key, DEFAULT_VIEW]]);
    for (const c of cells) {
      const key = viewKey(c);
      if (views.has(key)) continue;
      const probe = !c.service || c.service === "probe";
      const rank = c.kind === "icmp" ? 1 : probe ? 0 : 2;
      views.set(key, { key, label: viewLabel(c.kind, c.port, c.service), rank, port: c.port });
    }
    if (keep && !views.has(keep)) views.set(keep, { key: keep, label: `${keep.split("/").slice(0, 2).join("/")} (no cells)`, rank: 3, port: 0 });
    return [...views.values()].sort((a, b) => a.rank - b.rank || a.port - b.port || a.label.localeCompare(b.label));
  }

  const stateOf = (cell) => (cell && STATES.includes(cell.state) ? cell.state : "unknown");
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

  function fmtMs(v) {
    const n = num(v);
    if (n === null) return "–";
    return n < 10 ? `${n.toFixed(2)} ms` : `${n.toFixed(1)} ms`;
  }

  function fmtLoss(v) {
    const n = num(v);
    return n === null ? "–" : `${(n * 100).toFixed(1)}%`;
  }

  // RFC 3339 strings per the API; numbers are read as Unix time in the unit
  // their size suggests (seconds up to nanoseconds).
  function toDate(v) {
    if (typeof v !== "number") return new Date(v);
    const ms = v > 1e17 ? v / 1e6 : v > 1e14 ? v / 1e3 : v > 1e11 ? v : v * 1000;
    return new Date(ms);
  }

  function fmtTime(s) {
    if (!s) return "never";
    const t = toDate(s);
    if (Number.isNaN(t.getTime())) return String(s);
    const ago = Math.max(0, Math.round((Date.now() - t.getTime()) / 1000));
    if (ago >= 86400) return t.toLocaleString();
    const rel = ago < 120 ? `${ago}s` : ago < 7200 ? `${Math.round(ago / 60)} min` : `${Math.round(ago / 3600)} h`;
    return `${t.toLocaleTimeString()} (${rel} ago)`;
  }

  function cellText(src, dst, cell) {
    const st = stateOf(cell);
    if (!cell) return `${src} → ${dst}: unknown, no data`;
    let s = `${src} → ${dst}: ${st}, loss ${fmtLoss(cell.loss)}, rtt ${fmtMs(cell.rtt_ms)}`;
    if (cell.failure) s += `, last failure ${cell.failure}`;
    return s;
  }

  // ------------------------------------------------------------------ grid

  function buildGrid(nodes) {
    const table = $("matrix");
    const headRow = table.tHead.rows[0];
    while (headRow.cells.length > 1) headRow.deleteCell(1);
    const body = table.tBodies[0];
    body.replaceChildren();
    model.cellEls.clear();
    model.rowHeads.clear();
    for (const dst of nodes) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.node = dst;
      const span = document.createElement("span");
      span.textContent = dst;
      th.append(span);
      headRow.append(th);
    }
    const frag = document.createDocumentFragment();
    for (const src of nodes) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.dataset.node = src;
      const marker = document.createElement("span");
      marker.className = "marker";
      const name = document.createElement("span");
      name.textContent = src;
      th.append(marker, name);
      tr.append(th);
      model.rowHeads.set(src, th);
      for (const dst of nodes) {
        const td = document.createElement("td");
        td.dataset.src = src;
        td.dataset.dst = dst;
        if (src === dst) {
          td.className = "self";
        } else {
          td.tabIndex = -1;
          model.cellEls.set(pairKey(src, dst), td);
        }
        tr.append(td);
      }
      frag.append(tr);
    }
    body.append(frag);
    $("empty").hidden = nodes.length > 0;
    model.gridKey = nodes.join("\n");
  }

  function updateRowHeads() {
    for (const [name, th] of model.rowHeads) {
      const c = model.connected.get(name);
      const flag = c === undefined ? "unknown" : String(c);
      if (th.dataset.connected === flag) continue;
      th.dataset.connected = flag;
      th.classList.toggle("disconnected", c === false);
      th.firstChild.textContent = c === false ? "⊘" : "";
      th.title = c === false ? `${name}: agent disconnected` : c ? `${name}: agent connected` : name;
    }
  }

  function updateCells() {
    const [kind, port, service] = model.view.split("/");
    model.index.clear();
    for (const c of model.cells) {
      if (viewKey(c) === model.view) model.index.set(pairKey(c.src, c.dst), c);
    }
    // The view's attributes change only with the view or a new grid.
    const relabel = model.shown !== `${model.gridKey}\u0000${model.view}`;
    model.shown = `${model.gridKey}\u0000${model.view}`;
    for (const [key, td] of model.cellEls) {
      const cell = model.index.get(key);
      const st = stateOf(cell);
      if (relabel) {
        td.dataset.port = port;
        td.dataset.kind = kind;
        td.dataset.service = service;
      }
      // Last values kept on the element as plain properties: comparing them
      // is much cheaper than reading the DOM back for 40,000 cells.
      if (td.rmState !== st) {
        td.rmState = st;
        td.dataset.state = st;
        td.classList.remove(...STATES);
        td.classList.add(st);
        td.textContent = SYMBOL[st];
      }
      const text = cellText(td.dataset.src, td.dataset.dst, cell);
      if (td.rmText !== text) {
        td.rmText = text;
        td.title = text;
        td.setAttribute("aria-label", text);
      }
    }
  }

  function updateViews() {
    const views = buildViews(model.cells, model.view);
    if (!model.view) {
      const probe = views.find((v) => v.key === DEFAULT_VIEW.key && model.cells.some((c) => viewKey(c) === v.key));
      model.view = (probe || views.find((v) => model.cells.some((c) => viewKey(c) === v.key)) || DEFAULT_VIEW).key;
    }
    const select = $("view");
    const have = [...select.options].map((o) => `${o.value}\n${o.text}`).join("\n");
    const want = views.map((v) => `${v.key}\n${v.label}`).join("\n");
    if (have !== want) {
      select.replaceChildren(...views.map((v) => new Option(v.label, v.key)));
    }
    select.value = model.view;
  }

  // --------------------------------------------------------------- details

  function showDetails(src, dst) {
    model.selected = { src, dst };
    for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
    const td = model.cellEls.get(pairKey(src, dst));
    if (td) td.classList.add("selected");
    renderDetails();
    $("details").hidden = false;
  }

  function hideDetails() {
    model.selected = null;
    for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
    $("details").hidden = true;
  }

  function renderDetails() {
    if (!model.selected) return;
    const { src, dst } = model.selected;
    const [kind, port, service] = model.view.split("/");
    const cell = model.index.get(pairKey(src, dst));
    const st = stateOf(cell);
    const panel = $("details");
    panel.dataset.src = src;
    panel.dataset.dst = dst;
    panel.dataset.state = st;
    $("details-title").textContent = `${src} → ${dst}`;
    const address = cell && cell.address ? cell.address : dst;
    $("d-target").textContent = kind === "icmp" ? address : `${address}:${cell ? cell.port : port}`;
    $("d-kind").textContent = cell ? cell.kind : kind;
    $("d-service").textContent = (cell ? cell.service : service) || "probe listener";
    const stateEl = $("d-state");
    stateEl.textContent = st;
    stateEl.className = `state ${st}`;
    $("d-loss").textContent = cell ? fmtLoss(cell.loss) : "–";
    $("d-rtt").textContent = cell ? `${fmtMs(cell.rtt_ms)} / ${fmtMs(cell.rtt_p99_ms)}` : "–";
    let failure = "none in the window";
    if (cell && cell.failure) {
      const when = cell.last_failure || cell.last_failure_at || cell.updated;
      failure = `${cell.failure}${when ? `, ${fmtTime(when)}` : ""}`;
    }
    $("d-failure").textContent = failure;
    $("d-sent").textContent = cell && num(cell.sent) !== null ? String(cell.sent) : "–";
    $("d-updated").textContent = cell ? fmtTime(cell.updated) : "never";
    const hint = cell && cell.failure && st === "failing" ? HINTS[cell.failure] || HINTS[st] : HINTS[st];
    $("d-hint").textContent = hint || "";
    if (model.connected.get(src) === false) {
      $("d-hint").textContent = `The agent on ${src} is disconnected, so this path is not being probed.`;
    }
    loadWhy(src, dst, kind === "icmp" ? "" : String(cell ? cell.port : port));
  }

  // The explanation of the selected cell, from /api/v1/why; answers that
  // arrive after the selection moved on are dropped.
  let whySeq = 0;
  async function loadWhy(src, dst, port) {
    const seq = ++whySeq;
    const box = $("cell-why");
    if (!port) {
      box.replaceChildren();
      return;
    }
    let answer;
    try {
      answer = await getJSON(`api/v1/why?src=${encodeURIComponent(src)}&dst=${encodeURIComponent(dst)}&port=${encodeURIComponent(port)}`);
    } catch (e) {
      if (seq === whySeq) box.textContent = `explanation unavailable: ${e.message}`;
      return;
    }
    if (seq !== whySeq) return;
    const parts = [];
    const head = document.createElement("p");
    head.className = "why-verdict";
    head.dataset.verdict = answer.verdict || "unknown";
    head.textContent = `Verdict: ${String(answer.verdict || "unknown").toUpperCase()}`;
    parts.push(head);
    const causes = Array.isArray(answer.causes) ? answer.causes : [];
    if (causes.length === 0 && answer.verdict !== "reachable") {
      const none = document.createElement("p");
      none.textContent = "No cause found in the facts. Checked: " + (answer.checked || []).join("; ");
      parts.push(none);
    }
    const list = document.createElement("ol");
    for (const c of causes) {
      const li = document.createElement("li");
      li.className = "why-cause";
      li.dataset.code = c.code;
      const title = document.createElement("strong");
      title.textContent = `${c.code} on ${c.node}`;
      li.append(title, document.createTextNode(`: ${c.detail}`));
      const ev = document.createElement("ul");
      for (const e of c.evidence || []) {
        const item = document.createElement("li");
        item.textContent = `${e.kind} [${e.node}${e.time ? " " + fmtTime(e.time) : ""}] ${e.text}`;
        ev.append(item);
      }
      if (c.fix) {
        const fix = document.createElement("li");
        fix.className = "why-fix";
        fix.textContent = `fix: ${c.fix}`;
        ev.append(fix);
      }
      li.append(ev);
      list.append(li);
    }
    if (causes.length) parts.push(list);
    box.replaceChildren(...parts);
  }

  // ------------------------------------------------------------------- data

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  function setStatus(text) {
    const el = $("status");
    el.textContent = text;
    el.hidden = !text;
  }

  function apply(matrix, nodes) {
    const started = performance.now();
    if (Array.isArray(nodes)) {
      model.connected = new Map(nodes.filter((n) => n && typeof n.name === "string").map((n) => [n.name, n.connected === true]));
    }
    let names;
    if (matrix && Array.isArray(matrix.nodes)) {
      names = matrix.nodes.filter((n) => typeof n === "string");
    } else {
      names = [...model.connected.keys()].sort();
    }
    model.cells = matrix && Array.isArray(matrix.cells) ? matrix.cells.filter((c) => c && typeof c.src === "string" && typeof c.dst === "string") : [];
    if (names.join("\n") !== model.gridKey) buildGrid(names);
    updateViews();
    updateCells();
    updateRowHeads();
    renderDetails();
    document.body.dataset.applyMs = (performance.now() - started).toFixed(1);
  }

  async function poll() {
    try {
      const [matrix, nodes] = await Promise.allSettled([getJSON("api/v1/matrix?detail=full"), getJSON("api/v1/nodes")]);
      if (matrix.status === "rejected" && nodes.status === "rejected") throw matrix.reason;
      apply(matrix.status === "fulfilled" ? matrix.value : null, nodes.status === "fulfilled" ? nodes.value : null);
      const problems = [matrix, nodes].filter((r) => r.status === "rejected").map((r) => r.reason.message);
      setStatus(problems.length ? `partial data: ${problems.join("; ")}` : "");
      const now = new Date();
      const t = $("updated");
      t.dateTime = now.toISOString();
      t.textContent = now.toLocaleTimeString();
    } catch (e) {
      setStatus(`cannot reach the collector: ${e.message}; showing the last answer`);
    } finally {
      model.polls += 1;
      document.body.dataset.polls = String(model.polls);
      setTimeout(poll, POLL_MS);
    }
  }

  // ----------------------------------------------------------------- events

  function init() {
    $("matrix").addEventListener("click", (ev) => {
      const td = ev.target.closest("td[data-src]");
      if (!td || td.classList.contains("self")) return;
      showDetails(td.dataset.src, td.dataset.dst);
    });
    $("matrix").addEventListener("keydown", (ev) => {
      const td = ev.target.closest("td[data-src]");
      if (td && ev.key === "Enter" && !td.classList.contains("self")) showDetails(td.dataset.src, td.dataset.dst);
    });
    $("view").addEventListener("change", (ev) => {
      model.view = ev.target.value;
      updateCells();
      renderDetails();
    });
    $("details-close").addEventListener("click", hideDetails);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") hideDetails();
    });
    setStatus("");
    poll();
  }

  // For the browser test and the console: the pure helpers.
  window.reachmap = { viewLabel, buildViews, cellText, fmtLoss, fmtMs };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
