// The ttsd dashboard: polls the same JSON endpoints as any client and renders them.
// Every string from the server reaches the DOM through textContent or setAttribute, never
// innerHTML: job names, texts and error messages are user input.

const KEY_STORAGE = "ttsd.apiKey";
const POLL_MS = 1000;
const STATES = ["queued", "running", "done", "failed", "cancelled", "rejected"];
const CANCELLABLE = new Set(["queued", "running"]);

const $ = (id) => document.getElementById(id);

let apiKey = localStorage.getItem(KEY_STORAGE) || "";
let modelsLoaded = false;
let audioUrl = null; // the blob URL the player holds, revoked when replaced
let pollTimer = null;
let polling = false; // a refresh is in flight
let pollAgain = false; // someone asked for a refresh while one was in flight
let noticeTimer = null;

// -- talking to the daemon -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** fetch() with the API key (when one is stored) and a JSON body; shows the key form on 401. */
async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError("The daemon does not answer: is ttsd running?", 0);
  }
  if (response.status === 401) {
    askForKey(apiKey ? "The API key was refused: enter the daemon's TTS_API_KEY." : "This daemon needs an API key.");
  } else if (!$("key-form").hidden && response.ok) {
    $("key-form").hidden = true;
  }
  return response;
}

/** The body as JSON, or null when it is not JSON. */
async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The human message of an error answer: `{"error": {"message"}, "detail"}`. */
function errorMessage(body, response) {
  const message = body?.error?.message ?? body?.detail;
  return typeof message === "string" && message ? message : `HTTP ${response.status} ${response.statusText}`.trim();
}

/** GET (or another method) and the JSON answer; throws ApiError with the server's message. */
async function getJson(path, options) {
  const response = await api(path, options);
  const body = await readJson(response);
  if (!response.ok) throw new ApiError(errorMessage(body, response), response.status);
  return body;
}

// -- small DOM helpers ---------------------------------------------------------------------------

/** An element with text content and attributes. */
function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** Set a node's text only when it changed (no needless layout, no lost text selection). */
function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** The refresh loop's verdict: why the page is not up to date, or nothing. */
function showBanner(message) {
  const banner = $("banner");
  banner.hidden = !message;
  setText(banner, message || "");
}

/** What a click could not do (cancel, play): shown for a while, not cleared by the next refresh. */
function showNotice(message) {
  const notice = $("notice");
  setText(notice, message);
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.hidden = true), 10_000);
}

function askForKey(reason) {
  const form = $("key-form");
  setText($("key-reason"), reason);
  if (form.hidden) {
    form.hidden = false;
    $("key-input").focus();
  }
}

function knownState(state) {
  return STATES.includes(state) ? state : "unknown";
}

// -- formatting ----------------------------------------------------------------------------------

