// The clipmill dashboard: one page over the public API. The key is kept in localStorage and sent
// as a bearer header; the event stream is opened with a short-lived token (POST /api/tokens), so
// the key never appears in a URL. Live state comes from /api/events: a snapshot, then events; a
// dropped stream reconnects with the last event id and catches up (or gets a fresh snapshot).
"use strict";

const STAGES = ["download", "audio", "transcribe", "score", "faces", "render", "upload"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const CHUNK = 1024 * 1024;
const KEY = "clipmill.key";
const NAMES = "clipmill.uploads";

// What a failed job's code means, in plain words; the server's message says the rest.
const FAILURES = {
  unknown_format: "The file is not a video clipmill can read.",
  unreadable_input: "The file is not a video clipmill can read.",
  input_cut_short: "The file ends before its own header says it should: it looks cut short.",
  decode_failed: "The video could not be decoded: the file may be damaged.",
  codec_unsupported: "The video uses a format this server cannot decode.",
  no_video_stream: "The source has no picture to make clips from.",
  source_audio_only: "The source has sound only, no picture to make clips from.",
  no_audio_stream: "The source has no sound to transcribe.",
  source_too_long: "The source is longer than this server accepts.",
  source_too_large: "The source is larger than this server accepts.",
  too_many_streams: "The file has more streams than a video should.",
  frame_too_large: "The picture is larger than this server accepts.",
  no_clips: "No moment in the source made a clip.",
  stalled: "The job stopped making progress.",
  fetch_timeout: "The video took too long to download.",
  source_unreachable: "The address of the video could not be reached.",
  source_http_error: "The site of the video answered with an error.",
  no_media_at_url: "There is no video at that address.",
  source_is_playlist: "That address is a playlist: submit it as a batch.",
  ytdlp_failed: "The video could not be downloaded from that site.",
  url_not_allowed: "That address is not one this server may fetch from.",
  quota_source_minutes: "This would pass your daily minutes of source video.",
  worker_failed: "A model worker failed on this job.",
  worker_timeout: "A model worker took too long on this job.",
  encoder_unavailable: "No video encoder is available on this server.",
  encode_failed: "The clip could not be encoded.",
};

const $ = (sel, root = document) => root.querySelector(sel);

const state = {
  key: localStorage.getItem(KEY) || "",
  jobs: new Map(), // id -> job (the API's view, kept current by events)
  urls: new Map(), // job id -> Map(clip index -> urls)
  lastId: null,
  socket: null,
  backoff: 500,
  retryTimer: null,
  opsTimer: null,
  names: JSON.parse(localStorage.getItem(NAMES) || "{}"),
};

// ---- API ----

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${state.key}`, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    signOut("That API key was not accepted.");
    throw new ApiError(401, "unauthorized", "not signed in");
  }
  const text = await resp.text();
  const data = text ? JSON.parse(text) : {};
  if (!resp.ok) {
    throw new ApiError(resp.status, data.error?.code || "error", data.error?.message || resp.statusText);
  }
  return data;
}

// ---- sign in ----

function showSignedIn(signedIn) {
  $("#signin-view").hidden = signedIn;
  $("#nav").hidden = !signedIn;
  $("#signout").hidden = !signedIn;
  $("#conn").hidden = !signedIn;
  showView(signedIn ? "jobs" : null);
}

async function signIn(key) {
  state.key = key;
  try {
    await api("GET", "/api/jobs");
  } catch (e) {
    showError("#signin-error", e.status === 401 ? "That API key was not accepted." : e.message);
    state.key = "";
    return;
  }
  localStorage.setItem(KEY, key);
  $("#signin-error").hidden = true;
  showSignedIn(true);
  connect();
}

function signOut(reason) {
  localStorage.removeItem(KEY);
  state.key = "";
  state.lastId = null;
  state.jobs.clear();
  state.urls.clear();
  clearTimeout(state.retryTimer);
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close(1000, "signed out");
    state.socket = null;
  }
  $("#jobs").replaceChildren();
  delete $("#jobs").dataset.synced;
  $("#no-jobs").hidden = false;
  showSignedIn(false);
  if (reason) showError("#signin-error", reason);
}

function showView(name) {
  $("#jobs-view").hidden = name !== "jobs";
  $("#ops-view").hidden = name !== "ops";
  $("#show-jobs").setAttribute("aria-pressed", String(name === "jobs"));
  $("#show-ops").setAttribute("aria-pressed", String(name === "ops"));
  clearInterval(state.opsTimer);
  if (name === "ops") {
    refreshOps();
    state.opsTimer = setInterval(refreshOps, 2000);
  }
}

function showError(sel, message) {
  const el = $(sel);
  el.textContent = message;
  el.hidden = !message;
}

// ---- live events ----

function setConn(s) {
  const el = $("#conn");
  el.dataset.state = s;
  el.textContent = s === "live" ? "live" : s === "reconnecting" ? "reconnecting…" : "connecting…";
}

async function connect() {
  clearTimeout(state.retryTimer);
  if (!state.key) return;
  setConn(state.lastId === null ? "connecting" : "reconnecting");
  let token;
  try {
    token = (await api("POST", "/api/tokens")).token;
  } catch (e) {
    if (e.status !== 401) retryLater();
    return;
  }
  const q = new URLSearchParams({ token });
  if (state.lastId !== null) q.set("last_id", String(state.lastId));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/api/events?${q}`);
  state.socket = socket;
  socket.onopen = () => {
    state.backoff = 500;
    setConn("live");
  };
  socket.onmessage = (msg) => handle(JSON.parse(msg.data));
  socket.onclose = (ev) => {
    // The server says where to resume when it closes us (a drain, a client too slow).
    const resume = /last_id=(\d+)/.exec(ev.reason || "");
    if (resume) state.lastId = Number(resume[1]);
    if (state.socket === socket) retryLater();
  };
}

