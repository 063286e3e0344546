// The console's pages, drawn from the JSON API. No framework, no build step: each page
// has a render function; live updates re-run it when the store changes.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  return (await apiResponse(path, options)).body;
}

// A listing page: its rows and how many the whole listing has (the X-Total-Count header).
async function apiPage(path) {
  const { body, headers } = await apiResponse(path);
  return { items: body, total: Number(headers.get("X-Total-Count") ?? body.length) };
}

const PAGE = 100;

// "rows 101-200 of 2,501" with links to the pages before and after; the offset lives in the
// address, so a page can be bookmarked and live updates keep it.
function pager(offset, shown, total) {
  if (total <= shown && offset === 0) return null;
  const go = (to) => (e) => {
    e.preventDefault();
    const p = new URLSearchParams(location.search);
    if (to > 0) p.set("offset", to); else p.delete("offset");
    history.pushState(null, "", "?" + p);
    refresh();
  };
  const first = shown ? offset + 1 : 0;
  return el("nav", { class: "pager" },
    offset > 0 ? el("a", { href: "#", class: "prev", onclick: go(Math.max(0, offset - PAGE)), text: "← previous" }) : null,
    el("span", { class: "range", text: ` rows ${first}–${offset + shown} of ${total.toLocaleString()} ` }),
    offset + shown < total ? el("a", { href: "#", class: "next", onclick: go(offset + PAGE), text: "next →" }) : null);
}

function pageOffset() {
  return Math.max(0, Number(new URLSearchParams(location.search).get("offset")) || 0);
}

async function apiResponse(path, options = {}) {
  const init = { credentials: "same-origin", headers: {} };
  if (options.body !== undefined) {
    init.method = options.method || "POST";
    init.body = JSON.stringify(options.body);
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = cookie("orch_csrf");
  }
  const response = await fetch(path, init);
  if (response.status === 401 && location.pathname !== "/login") {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
    throw new ApiError(401, { error: "log in first" });
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" ? body : { error: body });
  return { body, headers: response.headers };
}

function ago(iso) {
  if (!iso) return "-";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "-";
}

function table(headers, rows, cls) {
  return el("table", { class: cls },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows));
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

let me = { name: null, open: true, can_run: false };

// replaceChildren would write "null" for the parts a page leaves out.
function fill(node, ...parts) {
  node.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));
}

// --- pages ---------------------------------------------------------------------------

async function renderInbox(main) {
  const offset = pageOffset();
  const { items, total } = await apiPage(`/api/inbox?limit=${PAGE}&offset=${offset}`);
  const rows = items.map((w) =>
    el("tr", { class: "inbox-row", "data-workflow-id": w.workflow_id },
      el("td", {}, el("a", { href: `/workflows/${encodeURIComponent(w.workflow_id)}`, text: w.workflow_id })),
      el("td", {}, badge(w.waiting_gate, "gate")),
      el("td", { class: "asked", text: w.asked || (w.reason ? `escalated: ${w.reason}` : "") }),
      el("td", { class: "waited", title: when(w.waiting_since), text: ago(w.waiting_since) }),
      el("td", { class: "req", text: w.requirements })));
  fill(main, 
    el("h1", { text: "Inbox" }),
    el("p", { class: "hint", text: "Workflows waiting for a human answer, the longest waiting first." }),
    items.length ? table(["workflow", "gate", "what is asked", "waiting for", "requirement"], rows, "inbox")
      : el("p", { class: "empty", text: offset ? "No rows on this page." : "Nothing waits for you." }),
    pager(offset, items.length, total));
}