function formatSeconds(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(Math.round(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

/** Local time of an ISO moment; the date too when it is not today. */
function formatMoment(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return iso;
  const time = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (moment.toDateString() === new Date().toDateString()) return time;
  return `${moment.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

/** Progress as a percentage: full when done, whatever the chunk counts say. */
function percentOf(job) {
  if (job.state === "done") return 100;
  const done = job.progress?.chunks_done ?? 0;
  const total = job.progress?.chunks_total ?? 0;
  return total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
}

function audioSeconds(job) {
  const seconds = job.audio?.duration_s ?? job.progress?.audio_s;
  return seconds ? formatSeconds(seconds) : "";
}

// -- the queue table -----------------------------------------------------------------------------

// Rows are kept per job id and updated in place, so a button is never replaced under the pointer
// by the next refresh (the actions cell is rebuilt only when the job's state changes).
const rows = new Map();

function createRow(jobId) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = jobId;
  const cells = {};
  for (const column of ["name", "model", "state", "progress", "eta", "audio", "created", "actions"]) {
    cells[column] = tr.insertCell();
    cells[column].className = `col-${column}`;
  }
  cells.eta.classList.add("num");
  cells.audio.classList.add("num");
  const badge = el("span", "", { class: "state" });
  cells.state.append(badge);
  const bar = el("progress", null, { max: "100", value: "0", "aria-valuemin": "0", "aria-valuemax": "100" });
  const label = el("span", "", { class: "progress-label" });
  cells.progress.append(bar, label);
  const row = { tr, cells, badge, bar, label, state: null };
  rows.set(jobId, row);
  return row;
}

function updateRow(row, job) {
  const state = knownState(job.state);
  const { cells } = row;
  row.tr.dataset.state = state;
  setText(cells.name, job.name);
  cells.name.title = `${job.name} (${job.job_id})${job.speaker ? ` · speaker ${job.speaker}` : ""}`;
  setText(cells.model, job.model ?? "");
  setText(row.badge, state);
  row.badge.className = `state state-${state}`;
  if (job.error?.message) row.badge.title = job.error.message;
  else row.badge.removeAttribute("title");

  const percent = percentOf(job);
  row.bar.value = percent;
  row.bar.setAttribute("aria-valuenow", String(percent));
  const total = job.progress?.chunks_total ?? 0;
  const done = state === "done" ? total : job.progress?.chunks_done ?? 0;
  setText(row.label, total > 0 ? `${done}/${total}` : "");

  const eta = job.progress?.eta_s;
  setText(cells.eta, state === "running" && eta !== null && eta !== undefined ? `~${formatSeconds(eta)}` : "");
  setText(cells.audio, audioSeconds(job));
  setText(cells.created, formatMoment(job.created_at));
  cells.created.title = job.created_at ?? "";

  if (row.state !== state) {
    row.state = state;
    cells.actions.replaceChildren(...actionsFor(job, state));
  }
}

function actionsFor(job, state) {
  if (CANCELLABLE.has(state)) {
    const cancel = el("button", "Cancel", { type: "button", class: "small danger", "data-action": "cancel" });
    cancel.addEventListener("click", () => cancelJob(job, cancel));
    return [cancel];
  }
  if (state === "done") {
    const play = el("button", "Play", { type: "button", class: "small", "data-action": "play" });
    play.addEventListener("click", () => playJob(job, play));
    return [play];
  }
  return [];
}

function renderJobs(jobs) {
  const body = $("job-rows");
  const seen = new Set();
  jobs.forEach((job, index) => {
    seen.add(job.job_id);
    const row = rows.get(job.job_id) ?? createRow(job.job_id);
    updateRow(row, job);
    // Keep the server's order (newest first), moving a row only when it is out of place.
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] ?? null);
  });
  for (const [jobId, row] of rows) {
    if (!seen.has(jobId)) {
      row.tr.remove();
      rows.delete(jobId);
    }
  }
  $("no-jobs").hidden = jobs.length > 0;
  setText($("queue-updated"), `updated ${new Date().toLocaleTimeString()}`);
}

async function cancelJob(job, button) {
  button.disabled = true;
  try {
    await getJson(`/v1/jobs/${encodeURIComponent(job.job_id)}`, { method: "DELETE" });
  } catch (error) {
    showNotice(`Could not cancel ${job.name}: ${error.message}`);
    button.disabled = false;
    return;
  }
  refreshNow();
}

/** Fetch the audio with the key (an <audio src> cannot send headers), then play it from a blob URL. */
async function playJob(job, button) {
  button.disabled = true;
  try {
    const response = await api(`/v1/jobs/${encodeURIComponent(job.job_id)}/audio`);
    if (!response.ok) throw new ApiError(errorMessage(await readJson(response), response), response.status);
    const blob = await response.blob();
    const player = $("player");
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(blob);
    player.src = audioUrl;
    player.dataset.jobId = job.job_id;
    setText($("now-playing"), job.name);
    $("player-box").hidden = false;
    // The browser may refuse to start without a user gesture it trusts; the controls remain.
    await player.play().catch(() => {});
  } catch (error) {
    showNotice(`Could not play ${job.name}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// -- health, workers, failures -------------------------------------------------------------------

function renderHealth(health) {
  setText($("health-status"), health.status ?? "?");
  const device = Array.isArray(health.device) ? health.device.join(", ") : health.device;
  setText($("health-device"), device || "none yet");
  setText($("health-queued"), health.queue?.queued ?? 0);
  setText($("health-running"), health.queue?.running ?? 0);
  setText($("health-uptime"), formatSeconds(health.uptime_sec));
  const loaded = health.models_loaded ?? [];
  setText($("models-loaded"), loaded.length ? loaded.join(", ") : "none");

  // One line per worker process: what it runs, what it does now, and how it was loaded.
  const workers = health.workers ?? [];
  $("workers").replaceChildren(
    ...workers.map((worker) => {
      const item = el("li", null, { "data-model": String(worker.model ?? "") });
      const head = el("div", null, { class: "worker-head" });
      head.append(el("strong", worker.model ?? "?"), el("span", worker.state ?? "", { class: "worker-state" }));
      const details = [
        worker.device,
        worker.dtype,
        worker.batch ? `batch ${worker.batch}` : null,
        worker.pid ? `pid ${worker.pid}` : null,
      ];
      item.append(head, el("div", details.filter(Boolean).join(" · "), { class: "muted" }));
      return item;
    }),
  );
  $("workers").hidden = workers.length === 0;
  $("no-workers").hidden = workers.length > 0;

  const byModel = Object.entries(health.queue?.by_model ?? {});
  $("by-model-rows").replaceChildren(
    ...byModel.map(([model, counts]) => {
      const summary = Object.entries(counts)
        .filter(([, count]) => count > 0)
        .map(([state, count]) => `${count} ${state}`)
        .join(", ");
      const tr = el("tr");
      tr.append(el("td", model), el("td", summary || "nothing waiting"));
      return tr;
    }),
  );
  $("by-model").hidden = byModel.length === 0;
}

function renderFailures(jobs) {
  const list = $("failures");
  list.replaceChildren(
    ...jobs.map((job) => {
      const item = el("li", null, { "data-job-id": job.job_id, "data-state": knownState(job.state) });
      const head = el("div", null, { class: "failure-head" });
      head.append(
        el("strong", job.name),
        el("span", knownState(job.state), { class: `state state-${knownState(job.state)}` }),
        el("span", formatMoment(job.finished_at ?? job.created_at), { class: "muted" }),
      );
      const reason = el("div", null, { class: "failure-reason" });
      reason.append(el("code", job.error?.code ?? "error"), document.createTextNode(" "));
      reason.append(el("span", job.error?.message ?? "no reason given", { class: "failure-message" }));
      item.append(head, reason);
      return item;
    }),
  );
  $("no-failures").hidden = jobs.length > 0;
}

/** Failed and rejected jobs, newest first: asked for apart from the 50-job list, so an old failure
 * stays visible while many jobs succeed after it. */
async function loadFailures() {
  const [failed, rejected] = await Promise.all(
    ["failed", "rejected"].map((state) => getJson(`/v1/jobs?state=${state}&limit=20`)),
  );
  const moment = (job) => job.finished_at ?? job.created_at ?? "";
  return [...failed.jobs, ...rejected.jobs].sort((a, b) => moment(b).localeCompare(moment(a))).slice(0, 20);
}

async function loadModels() {
  const answer = await getJson("/v1/models");
  const select = $("job-model");
  const chosen = select.value;
  select.replaceChildren(el("option", "default model", { value: "" }));
  for (const model of answer.data ?? []) select.append(el("option", model.id, { value: model.id }));
  select.value = chosen;
  modelsLoaded = true;
}

// -- the refresh loop ----------------------------------------------------------------------------

async function refresh() {
  // Each part fails alone: a slow /health must not hide the queue.
  const parts = [
    getJson("/v1/jobs?limit=50").then((answer) => renderJobs(answer.jobs ?? [])),
    getJson("/health").then(renderHealth),
    loadFailures().then(renderFailures),
  ];
  if (!modelsLoaded) parts.push(loadModels());
  const results = await Promise.allSettled(parts);
  // A 401 has its own form; any other failure says why the page may be stale.
  const problem = results.find((result) => result.status === "rejected" && result.reason?.status !== 401);
  showBanner(problem ? problem.reason.message : null);
}

/** One refresh at a time, the next a second after it ends: a slow daemon never gets a pile of
 * requests, and a refresh asked for meanwhile (after a submit) runs as soon as this one ends. */
async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  clearTimeout(pollTimer);
  polling = true;
  try {
    await refresh();
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, pollAgain ? 0 : POLL_MS);
    pollAgain = false;
  }
}

function refreshNow() {
  poll();
}

// -- forms ---------------------------------------------------------------------------------------

function showFormMessage(text, kind) {
  const message = $("submit-message");
  setText(message, text);
  message.dataset.kind = kind;
}

async function submitJob(event) {
  event.preventDefault();
  const text = $("job-text").value;
  if (!text.trim()) {
    showFormMessage("Write some text first.", "error");
    return;
  }
  const job = { text };
  const model = $("job-model").value;
  const speaker = $("job-speaker").value.trim();
  if (model) job.model = model;
  if (speaker) job.speaker = speaker;

  const button = $("submit-button");
  button.disabled = true;
  showFormMessage("Queueing…", "pending");
  try {
    const response = await api("/v1/jobs", { method: "POST", body: job });
    const answer = await readJson(response);
    if (!response.ok) {
      showFormMessage(errorMessage(answer, response), "error");
      return;
    }
    // 200 instead of 202: the same job was already queued (an idempotent resubmission).
    showFormMessage(response.status === 200 ? `Already queued as ${answer.name}.` : `Queued as ${answer.name}.`, "ok");
    $("job-text").value = "";
    refreshNow();
  } catch (error) {
    showFormMessage(error.message, "error");
  } finally {
    button.disabled = false;
  }
}

function saveKey(event) {
  event.preventDefault();
  apiKey = $("key-input").value.trim();
  localStorage.setItem(KEY_STORAGE, apiKey);
  $("key-input").value = "";
  $("key-form").hidden = true;
  $("forget-key").hidden = !apiKey;
  modelsLoaded = false;
  refreshNow();
}

function forgetKey() {
  apiKey = "";
  localStorage.removeItem(KEY_STORAGE);
  $("forget-key").hidden = true;
  refreshNow();
}

$("submit-form").addEventListener("submit", submitJob);
$("key-form").addEventListener("submit", saveKey);
$("forget-key").addEventListener("click", forgetKey);
$("forget-key").hidden = !apiKey;
poll();