function retryLater() {
  setConn("reconnecting");
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, state.backoff);
  state.backoff = Math.min(state.backoff * 2, 5000);
}

function handle(msg) {
  if (msg.type === "snapshot") {
    state.jobs = new Map(msg.jobs.map((j) => [j.id, j]));
    $("#jobs").dataset.synced = "true";
    for (const el of document.querySelectorAll(".job")) {
      if (!state.jobs.has(el.dataset.job)) el.remove();
    }
    for (const job of state.jobs.values()) {
      render(job);
      // Clips this page has no links for yet (the first snapshot, or ones made while it was away).
      if (job.clips.some((c) => !urlsOf(job.id).has(c.index))) loadUrls(job.id);
    }
    return;
  }
  state.lastId = msg.id;
  const job = known(msg.job);
  apply(job, msg);
  render(job);
}

// The job with this id, made up as queued (and filled in from the API) when first heard of.
function known(id) {
  let job = state.jobs.get(id);
  if (!job) {
    job = { id, status: "queued", source: null, stages: STAGES.map((stage) => ({ stage, status: "pending", progress: 0 })), clips: [], error: null };
    state.jobs.set(id, job);
    fillIn(id);
  }
  return job;
}

function apply(job, ev) {
  const stage = job.stages.find((s) => s.stage === ev.stage);
  switch (ev.type) {
    case "stage_started":
      if (stage) Object.assign(stage, { status: "running" });
      if (!FINAL.has(job.status)) job.status = "running";
      break;
    case "stage_progress":
      if (stage) Object.assign(stage, { status: "running", progress: ev.progress });
      break;
    case "stage_finished":
      if (stage) Object.assign(stage, { status: "done", progress: 1 });
      break;
    case "clip_ready":
      job.clips = job.clips.filter((c) => c.index !== ev.clip.index).concat([ev.clip]).sort((a, b) => a.index - b.index);
      urlsOf(job.id).set(ev.clip.index, ev.urls);
      break;
    case "job_done":
      job.status = "succeeded";
      break;
    case "job_failed": {
      job.status = "failed";
      job.error = ev.error;
      const failed = job.stages.find((s) => s.stage === ev.error.stage);
      if (failed) failed.status = "failed";
      break;
    }
    case "job_cancelled":
      job.status = "cancelled";
      break;
  }
}