async function renderWorkflows(main) {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const k of ["status", "gate"]) if (params.get(k)) query.set(k, params.get(k));
  const offset = pageOffset();
  query.set("limit", PAGE);
  query.set("offset", offset);
  const { items: rows, total } = await apiPage("/api/workflows?" + query);
  const select = (name, values) => el("select", { name, onchange: (e) => {
    const p = new URLSearchParams(location.search);
    if (e.target.value) p.set(name, e.target.value); else p.delete(name);
    p.delete("offset");  // a new filter starts at its first page
    history.replaceState(null, "", "?" + p);
    refresh();
  } }, el("option", { value: "", text: `any ${name}` }),
    values.map((v) => el("option", { value: v, text: v, selected: params.get(name) === v })));
  const body = rows.map((w) => el("tr", { "data-workflow-id": w.workflow_id },
    el("td", {}, el("a", { href: `/workflows/${encodeURIComponent(w.workflow_id)}`, text: w.workflow_id })),
    el("td", {}, badge(w.status)),
    el("td", { text: w.phase }),
    el("td", {}, w.machine_state, w.activity ? el("div", { class: "activity", text: w.activity }) : null),
    el("td", { text: w.current_step ?? "-" }),
    el("td", { text: w.waiting_gate || "-" }),
    el("td", { title: when(w.updated_at), text: ago(w.updated_at) + " ago" })));
  const result = el("p", { id: "start-result", class: "result" });
  const form = el("form", { id: "start-form", class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    let config = null;
    const text = String(data.get("config") || "").trim();
    try {
      if (text) config = JSON.parse(text);
      const made = await api("/api/workflows", { body: { requirements: data.get("requirements"), config } });
      location.href = `/workflows/${encodeURIComponent(made.workflow_id)}`;
    } catch (err) {
      result.textContent = err.message;
      result.className = "result error";
    }
  } },
  el("h2", { text: "Start a workflow" }),
  el("label", {}, "Requirement", el("textarea", { name: "requirements", rows: 3, required: true })),
  el("label", {}, "Config (JSON, optional: e.g. {\"gates\": {\"code_review\": true}})",
    el("textarea", { name: "config", rows: 2 })),
  el("button", { type: "submit", text: me.can_run ? "Start" : "Record (run it with orchestrator resume)" }),
  result);
  fill(main, 
    el("h1", { text: "Workflows" }),
    el("div", { class: "filters" }, select("status", ["running", "awaiting_human", "completed", "rejected", "failed"]),
      select("gate", ["plan", "code_review", "final", "escalation"])),
    rows.length ? table(["workflow", "status", "phase", "state", "step", "waiting at", "updated"], body, "workflows")
      : el("p", { class: "empty", text: "No workflows match." }),
    pager(offset, rows.length, total),
    form);
}

function answerForm(wf, allowed) {
  const result = el("p", { id: "answer-result", class: "result", role: "status" });
  const labels = { approve: "Approve", reject: "Reject", request_changes: "Request changes", accept: "Accept as is" };
  const kinds = allowed.filter((k) => k !== "accept" || wf.waiting_gate === "escalation");
  const form = el("form", { id: "answer-form", class: "card", "data-gate": wf.waiting_gate, onsubmit: async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    const kind = e.submitter ? e.submitter.value : "approve";
    // "FILE:LINE: what to change", one per line, as request-changes --at takes them.
    const atLines = String(data.get("at") || "").split("\n").map((s) => s.trim()).filter(Boolean);
    const at = [];
    for (const line of atLines) {
      const m = /^(.+?:\d+):\s*(.+)$/.exec(line);
      if (!m) {
        result.textContent = `"${line}": write FILE:LINE: what to change, e.g. src/prep.py:42: handle None`;
        result.className = "result error";
        return;
      }
      at.push({ where: m[1], text: m[2] });
    }
    const body = {
      gate: wf.waiting_gate,
      answer: kind,
      comment: String(data.get("comment") || "") || null,
      changes: String(data.get("changes") || "").split("\n").map((s) => s.trim()).filter(Boolean),
      at,
      resume: data.get("resume") === "on",
    };
    if (me.open) {
      body.by = String(data.get("by") || "").trim();
      localStorage.setItem("orch-name", body.by);
    }
    try {
      const done = await api(`/api/workflows/${encodeURIComponent(wf.workflow_id)}/answer`, { body });
      result.textContent = `${done.recorded.answer} recorded at the ${done.recorded.gate} gate by ${done.recorded.by}` +
        (done.resumed ? "; the workflow runs on" : "; continue with orchestrator resume");
      result.className = "result ok";
      form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    } catch (err) {
      result.textContent = err.message;
      result.className = "result error";
    }
  } },
  el("h2", { id: "answer", text: `Answer the ${wf.waiting_gate} gate` }),
  wf.asked ? el("p", { class: "asked", text: wf.asked }) : null,
  me.open ? el("label", {}, "Your name", el("input", { name: "by", id: "by", required: true, value: localStorage.getItem("orch-name") || "" }))
    : el("p", { text: `Answering as ${me.name}` }),
  el("label", {}, "Comment", el("textarea", { name: "comment", id: "comment", rows: 2 })),
  el("label", {}, "Change requests (one per line; needed to request changes)", el("textarea", { name: "changes", id: "changes", rows: 2 })),
  wf.waiting_gate === "code_review" || wf.waiting_gate === "final"
    ? el("label", {}, "Change requests at a line (FILE:LINE: what to change, one per line)", el("textarea", { name: "at", id: "at", rows: 2, placeholder: "src/prep.py:42: handle None" }))
    : null,
  me.can_run ? el("label", { class: "inline" }, el("input", { type: "checkbox", name: "resume", checked: true }), " run on right away") : null,
  el("div", { class: "buttons" }, kinds.map((k) => el("button", { type: "submit", name: "answer", value: k, class: k, text: labels[k] || k }))),
  result);
  return form;
}

