// modelhost console: progressive enhancement only. Pages render complete on the server; this adds
// the page's one live stream (server-sent events replacing fragments, appending log lines), the
// invoke panel without a reload, and confirmations. No libraries.
"use strict";
(function () {
  const state = document.getElementById("live-state");
  function say(text) { if (state) { state.hidden = !text; state.textContent = text; } }

  const url = document.body.dataset.events;
  if (url && window.EventSource) {
    const source = new EventSource(url);
    source.onopen = function () { say(""); };
    source.onerror = function () { say("Live updates paused; reconnecting…"); };
    source.onmessage = function (event) {
      const data = JSON.parse(event.data);
      if (data.error) { say(data.error); return; }
      for (const [id, html] of Object.entries(data.replace || {})) {
        const el = document.getElementById(id);
        if (el && el.innerHTML !== html) { el.innerHTML = html; }
      }
      for (const [id, text] of Object.entries(data.append || {})) {
        const el = document.getElementById(id);
        if (!el) { continue; }
        const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
        el.textContent += (el.textContent && !el.textContent.endsWith("\n") ? "\n" : "") + text.replace(/\n$/, "");
        if (atBottom) { el.scrollTop = el.scrollHeight; }
      }
    };
  }
  for (const log of document.querySelectorAll("pre.log")) { log.scrollTop = log.scrollHeight; }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); }
  });

  const invoke = document.getElementById("invoke-form");
  const out = document.getElementById("invoke-result");
  if (invoke && out && window.fetch) {
    invoke.addEventListener("submit", async function (event) {
      event.preventDefault();
      out.textContent = "Invoking…";
      try {
        const response = await fetch(invoke.action, {
          method: "POST", body: new URLSearchParams(new FormData(invoke)),
          headers: { "Accept": "application/json" }, credentials: "same-origin",
        });
        const r = await response.json();
        const head = document.createElement("p");
        const strong = document.createElement("strong");
        strong.textContent = "HTTP " + r.status;
        head.append(strong, (r.error ? " " + r.error : "") + (r.content_type ? " · " + r.content_type : "") +
          (r.latency_ms !== undefined ? " · " + r.latency_ms + " ms" : ""));
        const body = document.createElement("pre");
        body.className = "answer";
        body.textContent = r.body + (r.binary ? "\n(base64: the answer is not text)" : "");
        out.replaceChildren(head, body);
      } catch (e) {
        out.textContent = "The request failed: " + e;
      }
    });
  }
})();
