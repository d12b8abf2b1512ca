// The reachability heat map: polls api/v1/matrix and api/v1/nodes every
// POLL_MS, rebuilds the table only when the node list changes and otherwise
// updates cells in place. Data only ever reaches the page as textContent.
//
// Two modes: live (polling) or "as of" a moment, when the matrix of that
// moment is fetched once from the store (api/v1/matrix?at=) and the cell
// details ask api/v1/why with the same moment. A cell's details also show
// its last 24 hours from api/v1/history as a strip of coloured intervals.
"use strict";

(() => {
  const POLL_MS = 2000;
  // The history strip of an open cell is fetched again this often when live.
  const HISTORY_REFRESH_MS = 30000;
  const DAY_MS = 86400 * 1000;
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
    at: null, // null when live, else the Date shown (whole seconds)
    gen: 0, // bumped on every change of mode or moment; older answers are dropped
    loads: 0, // completed "as of" loads
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
    hist.key = null;
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
    if (names.join("\n") !== model.gridKey) buildGrid(names);
    $("empty").textContent = model.at === null ? EMPTY_LIVE : "No cells at that moment: no node had reported yet.";
    updateViews();
    updateCells();
    updateRowHeads();
    renderDetails();
    document.body.dataset.applyMs = (performance.now() - started).toFixed(1);
  }

  function markUpdated() {
    const now = new Date();
    const t = $("updated");
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString();
  }

  let pollTimer = null;

  async function poll() {
    const gen = model.gen;
    try {
      const [matrix, nodes] = await Promise.allSettled([getJSON("api/v1/matrix?detail=full"), getJSON("api/v1/nodes")]);
      // The page went to "as of" (or live again) meanwhile: not ours to show.
      if (gen !== model.gen) return;
      if (matrix.status === "rejected" && nodes.status === "rejected") throw matrix.reason;
      apply(matrix.status === "fulfilled" ? matrix.value : null, nodes.status === "fulfilled" ? nodes.value : null);
      const problems = [matrix, nodes].filter((r) => r.status === "rejected").map((r) => r.reason.message);
      setStatus(problems.length ? `partial data: ${problems.join("; ")}` : "");
      $("grid-wrap").classList.remove("loading");
      markUpdated();
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
      const matrix = await getJSON(`api/v1/matrix?detail=full&at=${encodeURIComponent(rfc3339(at))}`);
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
  }

  // -------------------------------------------------------------- the time

  const TITLE = document.title;

  function showMode() {
    const live = model.at === null;
    document.body.dataset.mode = live ? "live" : "asof";
    document.body.dataset.at = live ? "" : rfc3339(model.at);
    $("live").setAttribute("aria-pressed", String(live));
    $("asof-banner").hidden = live;
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
    mode: () => ({ live: model.at === null, at: model.at === null ? null : rfc3339(model.at), polls: model.polls, loads: model.loads }),
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