function timelineRow(d) {
  const llm = d.llm ? (d.llm.attempts ? `${d.llm.model}, ${d.llm.prompt_tokens}+${d.llm.completion_tokens} tokens, ${Math.round(d.llm.latency_ms)} ms, ${d.llm.outcome}`
    : `not asked (${d.llm.outcome})`) : "-";
  return el("tr", { class: `decision ${d.source}`, "data-seq": d.seq },
    el("td", { text: d.seq }),
    el("td", {}, badge(d.source, "source " + d.source)),
    el("td", { text: d.route }),
    el("td", { text: `${d.from} → ${d.to}` }),
    el("td", {}, el("strong", { text: d.chosen }), d.rationale ? el("div", { class: "why", text: d.rationale }) : null,
      d.alternative ? el("div", { class: "beat", text: `beat: ${d.alternative}` + (d.conflict_reason ? ` (${d.conflict_reason})` : "") }) : null),
    el("td", { class: "signals" }, d.signals.map((s) => el("div", { text: `${s.name} (${s.route}): ${s.detail}` }))),
    el("td", { class: "legal", text: d.legal_actions.join(", ") }),
    el("td", { class: "llm", text: llm }));
}

// Markdown from agents, drawn with DOM nodes only (headings, lists, code blocks,
// paragraphs): nothing in it can become markup or script.
function markdown(text) {
  const out = el("div", { class: "md" });
  let list = null;
  let code = null;
  let para = [];
  const flush = () => {
    if (para.length) out.append(el("p", { text: para.join(" ") }));
    para = [];
  };
  for (const line of String(text || "").split("\n")) {
    if (code !== null) {
      if (line.startsWith("```")) { out.append(el("pre", { text: code.join("\n") })); code = null; }
      else code.push(line);
      continue;
    }
    if (line.startsWith("```")) { flush(); list = null; code = []; continue; }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const item = /^\s*(?:[-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (heading) { flush(); list = null; out.append(el(`h${Math.min(6, heading[1].length + 2)}`, { text: heading[2] })); }
    else if (item) { flush(); if (!list) { list = el("ul"); out.append(list); } list.append(el("li", { text: item[1] })); }
    else if (!line.trim()) { flush(); list = null; }
    else { list = null; para.push(line.trim()); }
  }
  flush();
  if (code !== null) out.append(el("pre", { text: code.join("\n") }));
  return out;
}

// A unified diff, its added and removed lines marked (text only: nothing in it is markup).
function diffPre(text) {
  return el("pre", { class: "diff" }, text.split("\n").map((line) => el("span", {
    class: line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del"
      : line.startsWith("@@") ? "hunk" : null,
    text: line + "\n" })));
}

function diffView(d, title) {
  if (d.error) return el("p", { class: "result error", text: d.error });
  return el("details", { class: "diff-box", open: true },
    el("summary", { text: title }),
    el("pre", { class: "stat", text: d.stat || "(no change)" }),
    d.diff ? diffPre(d.diff) : null,
    d.truncated ? el("p", { class: "hint", text: d.truncated }) : null);
}

// What a human approves at the code-review and final gates: the change against the base.
function changeView(c) {
  if (!c) return null;
  const cov = c.coverage || {};
  const covText = !cov.measured ? "coverage of the changed lines: not measured"
    : cov.executable ? `coverage of the changed lines: ${cov.covered}/${cov.executable} (${cov.percent}%)`
    : "coverage of the changed lines: no executable line changed";
  return el("section", { id: "change" }, el("h2", { text: "The change to approve" }),
    c.branch ? el("p", { text: `branch ${c.branch} against ${c.base} (${(c.base_commit || "").slice(0, 12)})` })
      : el("p", { class: "hint", text: c.note || "" }),
    c.diff !== null && c.diff !== undefined ? diffView(c, "diff against the base")
      : c.files && c.files.length ? el("ul", {}, c.files.map((f) => el("li", { text: f }))) : null,
    c.tools && c.tools.length ? el("p", { text: "tools: " + c.tools.map((t) => `${t.name} ${t.status}`).join(", ") }) : null,
    el("p", { class: "coverage", text: covText }),
    c.error ? el("p", { class: "result error", text: c.error }) : null);
}

function roundBody(r) {
  const res = r.result;
  const parts = [];
  if (r.change_requests.length) parts.push(el("p", { class: "beat", text: "change requests: " + r.change_requests.join("; ") }));
  if (r.error) parts.push(el("p", { class: "result error", text: `${r.error.type}: ${r.error.message}` }));
  if (!res) return parts;
  if (r.summary) parts.push(el("p", { class: "scores", text: r.summary }));
  if (res.kind === "plan") parts.push(markdown(res.markdown));
  if (res.kind === "plan_validation") parts.push(markdown(res.markdown));
  if (res.kind === "code") {
    parts.push(el("p", { text: res.summary || "" }), el("ul", {}, res.files.map((f) => el("li", { text: f }))));
    if (res.refused_paths.length) parts.push(el("p", { class: "result error", text: "refused: " + res.refused_paths.join(", ") }));
    if (r.diff) parts.push(diffView(r.diff, `diff from ${r.diff.from.slice(0, 12)} to ${r.diff.to.slice(0, 12)}`));
  }
  if (res.kind === "code_validation") {
    if (res.tools.length) {
      parts.push(table(["tool", "status", "exit", "seconds", "detail"], res.tools.map((t) => el("tr", {},
        el("td", { text: t.name }), el("td", {}, badge(t.status, t.status === "passed" ? "completed" : "failed")),
        el("td", { text: t.exit_code ?? "-" }), el("td", { text: Number(t.duration_s).toFixed(1) }),
        el("td", {}, el("pre", { class: "detail", text: t.detail })))), "tools"));
    } else if (res.tools_skipped_reason) {
      parts.push(el("p", { class: "hint", text: `tools skipped: ${res.tools_skipped_reason}` }));
    }
    parts.push(markdown(res.review.markdown));
  }
  return parts;
}

async function showFile(wid, path, box) {
  try {
    fill(box, el("h3", { text: path }), el("pre", { text: await api(`/api/workflows/${encodeURIComponent(wid)}/file?path=${encodeURIComponent(path)}`) }));
  } catch (err) {
    fill(box, el("p", { class: "result error", text: err.message }));
  }
}

async function renderWorkflow(main) {
  const wid = main.dataset.workflowId;
  const enc = encodeURIComponent(wid);
  const [info, chart, diagram, rounds] = await Promise.all([
    api(`/api/workflows/${enc}`), api(`/api/workflows/${enc}/chart.svg`), api(`/api/workflows/${enc}/diagram.svg`),
    api(`/api/workflows/${enc}/rounds`)]);
  const open = new Set([...document.querySelectorAll("details.round[open]")].map((d) => d.dataset.key));
  const wf = info.workflow;
  const kept = $("#answer-result");
  const svg = (id, text) => { const box = el("div", { id, class: "svgbox" }); box.innerHTML = text; return box; };
  const fileBox = el("div", { id: "file" });
  const pending = wf.pending_answer;
  fill(main, 
    el("h1", {}, `Workflow ${wid} `, badge(wf.status)),
    el("dl", { class: "summary" },
      el("dt", { text: "state" }), el("dd", { id: "machine-state", text: wf.machine_state + (wf.running ? " (running)" : "") }),
      wf.activity ? [el("dt", { text: "now" }), el("dd", { id: "activity", text: wf.activity })] : null,
      el("dt", { text: "phase" }), el("dd", { text: wf.phase }),
      el("dt", { text: "decisions" }), el("dd", { id: "decision-count", text: wf.decisions }),
      el("dt", { text: "LLM" }), el("dd", { text: `${wf.llm_calls} calls, ${wf.tokens} tokens` }),
      el("dt", { text: "requirement" }), el("dd", { text: wf.requirements }),
      info.repository ? [el("dt", { text: "branch" }), el("dd", { id: "branch", text: `${info.repository.branch} (from ${info.repository.base}; worktree ${info.repository.worktree})` })] : null,
      el("dt", { text: "updated" }), el("dd", { text: when(wf.updated_at) })),
    wf.waiting_gate ? answerForm(wf, info.answers_allowed)
      : pending ? el("p", { class: "card", id: "pending", text: `${pending.answer} by ${pending.by} recorded at the ${pending.gate} gate; waiting for the workflow to run on` }) : null,
    kept && !wf.waiting_gate ? kept : null,
    changeView(info.change),
    el("section", {}, el("h2", { text: "Convergence" }), svg("chart", chart)),
    el("section", {}, el("h2", { text: "State machine" }), svg("diagram", diagram)),
    el("section", {}, el("h2", { text: "Decisions" }),
      table(["#", "source", "route", "transition", "chosen (and why)", "signals", "legal actions", "LLM"], info.decisions.map(timelineRow), "timeline")),
    el("section", {}, el("h2", { text: "Rounds" }),
      rounds.length ? rounds.map((r) => {
        const key = `${r.step}-${r.attempt}-${r.started_at}`;
        return el("details", { class: "round", "data-key": key, open: open.has(key) },
          el("summary", {}, `step ${r.step} (${r.name}), attempt ${r.attempt}: `, badge(r.status, r.status === "failed" ? "failed" : r.status)),
          roundBody(r));
      }) : el("p", { class: "empty", text: "no step run yet" })),
    el("section", {}, el("h2", { text: "Human answers" }),
      info.human_answers.length ? el("ul", { id: "answers" }, info.human_answers.map((a) =>
        el("li", { text: `${when(a.at)}: ${a.by} ${a.answer} at ${a.gate}` + (a.changes.length ? ` — ${a.changes.join("; ")}` : "") + (a.comment ? ` (“${a.comment}”)` : "") })))
        : el("p", { class: "empty", text: "none yet" })),
    el("section", {}, el("h2", { text: "Artifacts" }),
      info.artifacts.length ? el("ul", {}, info.artifacts.map((a) => el("li", {},
        el("a", { href: "#file", onclick: (e) => { e.preventDefault(); showFile(wid, a.path, fileBox); }, text: a.path }), ` (${a.kind})`)))
        : el("p", { class: "empty", text: "none yet" }), fileBox));
}

async function renderLogin(main) {
  const result = el("p", { class: "result" });
  fill(main, el("h1", { text: "Log in" }), el("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("/api/session", { body: { token: new FormData(e.target).get("token") } });
      const next = new URLSearchParams(location.search).get("next") || "/";
      // Only a path on this console: "//host" or a full address would send the user elsewhere.
      location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } catch (err) {
      result.textContent = err.message;
      result.className = "result error";
    }
  } }, el("label", {}, "Access token", el("input", { name: "token", type: "password", required: true })),
  el("button", { type: "submit", text: "Log in" }), result));
}

