// Shared by the overlay and the panel: the token, the update socket (reconnects with backoff)
// and control requests. Chat text is only ever put into the page with textContent.
"use strict";

const SparkScreen = (() => {
  const params = new URLSearchParams(location.search);
  const KEY = "spark-screen-token";
  let token = params.get("token") || sessionStorage.getItem(KEY) || "";
  if (params.get("token")) sessionStorage.setItem(KEY, token);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function connect(onUpdate, onState) {
    let delay = 500;
    let socket = null;
    const open = () => {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const query = token ? "?token=" + encodeURIComponent(token) : "";
      socket = new WebSocket(scheme + "//" + location.host + "/ws" + query);
      socket.onopen = () => { delay = 500; onState(true); };
      socket.onmessage = (event) => {
        let update;
        try { update = JSON.parse(event.data); } catch (e) { return; }
        try { onUpdate(update); } catch (e) { console.error(e); }
      };
      socket.onclose = () => {
        onState(false);
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 5000);
      };
    };
    open();
  }

  async function post(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers["X-Spark-Token"] = token;
    const response = await fetch("/api/" + path, { method: "POST", headers, body: JSON.stringify(body || {}) });
    let data = {};
    try { data = await response.json(); } catch (e) { data = { ok: false, error: response.status + " " + response.statusText }; }
    if (!response.ok || !data.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  return { params, el, connect, post, forgetTokenInAddressBar: () => {
    if (params.has("token")) {
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    }
  } };
})();
