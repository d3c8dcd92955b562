// The streamer's control panel. Everything from chat is set with textContent (a viewer's markup
// shows as text); controls are POSTed as JSON with the token when one is set.
"use strict";

(() => {
  const { el, post } = SparkScreen;
  SparkScreen.forgetTokenInAddressBar();
  const $ = (id) => document.getElementById(id);
  const turns = [];
  let current = null;
  let words = [];
  let paused = false;
  let personas = [];
  const ended = new Set();  // turns whose line ended: a word of theirs that comes late is dropped
  const MEMORY_SHOWN = 50;  // memory watch rows kept in the page

  function fail(error) { $("control-error").textContent = error ? String(error.message || error) : ""; }
  async function control(path, body) {
    try { const result = await post(path, body); fail(null); return result; } catch (e) { fail(e); return null; }
  }

  function showChat(node, chat) {
    if (!chat) { node.classList.add("hidden"); return; }
    node.querySelector(".user").textContent = chat.user;
    node.querySelector(".text").textContent = chat.text;
    node.classList.remove("hidden");
  }

  function onTurn(u) {
    current = u;
    words = [];
    $("speaker").textContent = u.persona;
    $("speaker").dataset.turn = String(u.turn);
    $("turn-kind").textContent = u.kind;
    showChat($("chat-answered"), u.chat);
    $("speaking-text").textContent = "";
  }

  function onWord(u) {
    if (ended.has(u.turn) || (current && u.turn < current.turn)) return;  // not the line being spoken
    if (!current || current.turn !== u.turn) onTurn({ turn: u.turn, persona: u.persona, kind: "", chat: null });
    words.push(u.text);
    $("speaking-text").textContent = words.slice(-60).join(" ");
  }

  function onSaid(u) {
    const known = turns.findIndex((t) => t.turn === u.turn);
    if (known >= 0) turns[known] = u; else turns.push(u);
    while (turns.length > 50) turns.shift();
    ended.add(u.turn);
    if (ended.size > 64) ended.delete(ended.values().next().value);
    if (current && current.turn === u.turn) {
      $("speaker").textContent = "—";
      $("turn-kind").textContent = u.interrupted ? "interrupted" : "done";
      $("speaking-text").textContent = u.spoken;
      current = null;
    }
    renderTurns();
  }

  function renderTurns() {
    const list = $("turns-list");
    list.replaceChildren();
    for (const t of [...turns].reverse().slice(0, 20)) {
      const item = el("li");
      item.dataset.turn = String(t.turn);
      item.append(el("span", "meta", `#${t.turn} ${t.kind || ""}`), el("span", "user", t.persona));
      if (t.chat) item.append(el("span", "chat", `(to ${t.chat.user}: ${t.chat.text}) `));
      item.append(el("span", "spoken", t.spoken || "…"));
      if (t.interrupted) item.append(el("span", "flag", "interrupted"));
      if (t.failed) item.append(el("span", "flag", "failed: " + t.failed));
      list.append(item);
    }
    TimingChart.draw($("timings"), turns);
  }

  function onQueue(u) {
    const counts = $("queue-counts");
    counts.replaceChildren();
    const shown = [["waiting", u.counts.waiting], ["answered", u.counts.answered], ["received", u.counts.received],
      ["dropped (full)", u.counts.dropped_full], ["dropped (stale)", u.counts.dropped_stale],
      ["skipped", u.counts.skipped], ["moderated", u.counts.moderated], ["interrupts", u.counts.interrupts]];
    for (const [label, value] of shown) {
      const dd = el("dd", "", value || 0);
      dd.dataset.count = label;
      counts.append(el("dt", "", label), dd);
    }
    const list = $("waiting");
    list.replaceChildren();
    for (const m of u.waiting) {
      const item = el("li");
      item.append(el("span", "user", m.user), el("span", "text", m.text));
      const skip = el("button", "", "skip");
      skip.type = "button";
      skip.addEventListener("click", () => control("skip", { key: m.key }));
      item.append(skip);
      list.append(item);
    }
    paused = u.paused;
    $("pause").textContent = paused ? "Resume answering" : "Pause answering";
    $("pause").classList.toggle("active", paused);
    $("paused-pill").classList.toggle("hidden", !paused);
  }

  function onStatus(u) {
    const list = $("connections");
    list.replaceChildren();
    for (const [name, state] of Object.entries(u.connections || {})) {
      const item = el("li", state.ok === true ? "ok" : state.ok === false ? "bad" : "", name);
      item.append(el("span", "detail", state.detail || ""));
      list.append(item);
    }
    const host = u.host_memory;
    $("host-memory").textContent = host
      ? `${Math.round(host.used * 100)}% used, ${host.available_gb} GB free` +
        (host.triton_gpu_gb !== undefined ? `, Triton GPU ${host.triton_gpu_gb} GB` : "")
      : "—";
    personas = u.personas || [];
    const mutes = $("mutes");
    mutes.replaceChildren();
    const select = $("say-persona");
    const chosen = select.value;
    select.replaceChildren();
    for (const p of personas) {
      const option = el("option", "", p.name);
      option.value = p.name;
      select.append(option);
      if (p.role === "main") continue;
      const button = el("button", p.muted ? "active" : "", p.muted ? `Unmute ${p.name}` : `Mute ${p.name}`);
      button.type = "button";
      button.dataset.persona = p.name;
      button.addEventListener("click", () => control("mute", { persona: p.name, muted: !p.muted }));
      mutes.append(button);
    }
    if (chosen) select.value = chosen;
    $("memory-form").classList.toggle("hidden", !u.memory);
    $("memory-watch-card").classList.toggle("hidden", !u.memory);
  }

  // memory watch: one row per memory (its latest event), newest first, each with a Forget button
  function forgetRows(ids) {
    const gone = new Set(ids);
    for (const list of [$("memory-watch"), $("memories")]) {
      for (const row of [...list.children]) if (gone.has(row.dataset.id)) row.remove();
    }
  }

  function forgetButton(id) {
    const forget = el("button", "forget", "forget");
    forget.type = "button";
    forget.addEventListener("click", async () => {
      if (await control("memory/forget", { ids: [id] })) forgetRows([id]);
    });
    return forget;
  }

  function watchRow(m) {
    const item = el("li", m.event);
    item.dataset.id = m.id;
    item.dataset.event = m.event;
    if (m.turn !== null && m.turn !== undefined) item.dataset.turn = String(m.turn);
    const when = m.event === "recalled" ? `recalled${m.turn ? " for #" + m.turn : ""}` : "remembered";
    item.append(el("span", "meta", `${when} · ${m.kind}`));
    if (m.user) item.append(el("span", "user", m.user));
    item.append(el("span", "text", m.text));
    if (typeof m.distance === "number") item.append(el("span", "detail", `d=${m.distance.toFixed(2)}`));
    item.append(forgetButton(m.id));
    return item;
  }

  function onMemory(u) {
    const list = $("memory-watch");
    if (u.event === "forgotten") { forgetRows(u.ids || []); return; }
    if (u.event === "recent") list.replaceChildren();
    for (const m of u.items || []) {
      for (const row of [...list.children]) if (row.dataset.id === m.id) row.remove();
      list.prepend(watchRow({ ...m, event: m.event || u.event, turn: m.turn ?? u.turn }));
    }
    while (list.children.length > MEMORY_SHOWN) list.lastElementChild.remove();
  }

  function update(u) {
    if (u.type === "turn") onTurn(u);
    else if (u.type === "word") onWord(u);
    else if (u.type === "said") onSaid(u);
    else if (u.type === "queue") onQueue(u);
    else if (u.type === "status") onStatus(u);
    else if (u.type === "memory") onMemory(u);
  }

  $("interrupt").addEventListener("click", () => control("interrupt", {}));
  $("pause").addEventListener("click", () => control("pause", { paused: !paused }));
  $("say-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("say-text").value;
    if (await control("say", { text, persona: $("say-persona").value })) $("say-text").value = "";
  });
  $("memory-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await control("memory/search", { text: $("memory-query").value });
    const list = $("memories");
    list.replaceChildren();
    for (const m of (result && result.memories) || []) {
      const item = el("li");
      item.dataset.id = m.id;
      item.append(el("span", "meta", `${m.kind} ${m.user || ""}`), el("span", "text", m.text));
      item.append(forgetButton(m.id));
      list.append(item);
    }
    if (result && !result.memories.length) list.append(el("li", "meta", "nothing found"));
  });
  TimingChart.legend($("legend"));
  TimingChart.draw($("timings"), turns);
  window.addEventListener("resize", () => TimingChart.draw($("timings"), turns));
  SparkScreen.connect(update, (up) => {
    $("link").textContent = up ? "live" : "reconnecting…";
    $("link").className = "pill " + (up ? "on" : "off");
    if (up) {  // the server replays the state on connect (a restarted stream counts turns from 1)
      turns.length = 0; current = null; ended.clear(); $("memory-watch").replaceChildren();
    }
  });
})();