// --- wiring --------------------------------------------------------------------------

const RENDER = { inbox: renderInbox, workflows: renderWorkflows, workflow: renderWorkflow, login: renderLogin };
let busy = false;
let again = false;

async function refresh() {
  const main = $("#app");
  if (busy) { again = true; return; }
  busy = true;
  try {
    await RENDER[main.dataset.page](main);
    main.dataset.rendered = String(Date.now());
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      fill(main, el("h1", { text: "Error" }), el("p", { class: "result error", text: err.message }));
    }
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function typing() {
  const active = document.activeElement;
  return active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName) && active.value;
}

window.addEventListener("popstate", () => refresh());  // back and forward between pages

function live() {
  const mark = $("#live");
  const source = new EventSource("/api/events");
  source.addEventListener("hello", () => { mark.textContent = "● live"; mark.className = "live on"; });
  source.addEventListener("workflow", (e) => {
    const change = JSON.parse(e.data);
    const main = $("#app");
    if (main.dataset.page === "workflow" && change.workflow_id !== main.dataset.workflowId) return;
    if (typing()) return; // never wipe what someone is writing; the next change redraws
    refresh();
  });
  source.onerror = () => { mark.textContent = "○ reconnecting"; mark.className = "live"; };
}

document.addEventListener("DOMContentLoaded", async () => {
  const page = $("#app").dataset.page;
  if (page !== "login") {
    try {
      me = await api("/api/whoami");
      $("#whoami").textContent = me.open ? "open console (loopback)" : `signed in as ${me.name}`;
    } catch (err) {
      return;
    }
    live();
  }
  refresh();
});
