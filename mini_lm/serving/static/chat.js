// The mini_lm chat page: talks to this server's /v1 API and renders server-sent events as they arrive.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], controller: null };

function requestHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorMessage(response) {
  const body = await response.json().catch(() => null);
  return (body && body.error && body.error.message) || `${response.status} ${response.statusText}`;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: requestHeaders() });
    if (!response.ok) throw new Error(await errorMessage(response));
    state.model = (await response.json()).data[0].id;
    $("model-name").textContent = state.model;
    setStatus("ready", "ok");
  } catch (err) {
    setStatus(err.message, "error");
  }
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

function sampling() {
  const body = {
    temperature: parseFloat($("temperature").value),
    top_p: parseFloat($("top-p").value),
    top_k: parseInt($("top-k").value, 10),
    max_tokens: parseInt($("max-tokens").value, 10),
    repetition_penalty: parseFloat($("repetition-penalty").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = parseInt(seed, 10);
  return body;
}

function addMessage(role, text) {
  $("empty-hint")?.remove();
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;  // text, never HTML: model output is untrusted
  const stats = document.createElement("div");
  stats.className = "stats";
  message.append(content, stats);
  $("messages").append(message);
  message.scrollIntoView({ block: "end" });
  return message;
}

// Yields the data field of each server-sent event in a fetch() body.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield data;
    }
  }
}

function buildRequest(text) {
  const chat = document.querySelector("input[name=mode]:checked").value === "chat";
  if (!chat) return { chat, url: "/v1/completions", body: { ...sampling(), model: state.model, prompt: text } };
  const system = $("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...state.history,
    { role: "user", content: text }];
  return { chat, url: "/v1/chat/completions", body: { ...sampling(), model: state.model, messages } };
}

async function send(text) {
  const request = buildRequest(text);
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const content = reply.querySelector(".content");
  reply.classList.add("streaming");
  setBusy(true);
  const started = performance.now();
  let answer = "", finish = null, usage = null, firstPieceAt = null;
  try {
    const response = await fetch(request.url, {
      method: "POST", headers: requestHeaders(), body: JSON.stringify(request.body),
      signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = request.chat ? (choice.delta && choice.delta.content) || "" : choice.text || "";
        if (piece && firstPieceAt === null) firstPieceAt = performance.now();
        answer += piece;
        content.textContent = answer;
        finish = choice.finish_reason || finish;
      }
      reply.scrollIntoView({ block: "end" });
    }
    if (request.chat) state.history.push({ role: "user", content: text }, { role: "assistant", content: answer });
    reply.querySelector(".stats").textContent = describe(usage, finish, started, firstPieceAt);
  } catch (err) {
    const stopped = err.name === "AbortError";
    reply.classList.add(stopped ? "stopped" : "error");
    reply.querySelector(".stats").textContent = stopped ? "stopped" : `error: ${err.message}`;
  } finally {
    reply.classList.remove("streaming");
    setBusy(false);
  }
}

function describe(usage, finish, started, firstPieceAt) {
  const seconds = (performance.now() - started) / 1000;
  const parts = [];
  if (usage) parts.push(`${usage.completion_tokens} tokens`, `${(usage.completion_tokens / seconds).toFixed(1)} tok/s`);
  parts.push(`${seconds.toFixed(2)} s`);
  if (firstPieceAt !== null) parts.push(`first piece ${((firstPieceAt - started) / 1000).toFixed(2)} s`);
  if (finish) parts.push(`finish: ${finish}`);
  return parts.join(" · ");
}

function setBusy(busy) {
  state.controller = busy ? new AbortController() : null;
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("messages").setAttribute("aria-busy", String(busy));
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || state.controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("settings").addEventListener("submit", (event) => event.preventDefault());  // Enter in a field
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", () => {
  state.history = [];
  $("messages").replaceChildren();
});
for (const id of ["temperature", "top-p"]) {
  $(id).addEventListener("input", () => { $(`${id}-value`).textContent = $(id).value; });
}
$("api-key").addEventListener("change", loadModel);
loadModel();