// A job first seen through an event: its source comes from the API, and the stages it reports
// fill in those no event has touched here yet.
async function fillIn(id) {
  try {
    const full = await api("GET", `/api/jobs/${id}`);
    const job = state.jobs.get(id);
    if (!job) return;
    job.source = full.source;
    for (const s of full.stages) {
      const mine = job.stages.find((m) => m.stage === s.stage);
      if (mine && mine.status === "pending") Object.assign(mine, s);
    }
    render(job);
  } catch (e) {
    console.warn("job", id, e);
  }
}

function urlsOf(id) {
  if (!state.urls.has(id)) state.urls.set(id, new Map());
  return state.urls.get(id);
}

async function loadUrls(id) {
  try {
    const result = await api("GET", `/api/jobs/${id}/result`);
    for (const clip of result.clips) urlsOf(id).set(clip.index, clip.urls);
    const job = state.jobs.get(id);
    if (job) render(job);
  } catch (e) {
    console.warn("result", id, e);
  }
}

// ---- rendering (elements are kept and updated, so a playing clip is never rebuilt) ----

function sourceLabel(job) {
  if (!job.source) return `job ${job.id.slice(0, 8)}`;
  if (job.source.url) return job.source.url;
  if (job.source.upload) return state.names[job.source.upload] || "uploaded file";
  return "job";
}

function render(job) {
  let el = $(`.job[data-job="${job.id}"]`);
  if (!el) {
    el = $("#job-template").content.firstElementChild.cloneNode(true);
    el.dataset.job = job.id;
    const stages = $(".stages", el);
    for (const stage of STAGES) {
      const li = document.createElement("li");
      li.dataset.stage = stage;
      const label = document.createElement("span");
      label.textContent = stage;
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.setAttribute("aria-label", `${stage} progress`);
      li.append(label, bar);
      stages.append(li);
    }
    for (const button of el.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => act(job.id, button.dataset.action, button));
    }
    // Newest first, as the API lists them.
    const newer = [...document.querySelectorAll(".job")].find((other) => other.dataset.job < job.id);
    $("#jobs").insertBefore(el, newer || null);
  }
  el.dataset.status = job.status;
  $(".source", el).textContent = sourceLabel(job);
  $(".status", el).textContent = job.status;
  for (const s of job.stages) {
    const li = $(`li[data-stage="${s.stage}"]`, el);
    if (!li) continue;
    // A stage that was running when its job was cancelled (or failed elsewhere) stopped there.
    li.dataset.state = s.status === "running" && FINAL.has(job.status) ? "stopped" : s.status;
    $("progress", li).value = s.status === "done" ? 1 : s.progress || 0;
  }
  const error = $(".error", el);
  error.hidden = job.status !== "failed" || !job.error;
  if (job.error) {
    const plain = FAILURES[job.error.code] || `The job failed${job.error.stage ? ` at the ${job.error.stage} stage` : ""}.`;
    error.textContent = `${plain} Details: ${job.error.message} (${job.error.code})`;
  }
  $('[data-action="cancel"]', el).hidden = FINAL.has(job.status);
  $('[data-action="retry"]', el).hidden = !["failed", "cancelled"].includes(job.status);
  $('[data-action="delete"]', el).hidden = !FINAL.has(job.status);
  const urls = state.urls.get(job.id) || new Map();
  for (const clip of job.clips) {
    if (urls.has(clip.index) && !$(`.clip[data-index="${clip.index}"]`, el)) {
      renderClip($(".clips", el), job.id, clip, urls.get(clip.index));
    }
  }
  $("#no-jobs").hidden = state.jobs.size > 0;
}

