// The playground: submit a prompt, follow the job's progress, play and download the video.

import { ApiError, events, getJson, postJson, request, setUpKeyPanel } from "/static/api.js";

// The model's limits (serve/params.py): frames are 4k+1 up to 121.
const MAX_FRAMES = 121;
const FRAME_STEP = 4;
const DEFAULT_FRAMES = 17; // the "fast" profile
const RETRY_MS = 1000;
const HISTORY_KEY = "wanserve.history";
const HISTORY_MAX = 10;
const HISTORY_STATUS = { queued: "queued", in_progress: "generating", completed: "done", failed: "failed" };

const $ = (id) => document.getElementById(id);

let watching = 0; // bumped whenever another video is shown, so a stale poll stops
let objectUrl = null;
let countdown = null;

// -- the form ----------------------------------------------------------------------------------

function fillFrames() {
  const select = $("num_frames");
  const fps = Number($("fps").value) || 24;
  const chosen = Number(select.value) || DEFAULT_FRAMES;
  select.replaceChildren();
  for (let frames = 1; frames <= MAX_FRAMES; frames += FRAME_STEP) {
    const option = new Option(`${frames} (${(frames / fps).toFixed(2)} s)`, String(frames));
    option.selected = frames === chosen;
    select.append(option);
  }
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

// The chosen first frame as a data: URL (the API's input_reference), or null.
function readImage() {
  const file = $("input_reference").files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(0, "unreadable_file", `could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function requestBody() {
  const body = {
    input_reference: await readImage(),
    prompt: $("prompt").value,
    size: $("size").value,
    num_frames: numberOf("num_frames"),
    fps: numberOf("fps"),
    num_inference_steps: numberOf("num_inference_steps"),
    guidance_scale: numberOf("guidance_scale"),
    seed: numberOf("seed"),
    priority: $("priority").value,
    negative_prompt: $("negative_prompt").value.trim() || null,
  };
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== null));
}

function clearInvalid() {
  document.querySelectorAll("[aria-invalid]").forEach((field) => field.removeAttribute("aria-invalid"));
}

async function onSubmit(event) {
  event.preventDefault();
  const button = $("generate");
  clearInvalid();
  showMessage(null);
  button.disabled = true;
  try {
    const video = await postJson("/v1/videos", await requestBody());
    remember(video);
    follow(video);
  } catch (error) {
    showRefusal(error);
  } finally {
    button.disabled = false;
  }
}

// -- messages ----------------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  clearInterval(countdown);
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = `message ${kind}`;
}

function showRefusal(error) {
  if (!(error instanceof ApiError)) {
    showMessage(`Something went wrong in this page: ${error.message}`);
    return;
  }
  if (error.code === "moderation_blocked") {
    showMessage(`${sentence(error.message)}. Change the prompt and try again.`);
  } else if (error.status === 429) {
    showRetryCountdown(error);
  } else if (error.status === 400) {
    showMessage(`The server refused the request (${error.code}): ${error.message}`);
  } else {
    showMessage(`${error.code}: ${error.message}`);
  }
  const field = error.param && document.getElementById(error.param);
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function showRetryCountdown(error) {
  // The countdown says the wait, so the server's own "retry in Ns" tail would only repeat it.
  const why = error.message.replace(/;\s*retry in \d+\s*s$/, "");
  let left = error.retryAfter ?? 5;
  const text = () => `Too busy right now: ${why}. ${left > 0 ? `Try again in ${left} s.` : "You can try again now."}`;
  showMessage(text(), "warning");
  countdown = setInterval(() => {
    left -= 1;
    $("message").textContent = text();
    if (left <= 0) clearInterval(countdown);
  }, 1000);
}

// -- following a job ---------------------------------------------------------------------------

function describe(video) {
  const served = video.served;
  const size = served ? served.size : video.size;
  const frames = served ? served.num_frames : video.num_frames;
  return `${size}, ${frames} frames at ${video.fps} fps (${(frames / video.fps).toFixed(2)} s)`;
}

// "expected to start in about 12 s" from the job's ETA (Unix seconds), or nothing without one.
function etaWords(video) {
  const eta = video.eta;
  if (!eta) return "";
  const inSeconds = (at) => Math.max(0, Math.round(at - Date.now() / 1000));
  if (video.status === "queued") return `, expected to start in about ${inSeconds(eta.estimated_start_at)} s`;
  return `, about ${inSeconds(eta.estimated_finish_at)} s left`;
}

function queueWords(ahead) {
  if (!Number.isInteger(ahead)) return "waiting for a free slot";
  return ahead === 0 ? "next to start" : `${ahead} ${ahead === 1 ? "video" : "videos"} ahead`;
}

function statusWords(video) {
  switch (video.status) {
    case "queued": return `Queued, ${queueWords(video.queue_position)}${etaWords(video)}`;
    case "in_progress": return `Generating, ${video.progress}%${etaWords(video)}`;
    case "completed": return video.cache_hit ? "Done (from the cache)" : "Done";
    case "failed": return "Failed";
    default: return video.status;
  }
}

function renderJob(video) {
  $("empty").hidden = true;
  $("job").hidden = false;
  $("job-status").textContent = `${statusWords(video)} · ${video.prompt}`;
  $("progress").value = video.progress;
  const served = video.served;
  const note = $("job-served");
  note.hidden = !served;
  if (served) {
    const cache = served.step_cache ? `, step caching ${served.step_cache}` : "";
    note.textContent = `Served by ${video.model} at ${served.size}, ${served.num_frames} frames, `
      + `${served.num_inference_steps} steps${cache} (degradation tier "${served.tier}") instead of `
      + `${video.size}, ${video.num_frames} frames, ${video.num_inference_steps} steps.`;
  }
}

function follow(video) {
  watching += 1;
  const token = watching;
  $("player").hidden = true;
  const settle = async (state) => {
    renderJob(state);
    updateHistory(state);
    if (state.status === "completed") {
      await play(state, token);
    } else if (state.status === "failed") {
      const error = state.error || { code: "failed", message: "the generation failed" };
      showMessage(`The generation failed (${error.code}): ${error.message}`);
    }
  };
  const stream = async (state) => {
    // The server pushes status and progress as they change; no polling.
    try {
      for await (const change of events(`/v1/videos/${encodeURIComponent(state.id)}/events`)) {
        if (token !== watching) return;
        if (change.status === "gone") {
          showMessage("That video is no longer stored on the server.", "warning");
          return;
        }
        state = { ...state, ...change };
        await settle(state);
        if (state.status === "completed" || state.status === "failed") return;
      }
    } catch (error) {
      if (error.status !== 0 && error.status !== undefined) {
        showRefusal(error);
        return;
      }
    }
    if (token !== watching) return;
    // The stream broke (a proxy, the network): look again shortly and listen anew.
    setTimeout(async () => {
      if (token !== watching) return;
      try {
        stream(await getJson(`/v1/videos/${encodeURIComponent(state.id)}`));
      } catch (error) {
        if (error.status === 0) stream(state);
        else showRefusal(error);
      }
    }, RETRY_MS);
  };
  renderJob(video);
  updateHistory(video);
  if (video.status === "completed" || video.status === "failed") settle(video);
  else stream(video);
}

async function play(video, token) {
  // Fetched as a blob (not <video src=URL>) so that the API key travels as a header.
  const response = await request(`/v1/videos/${encodeURIComponent(video.id)}/content`);
  const blob = await response.blob();
  if (token !== watching) return;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(blob);
  const player = $("video");
  player.src = objectUrl;
  player.setAttribute("aria-label", `Video: ${video.prompt}`);
  $("video-caption").textContent = describe(video);
  const link = $("download");
  link.href = objectUrl;
  link.download = `${video.id}.mp4`;
  $("player").hidden = false;
}

async function show(id) {
  showMessage(null);
  try {
    follow(await getJson(`/v1/videos/${encodeURIComponent(id)}`));
  } catch (error) {
    if (error.status === 404) {
      updateHistory({ id, status: "expired" });
      showMessage("That video is no longer stored on the server.", "warning");
    } else {
      showRefusal(error);
    }
  }
}

// -- this browser's history --------------------------------------------------------------------

function history() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch {
    return [];
  }
}

function saveHistory(items) {
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(0, HISTORY_MAX)));
  renderHistory();
}

function remember(video) {
  const item = {
    id: video.id, prompt: video.prompt, size: video.size, num_frames: video.num_frames, fps: video.fps,
    created_at: video.created_at, status: video.status,
  };
  saveHistory([item, ...history().filter((old) => old.id !== video.id)]);
}

function updateHistory(video) {
  const items = history();
  const item = items.find((old) => old.id === video.id);
  if (item && item.status !== video.status) {
    item.status = video.status;
    saveHistory(items);
  }
}

function renderHistory() {
  const list = $("history");
  const items = history();
  list.replaceChildren();
  $("history-clear").hidden = items.length === 0;
  if (items.length === 0) {
    const empty = document.createElement("li");
    empty.className = "hint";
    empty.textContent = "No videos yet.";
    list.append(empty);
    return;
  }
  for (const item of items) {
    const entry = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = item.prompt;
    button.addEventListener("click", () => show(item.id));
    const when = new Date(item.created_at * 1000).toLocaleTimeString();
    const meta = document.createElement("small");
    meta.className = "hint";
    const status = HISTORY_STATUS[item.status] || item.status;
    meta.textContent = `${item.size}, ${item.num_frames} frames · ${status} · ${when}`;
    entry.append(button, meta);
    list.append(entry);
  }
}

// -- start -------------------------------------------------------------------------------------

setUpKeyPanel();
fillFrames();
renderHistory();
$("fps").addEventListener("input", fillFrames);
$("create").addEventListener("submit", onSubmit);
$("history-clear").addEventListener("click", () => saveHistory([]));
