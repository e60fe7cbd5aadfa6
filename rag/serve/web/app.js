// The page's script: asks /ask with the conversation, shows the streamed answer, opens cited spans.
// No framework and nothing fetched from elsewhere: the service is used offline.
"use strict";

const TEXT = {
  en: {
    tagline: "Answers from your documents, with sources you can check.",
    newChat: "New conversation", placeholder: "Ask a question about the documents", send: "Ask",
    keyLabel: "API key", keyHint: "Only if the service asks for one", documents: "Indexed documents",
    noDocuments: "Nothing is indexed yet: run `rag ingest DIR`.", chunks: "chunks", page: "p.", chars: "characters",
    searched: "Searched for:", unreachable: "The service cannot be reached. Is `rag serve` running?",
    stopped: "The answer stopped early:", sourceGone: "This source is no longer in the index.",
    other: "中文",
  },
  zh: {
    tagline: "根据你的文档回答，并给出可以核对的出处。",
    newChat: "新对话", placeholder: "就文档提一个问题", send: "提问",
    keyLabel: "API 密钥", keyHint: "仅在服务要求时填写", documents: "已索引的文档",
    noDocuments: "还没有索引任何文档：请运行 `rag ingest DIR`。", chunks: "块", page: "第", chars: "字符",
    searched: "检索的问题：", unreachable: "无法连接服务。`rag serve` 是否在运行？",
    stopped: "回答中途停止：", sourceGone: "该出处已不在索引中。",
    other: "English",
  },
};

const $ = (id) => document.getElementById(id);
let lang = localStorage.getItem("rag-lang") || (navigator.language.startsWith("zh") ? "zh" : "en");
let history = [];  // [{role, content}] of finished turns, sent with every question

function t(key) { return TEXT[lang][key]; }

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("lang").textContent = t("other");
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim() || sessionStorage.getItem("rag-key");
  if (key) { h.Authorization = `Bearer ${key}`; sessionStorage.setItem("rag-key", key); }
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorText(response) {
  // Every error of the API is {"error": {"code", "message"}}; say it as it is, with the status.
  try {
    const body = await response.json();
    const message = body.error && (body.error.message || body.error);
    if (message) return `${response.status}: ${message}`;
  } catch (_) { /* not JSON: fall through */ }
  return `${response.status} ${response.statusText}`;
}

async function loadDocuments() {
  const list = $("document-list");
  try {
    const response = await fetch("/documents", { headers: headers() });
    if (!response.ok) { showError(await errorText(response)); return; }
    const body = await response.json();
    list.replaceChildren();
    if (!body.documents.length) { list.append(item(t("noDocuments"))); return; }
    for (const doc of body.documents) list.append(item(`${doc.source} (${doc.chunks} ${t("chunks")})`));
  } catch (_) {
    showError(t("unreachable"));
  }
}

function item(text) { const li = document.createElement("li"); li.textContent = text; return li; }

function where(source) {
  if (!source.page) return source.source;
  return lang === "zh" ? `${source.source}，第 ${source.page} 页` : `${source.source}, p. ${source.page}`;
}

function citeButton(source) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "cite";
  b.textContent = `[${source.n}]`;
  b.dataset.n = source.n;
  b.title = where(source);
  b.addEventListener("click", () => openSource(source, b));
  return b;
}

// The answer text with each [n] that names a source made a button; the rest stays plain text.
function renderAnswer(el, text, sources) {
  el.replaceChildren();
  const byN = new Map(sources.map((s) => [String(s.n), s]));
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const source = byN.get(m[1]);
    if (!source) continue;
    el.append(text.slice(last, m.index), citeButton(source));
    last = m.index + m[0].length;
  }
  el.append(text.slice(last));
}

function renderSources(list, sources) {
  list.replaceChildren();
  for (const s of sources) {
    const li = document.createElement("li");
    li.append(citeButton(s), " ", where(s));
    list.append(li);
  }
}

