// The per-turn stage timings as horizontal bars on a plain canvas: each stage is the stretch
// from the previous stage's mark to its own (all marks are ms from the chat message).
"use strict";

const TimingChart = (() => {
  const STAGES = [
    ["queue_wait_ms", "queue", "#6c7a89"],
    ["prompt_build_ms", "prompt", "#9b59b6"],
    ["llm_first_token_ms", "LLM first token", "#3498db"],
    ["first_piece_ms", "first piece", "#1abc9c"],
    ["tts_first_chunk_ms", "TTS first chunk", "#f1c40f"],
    ["first_audio_out_ms", "first audio", "#e67e22"],
  ];

  function legend(node) {
    node.replaceChildren();
    for (const [, label, colour] of STAGES) {
      const item = SparkScreen.el("span", "", label);
      const swatch = document.createElement("i");
      swatch.style.background = colour;
      item.prepend(swatch);
      node.append(item);
    }
  }

  function draw(canvas, turns) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "12px sans-serif";
    g.textBaseline = "middle";
    const shown = turns.slice(-10);
    if (!shown.length) {
      g.fillStyle = "#9aa0ad";
      g.fillText("no turns yet", 10, 20);
      return;
    }
    const marks = (t) => STAGES.map(([key]) => t.timings[key]);
    const latest = shown.map((t) => Math.max(0, ...marks(t).filter((v) => typeof v === "number")));
    const scale = Math.max(100, ...latest) * 1.1;
    const left = 110, right = 70, top = 8;
    const row = Math.min(24, (height - top - 20) / shown.length);
    const x = (ms) => left + (ms / scale) * (width - left - right);
    shown.forEach((t, i) => {
      const y = top + i * row;
      g.fillStyle = "#e8e8ec";
      g.fillText(`#${t.turn} ${t.persona}`.slice(0, 16), 4, y + row / 2);
      let from = 0;
      STAGES.forEach(([key, , colour]) => {
        const at = t.timings[key];
        if (typeof at !== "number") return;
        g.fillStyle = colour;
        g.fillRect(x(from), y + 3, Math.max(1, x(at) - x(from)), row - 6);
        from = Math.max(from, at);
      });
      g.fillStyle = t.interrupted ? "#f5b84b" : "#9aa0ad";
      const total = t.timings.total_ms;
      const label = (from ? `${Math.round(from)} ms` : "—") + (t.interrupted ? " (cut)" : "");
      g.fillText(label, Math.min(x(from) + 4, width - right + 4), y + row / 2);
      if (typeof total === "number") canvas.dataset["total" + t.turn] = String(total);
    });
    g.strokeStyle = "#444";
    g.beginPath();
    g.moveTo(left, height - 14);
    g.lineTo(width - right, height - 14);
    g.stroke();
    g.fillStyle = "#9aa0ad";
    g.fillText("0", left, height - 6);
    g.fillText(`${Math.round(scale)} ms`, width - right - 40, height - 6);
  }

  return { draw, legend };
})();