function renderClip(container, job, clip, urls) {
  const fig = $("#clip-template").content.firstElementChild.cloneNode(true);
  fig.dataset.index = clip.index;
  const video = $("video", fig);
  video.setAttribute("aria-label", `clip ${clip.index}: ${clip.title}`);
  $(".title", fig).textContent = clip.title || `Clip ${clip.index}`;
  $(".score", fig).textContent = `score ${clip.score.toFixed(2)} · ${(clip.end - clip.start).toFixed(1)} s from ${fmtTime(clip.start)}`;
  const s = clip.scores || {};
  $(".subscores", fig).textContent = `hook ${num(s.hook)} · flow ${num(s.flow)} · payoff ${num(s.payoff)}`;
  $(".reason", fig).textContent = clip.reason ? `why: ${clip.reason}` : "";
  $(".scorer", fig).textContent = `scorer: ${clip.scorer}`;
  $(".fallbacks", fig).textContent = clip.fallbacks.length ? `fallbacks: ${clip.fallbacks.join("; ")}` : "";
  setLinks(fig, clip, urls);
  // Signed links expire (server.url_ttl_s): a clip that will not load gets fresh ones, once.
  video.addEventListener("error", async () => {
    await loadUrls(job);
    const fresh = urlsOf(job).get(clip.index);
    if (fresh && fresh.mp4 !== video.src) setLinks(fig, clip, fresh);
  }, { once: true });
  const after = [...container.children].find((c) => Number(c.dataset.index) > clip.index);
  container.insertBefore(fig, after || null);
}

function setLinks(fig, clip, urls) {
  $("video", fig).src = urls.mp4;
  const name = `clip-${String(clip.index).padStart(2, "0")}`;
  const links = [];
  for (const [kind, label, ext] of [["mp4", "MP4", "mp4"], ["srt", "SRT", "srt"], ["vtt", "VTT", "vtt"], ["edit", "EDIT.json", "edit.json"]]) {
    if (!urls[kind]) continue;
    const a = document.createElement("a");
    a.href = urls[kind];
    a.download = `${name}.${ext}`;
    a.dataset.kind = kind;
    a.textContent = label;
    links.push(a);
  }
  $(".downloads", fig).replaceChildren(...links);
}

const num = (v) => (typeof v === "number" ? v.toFixed(1) : "–");
const fmtTime = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

// ---- actions ----