async function openSource(source, button) {
  document.querySelectorAll(".cite.active").forEach((b) => b.classList.remove("active"));
  button.classList.add("active");
  const viewer = $("viewer");
  const query = new URLSearchParams({ source: source.source });
  if (source.page) query.set("page", source.page);
  try {
    const response = await fetch(`/documents/text?${query}`, { headers: headers() });
    if (!response.ok) { showError(response.status === 404 ? t("sourceGone") : await errorText(response)); return; }
    const page = await response.json();
    // The sentence the answer rests on (a checked claim's span, else the evidence), or the whole chunk.
    const span = (button.closest(".turn")?.spans || {})[source.n];
    const [start, end] = span ? [span.start, span.end] : [source.start ?? 0, source.end ?? page.text.length];
    $("viewer-title").textContent = `[${source.n}] ${where(source)}`;
    $("viewer-where").textContent = `${t("chars")} ${start}–${end}`;
    const mark = document.createElement("mark");
    mark.textContent = page.text.slice(start, end);
    $("viewer-text").replaceChildren(page.text.slice(0, start), mark, page.text.slice(end));
    Object.assign(viewer.dataset, { source: source.source, page: source.page ?? "", start, end });
    viewer.hidden = false;
    const pre = $("viewer-text");  // scroll the page text to the span, not the whole window
    pre.scrollTop = Math.max(0, mark.offsetTop - pre.offsetTop - pre.clientHeight / 3);
  } catch (_) {
    showError(t("unreachable"));
  }
}

// Per source number, the exact span that backs the answer: a supported claim's, else an evidence sentence's.
function spansOf(done) {
  const spans = {};
  for (const e of done.evidence || []) if (e.start != null) spans[e.n] = { start: e.start, end: e.end };
  for (const c of done.claims || []) {
    if (c.supported && c.source_n != null && c.start != null) spans[c.source_n] = { start: c.start, end: c.end };
  }
  return spans;
}

function newTurn(question) {
  const li = document.createElement("li");
  li.className = "turn";
  li.innerHTML = '<div class="question"></div><div class="standalone" hidden></div>' +
    '<div class="answer" data-state="streaming"></div><div class="warning" hidden></div><ol class="sources"></ol>';
  li.querySelector(".question").textContent = question;
  $("turns").append(li);
  return li;
}

// NDJSON records as they arrive: one JSON object per line.
async function* records(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) yield JSON.parse(line);
    }
    if (done) { if (buffer.trim()) yield JSON.parse(buffer); return; }
  }
}

async function ask(question) {
  showError("");
  const turn = newTurn(question);
  const answerEl = turn.querySelector(".answer");
  let sources = [];
  let text = "";
  const finish = (state) => { answerEl.dataset.state = state; };
  try {
    const response = await fetch("/ask", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ messages: [...history, { role: "user", content: question }], stream: true }),
    });
    if (!response.ok) { showError(await errorText(response)); finish("error"); return; }
    for await (const event of records(response)) {
      if (event.type === "sources") {
        sources = event.sources;
        renderSources(turn.querySelector(".sources"), sources);
        if (event.standalone_question) {
          const s = turn.querySelector(".standalone");
          s.textContent = `${t("searched")} ${event.standalone_question}`;
          s.hidden = false;
        }
      } else if (event.type === "token") {
        text += event.text;
        renderAnswer(answerEl, text, sources);
      } else if (event.type === "done") {
        text = event.answer;
        turn.spans = spansOf(event);
        renderAnswer(answerEl, text, sources);
        const warnings = (event.warnings || []).map((w) => w.message);
        if (warnings.length) { const w = turn.querySelector(".warning"); w.textContent = warnings.join("; "); w.hidden = false; }
      } else if (event.type === "error") {
        showError(`${t("stopped")} ${event.error.message}`);
        finish("error");
        return;
      }
    }
    history.push({ role: "user", content: question }, { role: "assistant", content: text });
    finish("done");
  } catch (_) {
    showError(t("unreachable"));
    finish("error");
  }
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("send").disabled = true;
  $("question").value = "";
  try { await ask(question); } finally { $("send").disabled = false; $("question").focus(); }
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("new-chat").addEventListener("click", () => { history = []; $("turns").replaceChildren(); $("viewer").hidden = true; showError(""); });
$("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("rag-lang", lang); applyLanguage(); });
$("api-key").addEventListener("change", loadDocuments);

applyLanguage();
loadDocuments();
