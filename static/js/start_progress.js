/* The start progress bar in the session's status region (templates/sessions_app/_start_progress.html):
 * moves along the phases of a start as progress lines arrive (`session:progress` from session.js),
 * reading which line opens which phase from the bar's data-phase-prefixes (sessions_app/estimates.py),
 * and shows the time since the request next to the usual one. It never moves back.
 */
(() => {
  "use strict";

  const seen = new WeakMap(); // bar element → server clock minus this browser's, when first seen

  function box() {
    return document.querySelector("#session-status [data-start-progress]");
  }

  function readJson(value, fallback) {
    try {
      return JSON.parse(value || "");
    } catch {
      return fallback;
    }
  }

  function phaseOf(message, prefixes) {
    for (const [prefix, phase] of prefixes) {
      if (message.startsWith(prefix)) return phase;
    }
    return null;
  }

  function moveTo(root, phase) {
    const bar = root.querySelector("[data-start-progress-bar]");
    if (!bar || phase <= Number(bar.getAttribute("aria-valuenow"))) return;
    const labels = readJson(root.dataset.phaseLabels, []);
    bar.setAttribute("aria-valuenow", String(phase));
    if (labels[phase]) bar.setAttribute("aria-valuetext", labels[phase]);
    for (const step of bar.querySelectorAll("[data-phase]")) {
      step.classList.toggle("is-done", Number(step.dataset.phase) <= phase);
    }
    const text = root.querySelector("[data-start-phase]");
    if (text && labels[phase]) text.textContent = labels[phase];
  }

  function tick() {
    const root = box();
    if (!root) return;
    if (!seen.has(root)) {
      const rendered = Number(document.getElementById("session-status")?.dataset.serverNow);
      seen.set(root, rendered ? rendered * 1000 - Date.now() : 0);
    }
    const requested = Date.parse(root.dataset.requestedAt || "");
    const elapsed = root.querySelector("[data-start-elapsed]");
    if (!elapsed || Number.isNaN(requested)) return;
    const seconds = Math.max(0, Math.round((Date.now() + seen.get(root) - requested) / 1000));
    elapsed.textContent = `${seconds} s so far`;
  }

  document.addEventListener("session:progress", (event) => {
    const root = box();
    const message = String(event.detail?.message ?? "");
    if (!root || !message) return;
    const phase = phaseOf(message, readJson(root.dataset.phasePrefixes, []));
    if (phase !== null) moveTo(root, phase);
  });
  tick();
  window.setInterval(tick, 1000);
})();
