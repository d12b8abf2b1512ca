// The reachability heat map: polls api/v1/matrix and api/v1/nodes every
// POLL_MS, rebuilds the table only when the node list changes and otherwise
// updates cells in place. Data only ever reaches the page as textContent.
//
// Two modes: live (polling) or "as of" a moment, when the matrix of that
// moment is fetched once from the store (api/v1/matrix?at=) and the cell
// details ask api/v1/why with the same moment. A cell's details also show
// its last 24 hours from api/v1/history as a strip of coloured intervals.
//
// Above the map a summary line (nodes connected, failing and degraded
// cells, the top causes of the first WHY_LIMIT problem cells from
// api/v1/why); beside it the list of problems, each opening its cell; a
// click on a node's name opens its facts (api/v1/nodes/NAME) and recent
// events (api/v1/events?node=NAME). The cells are sized to fit the window.
//
// Past ZONE_VIEW_NODES nodes (or with "by zone" ticked) the page asks for
// the zone × zone grid (api/v1/matrix?view=zones: each pair's worst state
// and counts, and only the cells that are not ok) instead of every cell; a
// click on a zone pair shows that pair node by node (?src_zone=&dst_zone=).
"use strict";

(() => {
  const POLL_MS = 2000;
  // Past this many nodes the node grid is 90,000 cells of the minimum size
  // and the whole matrix megabytes a poll: the zone grid instead.
  const ZONE_VIEW_NODES = 300;
  // The history strip of an open cell is fetched again this often when live.
  const HISTORY_REFRESH_MS = 30000;
  const DAY_MS = 86400 * 1000;
  const PROBE_PORT = 7442;
  // Problem cells explained through api/v1/why at most (failing first), how
  // many requests at a time, how long an answer is kept while its cell does
  // not change (live), and how soon a cell that changed is asked again.
  const WHY_LIMIT = 20;
  const WHY_CONCURRENCY = 3;
  const WHY_TTL_MS = 60000;
  const WHY_RECHECK_MS = 5000;
  // Causes named in the summary line; problems listed; a node's listeners
  // and events shown; how often an open node panel is fetched again (live).
  const TOP_CAUSES = 3;
  const PROBLEMS_SHOWN = 200;
  const LISTENERS_SHOWN = 30;
  const EVENTS_SHOWN = 20;
  const NODE_REFRESH_MS = 10000;
  // Cell size bounds in CSS pixels, the table's border spacing, and the room
  // kept below the map (the page's bottom padding).
  const CELL_MIN = 12;
  const CELL_MAX = 36;
  const SPACING = 1;
  const PAGE_BOTTOM = 16;
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
    tls_error: "The TLS handshake failed: the certificate expired, is for another name or from an untrusted CA, or the port does not speak TLS.",
    degraded: "Some probes failed or were slow in the window: intermittent loss or congestion.",
    ok: "Every probe in the window succeeded.",
  };

  const $ = (id) => document.getElementById(id);
  const model = {
    nodes: [], // names, matrix order
    views: [], // the views of the last answer, in the selector's order
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
    at: null, // null when live, else the Date shown (whole seconds)
    gen: 0, // bumped on every change of mode or moment; older answers are dropped
    loads: 0, // completed "as of" loads
    byZone: null, // null: the zone grid past ZONE_VIEW_NODES nodes; else as ticked
    scope: null, // {src, dst}: one zone pair shown node by node
    rows: [], // the node grid's sources and destinations
    cols: [],
  };

  // Whether the page asks for the zone grid.
  function zoneMode() {
    return model.scope === null && (model.byZone ?? model.connected.size > ZONE_VIEW_NODES);
  }

  // The matrix query's narrowing, after "detail=full".
  function matrixQuery() {
    if (model.scope) {
      return `&src_zone=${encodeURIComponent(model.scope.src)}&dst_zone=${encodeURIComponent(model.scope.dst)}`;
    }
    return zoneMode() ? "&view=zones" : "";
  }

  const zoneName = (z) => (z === "" ? "(no zone)" : z);

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

  const pad = (n) => String(n).padStart(2, "0");

  // A moment as a person reads it, in the browser's zone: 2026-12-01 02:14:00.
  function fmtLocal(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // The value a datetime-local input takes for `d`.
  const inputValue = (d) => fmtLocal(d).replace(" ", "T");

  // A datetime-local value ("2026-12-01T02:14" or with seconds) read in the
  // browser's zone; null when it is not one.
  function parseLocalInput(v) {
    const m = /^(\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/.exec(String(v || "").trim());
    if (!m) return null;
    const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6] || 0));
    d.setFullYear(Number(m[1]));
    return Number.isNaN(d.getTime()) ? null : d;
  }

  // RFC 3339 in UTC, whole seconds: what the API's `at` takes.
  const rfc3339 = (d) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

  // A duration for a caption: 45s, 2m10s, 3h05m, 2d4h.
  function fmtDur(seconds) {
    const n = Math.max(0, Math.round(num(seconds) ?? 0));
    if (n < 60) return `${n}s`;
    if (n < 3600) return n % 60 ? `${Math.floor(n / 60)}m${pad(n % 60)}s` : `${n / 60}m`;
    if (n < 86400) {
      const m = Math.floor((n % 3600) / 60);
      return m ? `${Math.floor(n / 3600)}h${pad(m)}m` : `${Math.floor(n / 3600)}h`;
    }
    const h = Math.floor((n % 86400) / 3600);
    return h ? `${Math.floor(n / 86400)}d${h}h` : `${Math.floor(n / 86400)}d`;
  }

  function cellText(src, dst, cell) {
    const st = stateOf(cell);
    if (!cell) return `${src} → ${dst}: unknown, no data`;
    let s = `${src} → ${dst}: ${st}, loss ${fmtLoss(cell.loss)}, rtt ${fmtMs(cell.rtt_ms)}`;
    if (cell.failure) s += `, last failure ${cell.failure}`;
    return s;
  }

  // ------------------------------------------------------------------ grid

  function buildGrid(rows, cols) {
    const table = $("matrix");
    const headRow = table.tHead.rows[0];
    while (headRow.cells.length > 1) headRow.deleteCell(1);
    const body = table.tBodies[0];
    body.replaceChildren();
    model.cellEls.clear();
    model.rowHeads.clear();
    for (const dst of cols) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.node = dst;
      th.tabIndex = 0;
      th.title = `${dst}: click for its facts and events`;
      const span = document.createElement("span");
      span.textContent = dst;
      th.append(span);
      headRow.append(th);
    }
    const frag = document.createDocumentFragment();
    for (const src of rows) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.dataset.node = src;
      th.tabIndex = 0;
      const marker = document.createElement("span");
      marker.className = "marker";
      const name = document.createElement("span");
      name.textContent = src;
      th.append(marker, name);
      tr.append(th);
      model.rowHeads.set(src, th);
      for (const dst of cols) {
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
    $("empty").hidden = rows.length > 0;
    model.gridKey = `${rows.join("\n")}\u0001${cols.join("\n")}`;
    model.rows = rows;
    model.cols = cols;
    if (nodePanel.name) {
      for (const th of table.querySelectorAll("th[data-node]")) th.classList.toggle("selected", th.dataset.node === nodePanel.name);
    }
    fitGrid();
  }

  function updateRowHeads() {
    for (const [name, th] of model.rowHeads) {
      const c = model.connected.get(name);
      const flag = c === undefined ? "unknown" : String(c);
      if (th.dataset.connected === flag) continue;
      th.dataset.connected = flag;
      th.classList.toggle("disconnected", c === false);
      th.firstChild.textContent = c === false ? "⊘" : "";
      const what = c === false ? `${name}: agent disconnected` : c ? `${name}: agent connected` : name;
      th.title = `${what}; click for its facts and events`;
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
    model.views = views;
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
    if (nodePanel.name) hideNode();
    model.selected = { src, dst };
    for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
    const td = model.cellEls.get(pairKey(src, dst));
    if (td) td.classList.add("selected");
    renderDetails();
    $("details").hidden = false;
    markSelectedProblem();
    queueFit();
  }

  function hideDetails() {
    model.selected = null;
    hist.key = null;
    for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
    const was = !$("details").hidden;
    $("details").hidden = true;
    markSelectedProblem();
    if (was) queueFit();
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
    const note = $("d-asof");
    note.hidden = model.at === null;
    note.textContent = model.at === null ? "" : `as of ${fmtLocal(model.at)} (local)`;
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
    const probePort = kind === "icmp" ? "" : String(cell ? cell.port : port);
    loadWhy(src, dst, probePort);
    loadHistory(src, dst, probePort);
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
      const at = model.at === null ? "" : `&at=${encodeURIComponent(rfc3339(model.at))}`;
      answer = await getJSON(`api/v1/why?src=${encodeURIComponent(src)}&dst=${encodeURIComponent(dst)}&port=${encodeURIComponent(port)}${at}`);
    } catch (e) {
      if (seq === whySeq) box.textContent = `explanation unavailable: ${e.apiError || e.message}`;
      return;
    }
    if (seq !== whySeq) return;
    box.dataset.at = answer.at || "";
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

  // --------------------------------------------------------------- history

  // The strip of the open cell: what was fetched for which question, and the
  // segment a click picked (by its start, so it survives a refresh).
  const hist = { key: null, fetched: 0, seq: 0, data: null, picked: null, goto: null };

  // The 24 hours the strip shows: up to now, or up to the moment shown when
  // that is older than a day.
  function historyWindow() {
    if (model.at !== null && Date.now() - model.at.getTime() > DAY_MS - 60000) {
      const until = model.at.getTime();
      return { query: `since=${encodeURIComponent(rfc3339(new Date(until - DAY_MS)))}&until=${encodeURIComponent(rfc3339(model.at))}`, until };
    }
    return { query: "since=24h", until: null };
  }

  function clearHistory(caption) {
    $("history-strip").replaceChildren();
    $("history-caption").textContent = caption;
    $("history-from").textContent = "";
    $("history-to").textContent = "";
    $("history-seg").replaceChildren();
    $("history-goto").hidden = true;
    $("history").dataset.loaded = "false";
  }

  async function loadHistory(src, dst, port) {
    if (!port) {
      hist.key = null;
      clearHistory("No history for ICMP: choose a TCP view.");
      return;
    }
    const w = historyWindow();
    const key = [src, dst, port, w.query, model.at === null ? "" : rfc3339(model.at)].join("\u0000");
    const pair = [src, dst, port].join("\u0000");
    if (key === hist.key && (model.at !== null || Date.now() - hist.fetched < HISTORY_REFRESH_MS)) return;
    if (!hist.key || !hist.key.startsWith(pair + "\u0000")) {
      hist.picked = null;
      clearHistory("loading history…");
    }
    hist.key = key;
    hist.fetched = Date.now();
    const seq = ++hist.seq;
    let answer;
    try {
      answer = await getJSON(`api/v1/history?src=${encodeURIComponent(src)}&dst=${encodeURIComponent(dst)}&port=${encodeURIComponent(port)}&${w.query}`);
    } catch (e) {
      if (seq === hist.seq) clearHistory(`history unavailable: ${e.apiError || e.message}`);
      return;
    }
    if (seq !== hist.seq) return;
    hist.data = answer;
    drawHistory(answer, w.until);
  }

  const isBad = (state) => state === "failing" || state === "degraded";

  // One interval, with its times as milliseconds; null when unreadable.
  function readInterval(i, index) {
    if (!i || typeof i !== "object") return null;
    const start = Date.parse(i.start);
    if (!Number.isFinite(start)) return null;
    const seconds = Math.max(0, num(i.seconds) ?? 0);
    const parsedEnd = i.end ? Date.parse(i.end) : NaN;
    const end = Number.isFinite(parsedEnd) ? parsedEnd : start + seconds * 1000;
    return { i, index, start, end, seconds, state: STATES.includes(i.state) ? i.state : "unknown", ongoing: !i.end };
  }

  function segmentText(s) {
    let t = `${s.state} for ${fmtDur(s.seconds)}, from ${fmtLocal(new Date(s.start))}`;
    t += s.ongoing ? " until now" : ` to ${fmtLocal(new Date(s.end))}`;
    if (s.i.failure) t += `, ${s.i.failure}`;
    if (isBad(s.state) && num(s.i.loss) !== null) t += `, loss ${fmtLoss(s.i.loss)}`;
    const c = s.i.cause;
    if (c && c.code) t += `; cause ${c.code}${c.node ? ` on ${c.node}` : ""}${c.detail ? `: ${c.detail}` : ""}`;
    else if (isBad(s.state)) t += "; no cause found";
    return t;
  }

  function drawHistory(answer, untilMs) {
    const h = answer && typeof answer === "object" ? answer : {};
    const segs = (Array.isArray(h.intervals) ? h.intervals : []).map(readInterval).filter(Boolean);
    // The end of the window is the server's "now" (where an ongoing
    // interval ends), so the browser's clock does not skew the strip.
    let end = untilMs;
    if (end === null) end = segs.length ? Math.max(...segs.map((s) => s.end)) : Date.now();
    const start = end - DAY_MS;
    const strip = $("history-strip");
    const items = [];
    const drawn = [];
    for (const s of segs) {
      const a = Math.max(s.start, start);
      const b = Math.min(s.end, end);
      if (b <= a && !(s.start >= start && s.start <= end)) continue;
      const seg = document.createElement("button");
      seg.type = "button";
      seg.className = `seg ${s.state}`;
      seg.dataset.state = s.state;
      seg.dataset.seconds = String(s.seconds);
      seg.dataset.start = String(s.i.start);
      seg.dataset.index = String(s.index);
      if (s.i.cause && s.i.cause.code) seg.dataset.cause = s.i.cause.code;
      seg.style.left = `${((a - start) / DAY_MS) * 100}%`;
      seg.style.width = `${(Math.max(0, b - a) / DAY_MS) * 100}%`;
      seg.tabIndex = isBad(s.state) ? 0 : -1;
      const text = segmentText(s);
      seg.title = text;
      seg.setAttribute("aria-label", text);
      seg.setAttribute("aria-pressed", String(hist.picked === s.i.start));
      seg.rmSegment = s;
      items.push(seg);
      drawn.push(s);
    }
    if (model.at !== null) {
      const t = model.at.getTime();
      if (t >= start && t <= end) {
        const mark = document.createElement("div");
        mark.className = "strip-at";
        mark.setAttribute("aria-hidden", "true");
        mark.style.left = `${((t - start) / DAY_MS) * 100}%`;
        items.push(mark);
      }
    }
    strip.replaceChildren(...items);

    const outages = num(h.outages) ?? drawn.filter((s) => s.state === "failing").length;
    const longest = num(h.longest_outage_seconds) ?? 0;
    const span = untilMs === null ? "24h" : `the 24h before ${fmtLocal(new Date(untilMs))}`;
    let caption = outages === 0 ? `No outages in ${span}` : `${outages} outage${outages === 1 ? "" : "s"} in ${span}, longest ${fmtDur(longest)}`;
    const last = drawn[drawn.length - 1];
    if (last && last.ongoing && last.state === "failing") caption += ", failing now";
    else if (outages > 0 && h.last_outage_end) caption += `, the last ended ${fmtTime(h.last_outage_end)}`;
    const degraded = drawn.filter((s) => s.state === "degraded").length;
    if (degraded) caption += `; degraded ${degraded} time${degraded === 1 ? "" : "s"}`;
    const kept = h.retained_since ? Date.parse(h.retained_since) : NaN;
    if (Number.isFinite(kept) && kept > start) caption += ` (history kept since ${fmtLocal(new Date(kept))})`;
    $("history-title").textContent = untilMs === null ? "Last 24 hours" : `24 hours before ${fmtLocal(new Date(untilMs))}`;
    $("history-caption").textContent = caption;
    $("history-from").textContent = fmtLocal(new Date(start)).slice(5, 16);
    $("history-to").textContent = untilMs === null ? "now" : fmtLocal(new Date(end)).slice(5, 16);
    $("history").dataset.loaded = "true";
    const picked = drawn.find((s) => s.i.start === hist.picked);
    showSegment(picked || null, !!picked);
  }

  // What one segment was: its state, times, failure and cause, and (when
  // picked by a click) a button to see the whole matrix at that moment.
  function showSegment(s, picked) {
    const box = $("history-seg");
    const go = $("history-goto");
    if (!s) {
      box.replaceChildren();
      go.hidden = true;
      hist.goto = null;
      return;
    }
    const what = document.createElement("p");
    what.className = "seg-what";
    what.dataset.state = s.state;
    let when = `${s.state} for ${fmtDur(s.seconds)}, from ${fmtLocal(new Date(s.start))}`;
    when += s.ongoing ? " until now" : ` to ${fmtLocal(new Date(s.end))}`;
    if (s.i.failure) when += ` (${s.i.failure}${isBad(s.state) && num(s.i.loss) !== null ? `, loss ${fmtLoss(s.i.loss)}` : ""})`;
    what.textContent = when;
    const parts = [what];
    const c = s.i.cause;
    if (c && c.code) {
      const cause = document.createElement("p");
      cause.className = "seg-cause";
      cause.dataset.code = c.code;
      const code = document.createElement("strong");
      code.textContent = c.code;
      cause.append(code, document.createTextNode(`${c.node ? ` on ${c.node}` : ""}${c.detail ? `: ${c.detail}` : ""}`));
      parts.push(cause);
      if (c.fix) {
        const fix = document.createElement("p");
        fix.className = "why-fix";
        fix.textContent = `fix: ${c.fix}`;
        parts.push(fix);
      }
    } else if (isBad(s.state)) {
      const none = document.createElement("p");
      none.className = "seg-cause";
      none.textContent = "No cause found in the facts of that moment.";
      parts.push(none);
    }
    const changes = Array.isArray(s.i.changes) ? s.i.changes : [];
    if (changes.length) {
      const list = document.createElement("ul");
      list.className = "seg-changes";
      for (const ch of changes) {
        const li = document.createElement("li");
        li.textContent = `${ch.time ? fmtLocal(toDate(ch.time)) + " " : ""}${ch.node || ""} ${ch.kind || ""}: ${ch.detail || ""}`;
        list.append(li);
      }
      parts.push(list);
    }
    box.replaceChildren(...parts);
    box.dataset.index = String(s.index);
    // The matrix a second into the interval: the state it is about is in
    // effect by then (whole seconds, as the API's `at` has them).
    const at = new Date(Math.floor(Math.min(s.start + 1000, Math.max(s.start, s.end)) / 1000) * 1000);
    hist.goto = picked ? at : null;
    go.hidden = !picked;
    go.textContent = `Show the matrix as of ${fmtLocal(at)}`;
    go.dataset.at = rfc3339(at);
  }

  function pickSegment(seg) {
    const s = seg.rmSegment;
    hist.picked = s.i.start;
    for (const b of $("history-strip").querySelectorAll(".seg")) b.setAttribute("aria-pressed", String(b === seg));
    showSegment(s, true);
  }

  // Hovering or focusing a segment shows it; leaving shows the picked one.
  function previewSegment(seg) {
    if (seg) {
      showSegment(seg.rmSegment, seg.rmSegment.i.start === hist.picked);
      return;
    }
    const picked = [...$("history-strip").querySelectorAll(".seg")].find((b) => b.rmSegment.i.start === hist.picked);
    showSegment(picked ? picked.rmSegment : null, !!picked);
  }

  // ------------------------------------------------------------ cell size

  // The cells are as large as the space the heat map has allows, for the
  // number of nodes, between CELL_MIN and CELL_MAX; beyond the minimum the
  // map scrolls. The space is the map's box: its width is what the page's
  // layout gives it (not its content), its height reaches the window's
  // bottom, so the size found does not change the space and never loops.
  let fitQueued = false;
  function queueFit() {
    if (fitQueued) return;
    fitQueued = true;
    requestAnimationFrame(() => {
      fitQueued = false;
      fitGrid();
    });
  }

  function fitGrid() {
    const wrap = $("grid-wrap");
    const table = $("matrix");
    const main = document.querySelector("main");
    const top = wrap.getBoundingClientRect().top + window.scrollY;
    const room = Math.max(160, Math.floor(window.innerHeight - top - PAGE_BOTTOM));
    const height = `${room}px`;
    if (wrap.style.maxHeight !== height) wrap.style.maxHeight = height;
    if (main.style.getPropertyValue("--panel-h") !== height) main.style.setProperty("--panel-h", height);
    const rows = model.rows.length;
    const cols = model.cols.length;
    if (rows === 0 || cols === 0 || wrap.hidden) return;
    const firstRow = table.tBodies[0].rows[0];
    const headW = firstRow ? firstRow.cells[0].getBoundingClientRect().width : 0;
    const headH = table.tHead.getBoundingClientRect().height;
    const width = wrap.getBoundingClientRect().width;
    // n cells and n + 1 spacings on each axis, with half a pixel of slack
    // for rounding.
    const byWidth = Math.floor((width - headW - SPACING * (cols + 1) - 0.5) / cols);
    const byHeight = Math.floor((room - headH - SPACING * (rows + 1) - 0.5) / rows);
    const size = Math.max(CELL_MIN, Math.min(CELL_MAX, byWidth, byHeight));
    const px = `${size}px`;
    if (table.style.getPropertyValue("--cell") !== px) table.style.setProperty("--cell", px);
    table.dataset.cell = String(size);
  }

  // ---------------------------------------------------------- the causes

  // Why the problem cells fail, from api/v1/why: only the first WHY_LIMIT
  // problem cells with a port (failing first), WHY_CONCURRENCY at a time,
  // each answer kept until its cell changes or it is WHY_TTL_MS old (live)
  // — so a fleet with thousands of failing cells costs WHY_LIMIT requests,
  // not thousands.
  const why = {
    cache: new Map(), // key -> {sig, fetched, answer, error, pending}
    queue: [], // keys waiting, in problem order
    inflight: 0,
    asked: 0, // requests made, for the test and the console
    wanted: new Set(), // keys of the cells explained now
  };

  // The moment a cause is asked for: "" when live.
  const whyAt = () => (model.at === null ? "" : rfc3339(model.at));
  const causeKey = (c) => [whyAt(), c.src, c.dst, c.kind, c.port].join("\u0000");
  const causeSig = (c) => `${c.state}/${c.failure || ""}`;
  const explainable = (c) => c.kind !== "icmp" && num(c.port) !== null && c.port > 0;

  // The failing, then degraded cells of every view: probe port first, then
  // ICMP, then services; each by the matrix's order of source and
  // destination.
  function problemCells() {
    const order = new Map(model.nodes.map((n, i) => [n, i]));
    const viewRank = new Map(model.views.map((v, i) => [v.key, i]));
    const at = (n) => order.get(n) ?? order.size;
    const bad = model.cells.filter((c) => c.state === "failing" || c.state === "degraded");
    bad.sort(
      (a, b) =>
        (a.state === "failing" ? 0 : 1) - (b.state === "failing" ? 0 : 1) ||
        (viewRank.get(viewKey(a)) ?? 99) - (viewRank.get(viewKey(b)) ?? 99) ||
        at(a.src) - at(b.src) ||
        at(a.dst) - at(b.dst),
    );
    return bad;
  }

  // Asks for the causes of the cells that lack a current one.
  function explain(problems) {
    const chosen = problems.filter(explainable).slice(0, WHY_LIMIT);
    const now = Date.now();
    why.wanted = new Set(chosen.map(causeKey));
    // Only the cells explained now are kept.
    for (const key of why.cache.keys()) if (!why.wanted.has(key)) why.cache.delete(key);
    why.queue = why.queue.filter((q) => why.wanted.has(q.key));
    for (const c of chosen) {
      const key = causeKey(c);
      const sig = causeSig(c);
      const e = why.cache.get(key);
      if ((e && e.pending) || why.queue.some((q) => q.key === key)) continue;
      const stale = e && (e.sig !== sig ? now - e.fetched > WHY_RECHECK_MS : model.at === null && now - e.fetched > WHY_TTL_MS);
      if (e && !stale) continue;
      why.queue.push({ key, sig, src: c.src, dst: c.dst, port: c.port, at: whyAt() });
    }
    pumpWhy();
    return chosen.length;
  }

  function pumpWhy() {
    while (why.inflight < WHY_CONCURRENCY && why.queue.length) {
      const q = why.queue.shift();
      const old = why.cache.get(q.key);
      why.cache.set(q.key, { sig: q.sig, fetched: Date.now(), answer: old ? old.answer : null, error: null, pending: true });
      why.inflight += 1;
      why.asked += 1;
      const at = q.at ? `&at=${encodeURIComponent(q.at)}` : "";
      getJSON(`api/v1/why?src=${encodeURIComponent(q.src)}&dst=${encodeURIComponent(q.dst)}&port=${encodeURIComponent(q.port)}${at}`)
        .then(
          (answer) => ({ answer, error: null }),
          (e) => ({ answer: null, error: e.apiError || e.message }),
        )
        .then(({ answer, error }) => {
          why.inflight -= 1;
          if (why.wanted.has(q.key)) {
            why.cache.set(q.key, { sig: q.sig, fetched: Date.now(), answer, error, pending: false });
          }
          pumpWhy();
          renderProblems();
        });
    }
  }

  // What the page knows of a cell's cause: {code, text, state} where state
  // is "explained", "none" (no cause found), "pending", "error" or
  // "unexplained" (ICMP, or past WHY_LIMIT).
  function causeOf(c) {
    if (!explainable(c)) return { code: "", text: `${c.kind}: ${c.failure || c.state}, loss ${fmtLoss(c.loss)}`, state: "unexplained" };
    const e = why.wanted.has(causeKey(c)) ? why.cache.get(causeKey(c)) : null;
    if (!e) return { code: "", text: `${c.failure || c.state}, loss ${fmtLoss(c.loss)}; not explained here (only the first ${WHY_LIMIT} are)`, state: "unexplained" };
    if (e.answer) {
      const causes = Array.isArray(e.answer.causes) ? e.answer.causes : [];
      const top = causes.find((x) => x && typeof x.code === "string");
      if (top) return { code: top.code, text: `${top.node ? `on ${top.node}: ` : ""}${top.detail || ""}`, state: "explained" };
      return { code: "", text: `no cause found in the facts (verdict ${e.answer.verdict || "unknown"})`, state: "none" };
    }
    if (e.error) return { code: "", text: `explanation unavailable: ${e.error}`, state: "error" };
    return { code: "", text: "explaining…", state: "pending" };
  }

  // ---------------------------------------------------- summary, problems

  let problemsSig = null;

  // The summary line and the list of problems, from the last answer and the
  // causes known so far.
  function renderProblems() {
    const problems = problemCells();
    const explained = explain(problems);
    const explainableCount = problems.filter(explainable).length;
    let failing = 0;
    let degraded = 0;
    for (const c of problems) {
      if (c.state === "failing") failing += 1;
      else degraded += 1;
    }

    // Nodes.
    const total = model.nodes.length;
    const sum = $("summary");
    const nodesEl = $("sum-nodes");
    if (model.at === null) {
      const connected = model.nodes.filter((n) => model.connected.get(n) === true).length;
      const down = model.nodes.filter((n) => model.connected.get(n) === false).length;
      nodesEl.textContent = `${connected}/${total} nodes connected${down ? ` (${down} disconnected)` : ""}`;
      nodesEl.classList.toggle("bad", down > 0);
      sum.dataset.connected = String(connected);
    } else {
      nodesEl.textContent = `${total} nodes (which were connected then is not known)`;
      nodesEl.classList.remove("bad");
      sum.dataset.connected = "";
    }
    sum.dataset.nodes = String(total);

    // Cells.
    const cellsEl = $("sum-cells");
    cellsEl.textContent = `${failing} failing, ${degraded} degraded of ${model.cells.length} cells`;
    cellsEl.classList.toggle("bad", failing > 0);
    sum.dataset.failing = String(failing);
    sum.dataset.degraded = String(degraded);
    sum.dataset.cells = String(model.cells.length);

    // Top causes of the cells explained.
    const counts = new Map();
    let none = 0;
    let answered = 0;
    const items = problems.slice(0, PROBLEMS_SHOWN).map((c) => ({ c, cause: causeOf(c) }));
    for (const c of problems.filter(explainable).slice(0, WHY_LIMIT)) {
      const k = causeOf(c);
      if (k.state === "explained") counts.set(k.code, (counts.get(k.code) || 0) + 1);
      if (k.state === "none") none += 1;
      if (k.state === "explained" || k.state === "none") answered += 1;
    }
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const causesEl = $("sum-causes");
    sum.dataset.explained = String(answered);
    sum.dataset.explainable = String(explainableCount);
    sum.dataset.causes = JSON.stringify(Object.fromEntries(top));
    if (explainableCount === 0) {
      causesEl.textContent = problems.length ? "no TCP problem to explain" : "no problems";
    } else {
      const of = explainableCount > explained ? ` of the first ${explained} of ${explainableCount}` : "";
      const pending = answered < explained ? `, ${explained - answered} being explained` : "";
      const list = top.slice(0, TOP_CAUSES).map(([code, n]) => `${code} ×${n}`);
      if (top.length > TOP_CAUSES) list.push(`${top.length - TOP_CAUSES} more`);
      if (none) list.push(`no cause found ×${none}`);
      causesEl.textContent = `top causes${of}: ${list.length ? list.join(", ") : "none yet"}${pending}`;
    }

    // The list, rebuilt only when what it shows changed.
    const sig = items.map(({ c, cause }) => [viewKey(c), c.src, c.dst, c.state, cause.state, cause.code, cause.text].join("\u0001")).join("\u0000");
    const note = $("problems-note");
    note.textContent = problems.length ? "" : model.cells.length ? "No failing or degraded cells." : "No cells yet.";
    const more = $("problems-more");
    more.hidden = problems.length <= PROBLEMS_SHOWN;
    more.textContent = `and ${problems.length - PROBLEMS_SHOWN} more not listed`;
    $("problems").dataset.count = String(problems.length);
    if (sig === problemsSig) return;
    problemsSig = sig;
    const list = $("problems-list");
    const rows = items.map(({ c, cause }) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = `problem ${c.state}`;
      b.dataset.src = c.src;
      b.dataset.dst = c.dst;
      b.dataset.view = viewKey(c);
      b.dataset.state = c.state;
      b.dataset.code = cause.code;
      b.dataset.cause = cause.state;
      const head = document.createElement("span");
      head.className = "p-head";
      const pair = document.createElement("span");
      pair.className = "p-pair";
      pair.textContent = `${c.src} → ${c.dst}`;
      const view = document.createElement("span");
      view.className = "p-view";
      view.textContent = viewLabel(c.kind, c.port, c.service || "").replace(/^probe /, "");
      head.append(pair, view);
      const code = document.createElement("span");
      code.className = `p-code ${c.state}`;
      code.textContent = cause.code || (c.state === "failing" ? "FAILING" : "DEGRADED");
      const text = document.createElement("span");
      text.className = "p-text";
      text.textContent = cause.text;
      b.title = `${c.src} → ${c.dst} (${view.textContent}), ${c.state}: ${cause.code ? cause.code + " " : ""}${cause.text}`;
      b.append(head, code, text);
      li.append(b);
      return li;
    });
    list.replaceChildren(...rows);
    markSelectedProblem();
  }

  function markSelectedProblem() {
    const s = model.selected;
    for (const b of $("problems-list").querySelectorAll("button.problem")) {
      const on = !!s && b.dataset.src === s.src && b.dataset.dst === s.dst && b.dataset.view === model.view;
      if (on) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
  }

  // A problem's cell in its own view, with its details open.
  function openProblem(b) {
    const key = b.dataset.view;
    if (key && key !== model.view) {
      model.view = key;
      updateViews();
      updateCells();
    }
    showDetails(b.dataset.src, b.dataset.dst);
    const td = model.cellEls.get(pairKey(b.dataset.src, b.dataset.dst));
    if (td) td.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  // ------------------------------------------------------------ node panel

  const nodePanel = { name: null, seq: 0, fetched: 0, loads: 0 };

  function showNode(name) {
    hideDetails();
    nodePanel.name = name;
    nodePanel.fetched = 0;
    for (const th of document.querySelectorAll("#matrix th.selected")) th.classList.remove("selected");
    for (const th of document.querySelectorAll(`#matrix th[data-node]`)) if (th.dataset.node === name) th.classList.add("selected");
    const panel = $("node");
    panel.dataset.node = name;
    panel.dataset.loaded = "false";
    $("node-title").textContent = name;
    $("n-state").textContent = "loading…";
    panel.hidden = false;
    queueFit();
    loadNode();
  }

  function hideNode() {
    nodePanel.name = null;
    nodePanel.seq += 1;
    for (const th of document.querySelectorAll("#matrix th.selected")) th.classList.remove("selected");
    $("node").hidden = true;
    queueFit();
  }

  // The events the panel lists: the last day, or the day before the moment
  // shown.
  function nodeEventsQuery() {
    if (model.at === null) return "since=24h";
    return `since=${encodeURIComponent(rfc3339(new Date(model.at.getTime() - DAY_MS)))}&until=${encodeURIComponent(rfc3339(model.at))}`;
  }

  async function loadNode() {
    const name = nodePanel.name;
    if (!name) return;
    const seq = ++nodePanel.seq;
    nodePanel.fetched = Date.now();
    const enc = encodeURIComponent(name);
    const [detail, events] = await Promise.allSettled([
      getJSON(`api/v1/nodes/${enc}`),
      getJSON(`api/v1/events?node=${enc}&${nodeEventsQuery()}&limit=${EVENTS_SHOWN}`),
    ]);
    if (seq !== nodePanel.seq || name !== nodePanel.name) return;
    renderNode(name, detail, events);
    nodePanel.loads += 1;
    $("node").dataset.loaded = "true";
    $("node").dataset.loads = String(nodePanel.loads);
  }

  function fmtBytes(v) {
    const n = num(v);
    if (n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let x = n;
    let i = 0;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i += 1;
    }
    return `${i === 0 ? x : x.toFixed(1)} ${units[i]}`;
  }

  const hostPort = (a, p) => (String(a).includes(":") ? `[${a}]:${p}` : `${a}:${p}`);

  // The number of rules in a firewall view (every chain of every table).
  function ruleCount(fw) {
    let n = 0;
    for (const t of Array.isArray(fw.tables) ? fw.tables : []) {
      for (const ch of Array.isArray(t.chains) ? t.chains : []) n += Array.isArray(ch.rules) ? ch.rules.length : 0;
    }
    return n;
  }

  function firewallText(fw) {
    if (!fw) return "not reported";
    const tables = Array.isArray(fw.tables) ? fw.tables.length : 0;
    const rules = ruleCount(fw);
    let s = `${fw.backend || "unknown"}: ${rules} rule${rules === 1 ? "" : "s"} in ${tables} table${tables === 1 ? "" : "s"}`;
    if (num(fw.generation) !== null) s += `, generation ${fw.generation}`;
    if (fw.error) s += `; cannot be read: ${fw.error}`;
    return s;
  }

  function resourcesText(r) {
    if (!r) return "not reported";
    const parts = [];
    const load = [r.load1, r.load5, r.load15].map((v) => (num(v) === null ? "–" : v.toFixed(2))).join(" / ");
    parts.push(`load ${load} on ${num(r.cpus) ?? "?"} CPUs`);
    if (num(r.cpu_busy_pct) !== null) parts.push(`CPU ${r.cpu_busy_pct.toFixed(0)}% busy`);
    if (num(r.cpu_steal_pct) !== null && r.cpu_steal_pct >= 1) parts.push(`steal ${r.cpu_steal_pct.toFixed(0)}%`);
    if (num(r.mem_total_bytes)) parts.push(`memory ${fmtBytes(r.mem_available_bytes)} free of ${fmtBytes(r.mem_total_bytes)}${r.memory_trend && r.memory_trend !== "unknown" ? ` (${r.memory_trend})` : ""}`);
    if (num(r.conntrack_count) !== null) parts.push(`conntrack ${r.conntrack_count}${num(r.conntrack_max) !== null ? `/${r.conntrack_max}` : ""}`);
    if (num(r.disk_root_total_bytes)) parts.push(`disk / ${Math.round(((r.disk_root_used_bytes || 0) / r.disk_root_total_bytes) * 100)}% used`);
    if (num(r.listen_overflows)) parts.push(`${r.listen_overflows} listen overflows`);
    return parts.join(" · ");
  }

  function renderNode(name, detailR, eventsR) {
    const err = $("n-error");
    const asof = $("n-asof");
    asof.hidden = model.at === null;
    asof.textContent = model.at === null ? "" : `Facts are the node's current ones; events are of the day before ${fmtLocal(model.at)} (local).`;
    const problems = [];
    if (detailR.status === "rejected") problems.push(`facts unavailable: ${detailR.reason.apiError || detailR.reason.message}`);
    if (eventsR.status === "rejected") problems.push(`events unavailable: ${eventsR.reason.apiError || eventsR.reason.message}`);
    err.hidden = problems.length === 0;
    err.textContent = problems.join("; ");

    const d = detailR.status === "fulfilled" && detailR.value && typeof detailR.value === "object" ? detailR.value : {};
    const n = d.node && typeof d.node === "object" ? d.node : null;
    const panel = $("node");
    panel.dataset.connected = n ? String(n.connected === true) : "unknown";
    const stateEl = $("n-state");
    if (n) {
      const clock = num(n.clock_offset_ms) === null ? "" : `, clock ${n.clock_offset_ms >= 0 ? "+" : ""}${n.clock_offset_ms.toFixed(1)} ms`;
      stateEl.textContent = `${n.connected ? "connected" : "disconnected"}, last seen ${fmtTime(n.last_seen)}${clock}`;
      stateEl.className = n.connected ? "state ok" : "state failing";
    } else {
      stateEl.textContent = detailR.status === "fulfilled" ? "no summary reported" : "";
      stateEl.className = "";
    }
    const h = d.host && typeof d.host === "object" ? d.host : null;
    $("n-host").textContent = h ? `${h.hostname || name}, ${h.os || "?"}, kernel ${h.kernel || "?"}, up ${fmtDur(h.uptime_seconds)}` : "not reported";

    // Addresses: the node's, then each interface with its own.
    const addrs = $("n-addresses");
    const lines = [];
    const own = n && Array.isArray(n.addresses) ? n.addresses : [];
    const ifaces = Array.isArray(d.interfaces) ? d.interfaces : [];
    for (const i of ifaces) {
      const a = Array.isArray(i.addresses) ? i.addresses : [];
      if (!a.length) continue;
      const line = document.createElement("div");
      line.className = "n-iface";
      line.dataset.iface = i.name;
      line.textContent = `${i.name} (${i.state || "?"}): ${a.join(", ")}`;
      lines.push(line);
    }
    if (!lines.length) {
      const line = document.createElement("div");
      line.textContent = own.length ? own.join(", ") : "none reported";
      lines.push(line);
    }
    addrs.replaceChildren(...lines);
    addrs.dataset.addresses = own.join(",");
    $("n-agent").textContent = n ? `${n.version || "?"}${n.dropped_events_total ? `, ${n.dropped_events_total} events dropped` : ""}` : "–";

    const fw = d.firewall && typeof d.firewall === "object" ? d.firewall : null;
    const fwEl = $("n-firewall");
    fwEl.textContent = firewallText(fw);
    fwEl.dataset.backend = fw ? fw.backend || "" : "";
    fwEl.dataset.rules = fw ? String(ruleCount(fw)) : "";
    $("n-resources").textContent = resourcesText(d.resources && typeof d.resources === "object" ? d.resources : null);
    const s = d.sockets && typeof d.sockets === "object" ? d.sockets : null;
    $("n-sockets").textContent = s ? `tcp ${s.tcp_total ?? 0} (${s.tcp_established ?? 0} established, ${s.tcp_time_wait ?? 0} time-wait), udp ${s.udp_total ?? 0}` : "–";

    // Listeners.
    const listeners = Array.isArray(d.listeners) ? d.listeners : [];
    const body = $("n-listeners").tBodies[0];
    body.replaceChildren(
      ...listeners.slice(0, LISTENERS_SHOWN).map((l) => {
        const tr = document.createElement("tr");
        tr.dataset.port = String(l.port);
        tr.dataset.protocol = String(l.protocol);
        tr.dataset.scope = String(l.scope);
        const p = Array.isArray(l.processes) && l.processes[0] ? l.processes[0] : null;
        const cells = [
          l.protocol,
          hostPort(l.address, l.port),
          l.scope === "loopback" ? "loopback only" : l.scope === "any" ? "all" : "one address",
          p ? `${p.name}[${p.pid}]` : "–",
          String(l.established ?? 0),
        ];
        for (const v of cells) {
          const td = document.createElement("td");
          td.textContent = String(v ?? "");
          tr.append(td);
        }
        if (p && p.unit) tr.title = `${p.name}[${p.pid}] of ${p.unit}`;
        if (l.scope === "loopback") tr.className = "warn";
        return tr;
      }),
    );
    $("n-listeners").dataset.count = String(listeners.length);
    const lmore = $("n-listeners-more");
    lmore.hidden = listeners.length > 0 && listeners.length <= LISTENERS_SHOWN;
    lmore.textContent = listeners.length === 0 ? "none reported" : `and ${listeners.length - LISTENERS_SHOWN} more`;

    // Fact sources.
    const sources = Array.isArray(d.sources) ? d.sources : [];
    const blind = new Set(n && Array.isArray(n.blind) ? n.blind : []);
    const srcList = $("n-sources");
    srcList.replaceChildren(
      ...sources.map((src) => {
        const li = document.createElement("li");
        li.dataset.source = src.source;
        li.dataset.state = src.state;
        li.className = `src ${src.state}`;
        let t = `${src.source}: ${src.state}`;
        if (src.since) t += ` since ${fmtTime(src.since)}`;
        if (blind.has(src.source)) t += " — blind: its facts are missing";
        if (src.last_error) t += `; last error: ${src.last_error}`;
        if (src.errors_total) t += ` (${src.errors_total} errors, ${src.restarts_total || 0} restarts)`;
        li.textContent = t;
        return li;
      }),
    );
    if (!sources.length) {
      const li = document.createElement("li");
      li.textContent = "none reported";
      srcList.append(li);
    }
    srcList.dataset.count = String(sources.length);

    // Recent events, newest first: the stored ones, or the node's own
    // recent ones when the store cannot be asked.
    let evs = [];
    let note = "";
    if (eventsR.status === "fulfilled" && eventsR.value && Array.isArray(eventsR.value.events)) {
      evs = eventsR.value.events.filter((e) => !e.node || e.node === name);
      note = eventsR.value.truncated ? `the last ${evs.length} of the day; more are in reachmap events --node ${name}` : evs.length ? "" : `no events in ${model.at === null ? "the last 24 hours" : "the day before that moment"}`;
    } else if (Array.isArray(d.events)) {
      evs = d.events.slice(0, EVENTS_SHOWN);
      note = "recent events the collector holds in memory";
    }
    const stamp = (e) => {
      const t = Date.parse(e.time || e.received || "");
      return Number.isFinite(t) ? t : 0;
    };
    // The store answers oldest first: reversed before the (stable) sort,
    // events of the same moment stay newest first.
    evs = [...evs].reverse().sort((a, b) => stamp(b) - stamp(a)).slice(0, EVENTS_SHOWN);
    const evList = $("n-events");
    evList.replaceChildren(
      ...evs.map((e) => {
        const li = document.createElement("li");
        li.dataset.kind = e.kind || "";
        const when = document.createElement("span");
        when.className = "ev-time";
        when.textContent = e.time || e.received ? fmtTime(e.time || e.received) : "–";
        const kind = document.createElement("strong");
        kind.textContent = ` ${e.kind || "event"}`;
        li.append(when, kind, document.createTextNode(e.detail ? `: ${e.detail}` : ""));
        return li;
      }),
    );
    evList.dataset.count = String(evs.length);
    $("n-events-note").textContent = note;
  }

  // ------------------------------------------------------------------- data

  // The answer's JSON; an error carries the HTTP status and the API's own
  // one-line `error`, when it gave one.
  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) {
      let apiError = "";
      try {
        const body = await r.json();
        if (body && typeof body.error === "string") apiError = body.error;
      } catch (_) {
        // not JSON: the status says enough
      }
      const e = new Error(`${path}: HTTP ${r.status}${apiError ? `: ${apiError}` : ""}`);
      e.status = r.status;
      e.apiError = apiError;
      throw e;
    }
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
    const zones = model.scope === null && matrix && Array.isArray(matrix.zones) ? matrix.zones : null;
    let rows = names;
    let cols = names;
    if (zones) {
      // The zone grid: the fleet's nodes are those the nodes answer names.
      rows = [];
      cols = [];
      if (model.connected.size) names = [...model.connected.keys()].sort();
    } else if (model.scope) {
      rows = [...new Set(model.cells.map((c) => c.src))].sort();
      cols = [...new Set(model.cells.map((c) => c.dst))].sort();
      names = [...new Set([...rows, ...cols])].sort();
    }
    renderZones(zones);
    if (`${rows.join("\n")}\u0001${cols.join("\n")}` !== model.gridKey) buildGrid(rows, cols);
    model.nodes = names;
    if (model.scope) {
      $("empty").textContent = `No cells from zone ${zoneName(model.scope.src)} to zone ${zoneName(model.scope.dst)}.`;
    } else {
      $("empty").textContent = model.at === null ? EMPTY_LIVE : "No cells at that moment: no node had reported yet.";
    }
    if (zones) $("empty").hidden = true;
    updateViews();
    updateCells();
    updateRowHeads();
    renderDetails();
    renderProblems();
    document.body.dataset.applyMs = (performance.now() - started).toFixed(1);
  }

  function markUpdated() {
    const now = new Date();
    const t = $("updated");
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString();
  }

  // Fleet findings (api/v1/findings), live only and every few polls (the
  // collector explains cells for them): what is wrong with the fleet as a
  // whole, each once, most severe first; a click opens its first cell.
  const FINDINGS_EVERY = 3;

  async function loadFindings() {
    const gen = model.gen;
    try {
      const r = await getJSON("api/v1/findings");
      if (gen !== model.gen) return;
      const list = $("findings-list");
      list.replaceChildren();
      for (const f of r.findings) {
        const li = document.createElement("li");
        li.className = "finding";
        li.dataset.kind = f.kind;
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = f.title;
        const first = f.cells[0];
        if (first) {
          b.title = `${f.cell_count} cell(s); opens ${first.src} → ${first.dst}`;
          b.addEventListener("click", () => showDetails(first.src, first.dst));
        } else {
          b.disabled = true;
        }
        li.append(b);
        for (const [cls, text] of [["finding-detail", f.detail], ["finding-fix", f.fix && `fix: ${f.fix}`]]) {
          if (!text) continue;
          const p = document.createElement("p");
          p.className = cls;
          p.textContent = text;
          li.append(p);
        }
        list.append(li);
      }
      $("findings-note").textContent = r.findings.length
        ? `${r.findings.length} finding(s); ${r.bad_cells} of ${r.cells} cells failing or degraded, ${r.uncovered_cells} not covered by one`
        : "no findings: nothing is wrong with the fleet as a whole";
      document.body.dataset.findings = String(r.findings.length);
    } catch (e) {
      if (gen === model.gen) $("findings-note").textContent = `findings unavailable: ${e.message}`;
    }
  }

  // The zone grid, or none (`zones` null): a cell per (source zone,
  // destination zone) with its worst state and how many cells are not ok.
  function renderZones(zones) {
    const table = $("zones");
    table.hidden = zones === null;
    $("matrix").hidden = zones !== null;
    $("by-zone").checked = zones !== null || model.scope !== null;
    const scope = $("scope");
    scope.hidden = model.scope === null;
    if (model.scope) $("scope-text").textContent = `zone ${zoneName(model.scope.src)} → zone ${zoneName(model.scope.dst)}, node by node`;
    document.body.dataset.zoneView = zones === null ? (model.scope ? "pair" : "") : "zones";
    if (zones === null) return;
    const src = [...new Set(zones.map((z) => z.src_zone))].sort();
    const dst = [...new Set(zones.map((z) => z.dst_zone))].sort();
    const at = new Map(zones.map((z) => [`${z.src_zone}\u0000${z.dst_zone}`, z]));
    const head = document.createElement("tr");
    const corner = document.createElement("th");
    corner.className = "corner";
    corner.textContent = "src zone \\ dst zone";
    head.append(corner);
    for (const d of dst) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = zoneName(d);
      head.append(th);
    }
    const body = document.createDocumentFragment();
    for (const s of src) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = zoneName(s);
      tr.append(th);
      for (const d of dst) {
        const td = document.createElement("td");
        const z = at.get(`${s}\u0000${d}`);
        if (z) {
          const total = z.ok + z.degraded + z.failing + z.unknown;
          const bad = total - z.ok;
          const st = STATES.includes(z.worst) ? z.worst : "unknown";
          td.className = `zone ${st}`;
          td.dataset.state = st;
          td.dataset.srcZone = s;
          td.dataset.dstZone = d;
          td.tabIndex = 0;
          td.textContent = `${bad}/${total}`;
          td.title = `zone ${zoneName(s)} → zone ${zoneName(d)}: ${st}; ${z.failing} failing, ${z.degraded} degraded, ${z.unknown} unknown, ${z.ok} ok; click for its nodes`;
        } else {
          td.className = "zone none";
          td.title = `no cells from zone ${zoneName(s)} to zone ${zoneName(d)}`;
        }
        tr.append(td);
      }
      body.append(tr);
    }
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(body);
  }

  // Shows one zone pair node by node, or (null) the zone grid again.
  function showPair(scope) {
    model.scope = scope;
    hideDetails();
    refetch();
  }

  // Asks again now, dropping any answer on its way.
  function refetch() {
    model.gen += 1;
    clearTimeout(pollTimer);
    pollTimer = null;
    $("grid-wrap").classList.add("loading");
    if (model.at === null) poll();
    else loadAsOf();
  }

  let pollTimer = null;

  async function poll() {
    const gen = model.gen;
    try {
      // The nodes first: how many there are decides between the zone grid
      // and every cell, which at 10,000 nodes is hundreds of megabytes.
      const [nodes] = await Promise.allSettled([getJSON("api/v1/nodes")]);
      if (gen !== model.gen) return;
      if (nodes.status === "fulfilled" && Array.isArray(nodes.value)) {
        model.connected = new Map(nodes.value.filter((n) => n && typeof n.name === "string").map((n) => [n.name, n.connected === true]));
      }
      const [matrix] = await Promise.allSettled([getJSON(`api/v1/matrix?detail=full${matrixQuery()}`)]);
      // The page went to "as of" (or live again) meanwhile: not ours to show.
      if (gen !== model.gen) return;
      if (matrix.status === "rejected" && nodes.status === "rejected") throw matrix.reason;
      apply(matrix.status === "fulfilled" ? matrix.value : null, nodes.status === "fulfilled" ? nodes.value : null);
      const problems = [matrix, nodes].filter((r) => r.status === "rejected").map((r) => r.reason.message);
      setStatus(problems.length ? `partial data: ${problems.join("; ")}` : "");
      $("grid-wrap").classList.remove("loading");
      markUpdated();
      if (nodePanel.name && Date.now() - nodePanel.fetched > NODE_REFRESH_MS) loadNode();
      if (model.polls % FINDINGS_EVERY === 0) loadFindings();
    } catch (e) {
      if (gen === model.gen) setStatus(`cannot reach the collector: ${e.message}; showing the last answer`);
    } finally {
      if (gen === model.gen && model.at === null) {
        model.polls += 1;
        document.body.dataset.polls = String(model.polls);
        pollTimer = setTimeout(poll, POLL_MS);
      }
    }
  }

  // The matrix of the moment shown, once. Which agents were connected then
  // is not known, so no row is marked disconnected.
  async function loadAsOf() {
    const gen = model.gen;
    const at = model.at;
    try {
      const matrix = await getJSON(`api/v1/matrix?detail=full${matrixQuery()}&at=${encodeURIComponent(rfc3339(at))}`);
      if (gen !== model.gen) return;
      $("grid-wrap").hidden = false;
      $("grid-wrap").classList.remove("loading");
      apply(matrix, []);
      markUpdated();
    } catch (e) {
      if (gen !== model.gen) return;
      const why = e.apiError || e.message;
      const code = e.status ? ` (HTTP ${e.status})` : "";
      showAsOfError(`Cannot show the matrix as of ${fmtLocal(at)}: ${why}${code}`);
    } finally {
      if (gen === model.gen) {
        model.loads += 1;
        document.body.dataset.loads = String(model.loads);
      }
    }
  }

  // One line instead of a matrix that would claim to be of that moment.
  function showAsOfError(text) {
    const el = $("asof-error");
    el.textContent = text;
    el.hidden = false;
    $("grid-wrap").hidden = true;
    $("empty").hidden = true;
    hideDetails();
    // Nothing is claimed of a moment that could not be shown.
    model.cells = [];
    renderProblems();
    $("problems-note").textContent = "Nothing to show for that moment.";
  }

  // -------------------------------------------------------------- the time

  const TITLE = document.title;

  function showMode() {
    const live = model.at === null;
    document.body.dataset.mode = live ? "live" : "asof";
    document.body.dataset.at = live ? "" : rfc3339(model.at);
    $("live").setAttribute("aria-pressed", String(live));
    $("asof-banner").hidden = live;
    // Findings are of the fleet now.
    $("findings").hidden = !live;
    $("asof-error").hidden = true;
    $("asof-error").textContent = "";
    $("at-input").removeAttribute("aria-invalid");
    const text = $("asof-text");
    if (live) {
      text.textContent = "";
      document.title = TITLE;
    } else {
      text.textContent = `as of ${fmtLocal(model.at)} (local)`;
      text.title = `${rfc3339(model.at)} (UTC)`;
      $("at-input").value = inputValue(model.at);
      document.title = `${TITLE} (as of ${fmtLocal(model.at)})`;
    }
    setStatus("");
    if (nodePanel.name) loadNode();
  }

  function leave() {
    model.gen += 1;
    clearTimeout(pollTimer);
    pollTimer = null;
    $("grid-wrap").hidden = false;
    $("grid-wrap").classList.add("loading");
  }

  function goLive() {
    leave();
    model.at = null;
    window.history.replaceState(null, "", location.pathname + location.search);
    showMode();
    poll();
  }

  function goAsOf(date) {
    if (!(date instanceof Date) || Number.isNaN(date.getTime())) return;
    leave();
    model.at = new Date(Math.floor(date.getTime() / 1000) * 1000);
    window.history.replaceState(null, "", `#at=${encodeURIComponent(rfc3339(model.at))}`);
    showMode();
    loadAsOf();
  }

  // A moment from the page's address (#at=2026-12-01T02:14:00Z), so a view
  // of the past can be shared as a link.
  function momentFromHash() {
    const m = /^#at=(.+)$/.exec(location.hash);
    if (!m) return null;
    const d = new Date(decodeURIComponent(m[1]));
    return Number.isNaN(d.getTime()) ? null : d;
  }

  // ----------------------------------------------------------------- events

  const EMPTY_LIVE = "No nodes yet: start an agent pointed at this collector.";

  function init() {
    $("matrix").addEventListener("click", (ev) => {
      const th = ev.target.closest("th[data-node]");
      if (th) {
        showNode(th.dataset.node);
        return;
      }
      const td = ev.target.closest("td[data-src]");
      if (!td || td.classList.contains("self")) return;
      showDetails(td.dataset.src, td.dataset.dst);
    });
    $("matrix").addEventListener("keydown", (ev) => {
      const th = ev.target.closest("th[data-node]");
      if (th && ev.key === "Enter") showNode(th.dataset.node);
      const td = ev.target.closest("td[data-src]");
      if (td && ev.key === "Enter" && !td.classList.contains("self")) showDetails(td.dataset.src, td.dataset.dst);
    });
    $("problems-list").addEventListener("click", (ev) => {
      const b = ev.target.closest("button.problem");
      if (b) openProblem(b);
    });
    $("node-close").addEventListener("click", hideNode);
    window.addEventListener("resize", queueFit);
    // The map's own box (panels opening and closing) and the window's.
    if (typeof ResizeObserver === "function") {
      const ro = new ResizeObserver(queueFit);
      ro.observe($("grid-wrap"));
      ro.observe($("viewport"));
    }
    const openPair = (td) => {
      if (td && td.dataset.srcZone !== undefined) showPair({ src: td.dataset.srcZone, dst: td.dataset.dstZone });
    };
    $("zones").addEventListener("click", (ev) => openPair(ev.target.closest("td[data-src-zone]")));
    $("zones").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") openPair(ev.target.closest("td[data-src-zone]"));
    });
    $("scope-back").addEventListener("click", () => showPair(null));
    $("by-zone").addEventListener("change", (ev) => {
      model.byZone = ev.target.checked;
      showPair(null);
    });
    $("view").addEventListener("change", (ev) => {
      model.view = ev.target.value;
      updateCells();
      renderDetails();
      markSelectedProblem();
    });
    $("details-close").addEventListener("click", hideDetails);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        hideDetails();
        hideNode();
      }
    });

    $("live").addEventListener("click", goLive);
    $("back-live").addEventListener("click", goLive);
    $("timectl").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("at-input");
      const d = parseLocalInput(input.value);
      if (!d) {
        input.setAttribute("aria-invalid", "true");
        setStatus("As of: choose a date and a time (in your local time) first");
        input.focus();
        return;
      }
      goAsOf(d);
    });
    // An empty picker starts from the current minute rather than from nothing.
    $("at-input").addEventListener("focus", (ev) => {
      if (!ev.target.value) ev.target.value = inputValue(new Date(Math.floor(Date.now() / 60000) * 60000));
    });
    for (const b of document.querySelectorAll("#timectl button[data-ago]")) {
      b.addEventListener("click", () => goAsOf(new Date(Date.now() - Number(b.dataset.ago) * 1000)));
    }

    const strip = $("history-strip");
    strip.addEventListener("click", (ev) => {
      const seg = ev.target.closest(".seg");
      if (seg) pickSegment(seg);
    });
    strip.addEventListener("mouseover", (ev) => {
      const seg = ev.target.closest(".seg");
      if (seg) previewSegment(seg);
    });
    strip.addEventListener("mouseleave", () => previewSegment(null));
    strip.addEventListener("focusin", (ev) => {
      const seg = ev.target.closest(".seg");
      if (seg) previewSegment(seg);
    });
    $("history-goto").addEventListener("click", () => {
      if (hist.goto) goAsOf(hist.goto);
    });

    // An address edited by hand, or the browser's back and forward.
    window.addEventListener("hashchange", () => {
      const d = momentFromHash();
      if (d && (model.at === null || d.getTime() !== model.at.getTime())) goAsOf(d);
      else if (!d && model.at !== null) goLive();
    });

    setStatus("");
    const at = momentFromHash();
    if (at) goAsOf(at);
    else {
      showMode();
      poll();
    }
  }

  // For the browser test and the console: the pure helpers, and the mode.
  window.reachmap = {
    viewLabel,
    buildViews,
    cellText,
    fmtLoss,
    fmtMs,
    fmtDur,
    fmtLocal,
    parseLocalInput,
    rfc3339,
    WHY_LIMIT,
    CELL_MIN,
    CELL_MAX,
    whyAsked: () => why.asked,
    mode: () => ({ live: model.at === null, at: model.at === null ? null : rfc3339(model.at), polls: model.polls, loads: model.loads }),
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
