// Captions in step with the voice: a word is shown when the server says its audio started
// playing. URL parameters: font, size, color, name_color, colors (Name:hex,Name:hex), box,
// outline, width, position (bottom|top|middle), align (center|left|right), chat (1: show the
// chat line answered), words (how many words stay on screen), linger (seconds after the line).
"use strict";

(() => {
  const p = SparkScreen.params;
  const root = document.documentElement.style;
  const caption = document.getElementById("caption");
  const nameNode = document.getElementById("name");
  const wordsNode = document.getElementById("words");
  const chat = document.getElementById("chat");

  const COLOUR = /^(#?[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}|transparent)$/;
  const colour = (v) => (v && COLOUR.test(v) ? (/^[0-9a-fA-F]{3,8}$/.test(v) ? "#" + v : v) : null);
  const set = (name, value) => { if (value) root.setProperty(name, value); };
  const font = p.get("font");
  if (font && /^[\w\s,'"-]{1,80}$/.test(font)) set("--caption-font", font);
  const size = parseFloat(p.get("size"));
  if (size > 4 && size < 400) set("--caption-size", size + "px");
  const width = parseFloat(p.get("width"));
  if (width > 10 && width <= 100) set("--caption-width", width + "%");
  set("--caption-color", colour(p.get("color")));
  set("--name-color", colour(p.get("name_color")));
  set("--caption-box", colour(p.get("box")));
  set("--caption-outline", colour(p.get("outline")));
  const personaColours = {};
  for (const pair of (p.get("colors") || "").split(",")) {
    const [name, value] = pair.split(":");
    if (name && colour(value)) personaColours[name.trim()] = colour(value);
  }
  const position = ["top", "middle", "bottom"].includes(p.get("position")) ? p.get("position") : "bottom";
  caption.classList.add(position);
  if (["left", "right"].includes(p.get("align"))) caption.classList.add(p.get("align"));
  const showChat = p.get("chat") === "1";
  const maxWords = Math.max(4, parseInt(p.get("words") || "28", 10) || 28);
  const linger = Math.max(0, parseFloat(p.get("linger") || "4") || 0) * 1000;

  let turn = null;   // the turn captioned now
  let pending = null;  // a turn started: shown when its first word plays
  let words = [];
  let hideTimer = null;
  const ended = new Set();  // turns whose line ended: a word of theirs that comes late is dropped
  let newest = 0;  // the newest turn heard of on this connection: an older turn's word is dropped

  function render() {
    wordsNode.textContent = words.slice(-maxWords).join(" ");
  }

  function show(line) {
    clearTimeout(hideTimer);
    turn = line.turn;
    words = [];
    caption.dataset.persona = line.persona;
    caption.dataset.turn = String(line.turn);
    delete caption.dataset.ended;
    nameNode.textContent = line.persona;
    if (personaColours[line.persona]) caption.style.setProperty("--persona-color", personaColours[line.persona]);
    else caption.style.removeProperty("--persona-color");
    if (showChat && line.chat) {
      chat.querySelector(".chat-user").textContent = line.chat.user;
      chat.querySelector(".chat-text").textContent = line.chat.text;
      chat.classList.remove("hidden");
    } else {
      chat.classList.add("hidden");
    }
    caption.classList.remove("hidden");
  }

  function update(u) {
    if ((u.type === "turn" || u.type === "said") && typeof u.turn === "number") newest = Math.max(newest, u.turn);
    if (u.type === "turn") {
      pending = u;
    } else if (u.type === "word") {
      // only the line being spoken: never a late word of an ended turn, nor one of an older turn
      if (ended.has(u.turn) || u.turn < newest) return;
      newest = u.turn;
      if (turn !== u.turn) {
        if (!pending || pending.turn !== u.turn) pending = { turn: u.turn, persona: u.persona, chat: null };
        show(pending);
      }
      words.push(u.text);
      caption.dataset.piece = String(u.piece);
      render();
    } else if (u.type === "said") {
      ended.add(u.turn);
      if (ended.size > 64) ended.delete(ended.values().next().value);
      if (u.turn !== turn || caption.dataset.ended) return;  // not captioned, or replayed on a reconnect
      if (u.interrupted && words.length) { words.push("—"); render(); }
      caption.dataset.ended = u.interrupted ? "interrupted" : "done";
      clearTimeout(hideTimer);
      hideTimer = setTimeout(() => caption.classList.add("hidden"), linger);
    }
  }

  SparkScreen.connect(update, (up) => {
    document.body.dataset.connected = up ? "1" : "0";
    // the server replays the line's words; a restarted stream counts turns from 1
    if (up) { ended.clear(); newest = 0; pending = null; words = []; }
  });
})();
