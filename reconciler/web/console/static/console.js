// The reconcile console's only script: keeps an open page up to date without a reload.
// A running run's page asks for the run's JSON every second and updates its status, times
// and output; other pages fetch themselves every few seconds and swap their content in.
// Without JavaScript the pages reload themselves (<noscript><meta refresh>). Each update
// done counts in <main data-polls>.
"use strict";
(function () {
  const main = document.getElementById("live");
  if (!main || !main.dataset.live) return;
  const ACTIVE = ["pending", "running"];

  function setField(name, html) {
    const el = main.querySelector('[data-field="' + name + '"]');
    if (el) el.innerHTML = html;
  }
  function text(value) {
    const span = document.createElement("span");
    span.textContent = value === null || value === undefined ? "" : String(value);
    return span.innerHTML;
  }
  // As html.terminal_text: colour and cursor sequences dropped, other control characters
  // shown as \ufffd, line ends as "\n".
  function terminalText(value) {
    return (value || "")
      .replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g, "")
      .replace(/\r\n?/g, "\n")
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "\ufffd");
  }
  function badge(status) {
    const kinds = {succeeded: "ok", skipped: "ok", pending: "wait", running: "run",
      failed: "bad", blocked: "bad", unknown: "bad", killed: "bad", halted: "bad",
      cancelled: "off"};
    return '<span class="badge ' + (kinds[status] || "off") + '">' + text(status) + "</span>";
  }
  function when(value) {
    if (!value) return '<span class="dim">–</span>';
    return '<time datetime="' + text(value) + '" title="' + text(value) + '">' +
      text(value.replace("T", " ").slice(0, 19)) + "</time>";
  }

  function followRun() {
    const url = main.dataset.json;
    const output = document.getElementById("output");
    async function poll() {
      let run;
      try {
        const reply = await fetch(url, {cache: "no-store", headers: {Accept: "application/json"}});
        if (!reply.ok) return setTimeout(poll, 2000);
        run = await reply.json();
      } catch (e) {
        return setTimeout(poll, 2000);  // the server restarts: try again
      }
      main.dataset.polls = String(Number(main.dataset.polls || 0) + 1);
      setField("status", badge(run.status));
      setField("attempt", text(run.attempt));
      setField("exit_code", text(run.exit_code));
      setField("started_at", when(run.started_at));
      setField("finished_at", when(run.finished_at));
      const box = main.querySelector('[data-field="error"]');
      if (box) { box.textContent = run.error || ""; box.hidden = !run.error; }
      const shown = terminalText(run.output);
      if (output.textContent !== shown) {
        const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
        output.textContent = shown;
        if (atEnd) output.scrollTop = output.scrollHeight;
        const none = document.getElementById("no-output");
        if (none && run.output) none.remove();
      }
      if (ACTIVE.includes(run.status)) {
        setTimeout(poll, 1000);
      } else {
        const note = document.getElementById("live-note");
        if (note) note.textContent = "";
      }
    }
    setTimeout(poll, 1000);
  }

  function followPage() {
    const every = Number(main.dataset.every || 5) * 1000;
    const region = main.dataset.region;
    async function poll() {
      try {
        const reply = await fetch(location.href, {cache: "no-store", headers: {Accept: "text/html"}});
        if (reply.ok) {
          const fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
          const id = region || "live";
          const now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next && now.innerHTML !== next.innerHTML) now.innerHTML = next.innerHTML;
          main.dataset.polls = String(Number(main.dataset.polls || 0) + 1);
        }
      } catch (e) {
        // the server restarts: keep what is shown, try again
      }
      setTimeout(poll, every);
    }
    setTimeout(poll, every);
  }

  if (main.dataset.live === "run") followRun(); else followPage();
})();