async function act(id, action, button) {
  button.disabled = true;
  try {
    if (action === "cancel") {
      await api("DELETE", `/api/jobs/${id}`);
    } else if (action === "retry") {
      await api("POST", `/api/jobs/${id}/retry`);
    } else if (action === "delete") {
      await api("DELETE", `/api/jobs/${id}?purge=true`);
      state.jobs.delete(id);
      $(`.job[data-job="${id}"]`)?.remove();
      $("#no-jobs").hidden = state.jobs.size > 0;
    }
  } catch (e) {
    alert(`${action} failed: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---- submit ----

function options(form) {
  const o = {
    clips: Number(form.clips.value),
    min_len: Number(form.min_len.value),
    max_len: Number(form.max_len.value),
    size: form.size.value,
    mode: form.mode.value,
    captions: form.preset.value === "off" ? false : { preset: form.preset.value },
  };
  if (form.instruction.value.trim()) o.instruction = form.instruction.value.trim();
  return o;
}

async function submit(ev) {
  ev.preventDefault();
  const form = ev.target;
  const file = form.file.files[0];
  const url = form.url.value.trim();
  showError("#submit-error", "");
  if (!file && !url) return showError("#submit-error", "Give a video URL or choose a file.");
  $("#submit-button").disabled = true;
  try {
    const body = { options: options(form) };
    if (file) {
      body.upload_id = await upload(file);
      state.names[body.upload_id] = file.name;
      localStorage.setItem(NAMES, JSON.stringify(state.names));
    } else {
      body.url = url;
    }
    const created = await api("POST", "/api/jobs", body, { "Idempotency-Key": crypto.randomUUID?.() || String(Math.random()) });
    form.url.value = "";
    form.file.value = "";
    render(known(created.id));
    $("#upload").hidden = true;
  } catch (e) {
    showError("#submit-error", e.message);
  } finally {
    $("#submit-button").disabled = false;
  }
}

// tus 1.0: create, then PATCH the file a chunk at a time from the offset the server holds; a
// chunk that fails is resumed from the offset HEAD reports, a few times, before giving up.
async function upload(file) {
  const bar = $("#upload-progress");
  const shown = (done) => {
    bar.value = file.size ? done / file.size : 1;
    $("#upload-percent").textContent = `${Math.round(bar.value * 100)}%`;
  };
  $("#upload-name").textContent = file.name;
  $("#upload").hidden = false;
  shown(0);
  const tus = { Authorization: `Bearer ${state.key}`, "Tus-Resumable": "1.0.0" };
  const created = await fetch("/api/uploads/tus", {
    method: "POST",
    headers: { ...tus, "Upload-Length": String(file.size), "Upload-Metadata": `filename ${b64(file.name)}` },
  });
  if (!created.ok) throw await failure(created);
  const { upload_id: id } = await created.json();
  const at = created.headers.get("Location");
  let offset = 0;
  let failures = 0;
  while (offset < file.size) {
    try {
      const chunk = file.slice(offset, offset + CHUNK);
      const resp = await fetch(at, {
        method: "PATCH",
        headers: { ...tus, "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
        body: chunk,
      });
      if (resp.status === 204) {
        offset = Number(resp.headers.get("Upload-Offset"));
        failures = 0;
        shown(offset);
        continue;
      }
      if (resp.status !== 409 && resp.status < 500) throw Object.assign(await failure(resp), { fatal: true });
      throw await failure(resp);
    } catch (e) {
      if (e.fatal || ++failures > 5) throw e;
      await new Promise((r) => setTimeout(r, 400 * failures));
      const head = await fetch(at, { method: "HEAD", headers: tus });
      if (!head.ok) throw await failure(head);
      offset = Number(head.headers.get("Upload-Offset"));
    }
  }
  shown(file.size);
  return id;
}

async function failure(resp) {
  const data = await resp.json().catch(() => ({}));
  return new ApiError(resp.status, data.error?.code || "error", data.error?.message || `upload failed (${resp.status})`);
}

const b64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

// ---- operators ----

async function refreshOps() {
  let o;
  try {
    o = await api("GET", "/api/overview");
  } catch {
    return;
  }
  const finished = o.jobs_finished || {};
  const summary = [
    ["Jobs in flight", o.jobs_in_flight],
    ["Jobs per minute", o.jobs_last_minute],
    ["Succeeded", finished.succeeded || 0],
    ["Failed", finished.failed || 0],
    ["Batch entries waiting", o.batch_entries_waiting],
    ["Live watchers", o.ws_sessions],
  ];
  $("#ops-summary").replaceChildren(...summary.map(([k, v]) => {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v ?? 0);
    div.append(dt, dd);
    return div;
  }));
  fillTable("#ops-stages", o.stages.map((s) => [s.stage, s.waiting, s.running]));
  fillTable("#ops-failures", o.failures.length ? o.failures.map((f) => [f.stage, f.code, f.count]) : [["none", "", ""]]);
  $("#ops-nodes").replaceChildren(...o.nodes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
}

function fillTable(sel, rows) {
  $(`${sel} tbody`).replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) tr.append(Object.assign(document.createElement("td"), { textContent: String(c) }));
    return tr;
  }));
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#api-key").value.trim());
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#submit").addEventListener("submit", submit);
  $("#show-jobs").addEventListener("click", () => showView("jobs"));
  $("#show-ops").addEventListener("click", () => showView("ops"));
  if (state.key) signIn(state.key);
});
