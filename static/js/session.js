/* The session page: its live stream, time-left countdown, idle warning with heartbeats, console
 * tabs, and for staff the environment's output.
 *
 * The status region (#session-status, the "status" partial) carries the data this reads:
 *   data-state, data-server-now (epoch seconds when rendered), data-expires-at (ISO),
 *   data-idle-timeout-seconds, data-last-active (ISO),
 *   data-warning-seconds (LAB_SESSION_WARNING_MINUTES: the countdown turns to a warning below it).
 * The live stream (#session-page[data-stream-url], Server-Sent Events from sessions_app/streams.py)
 * swaps the region in as soon as the state changes and appends progress lines as they are logged;
 * each new copy of the region is read again. Should the stream fail again and again, the page asks
 * for the region every POLL_EVERY_MS while the state is changing, and tries the stream again later.
 * Other scripts can listen for `session:state` on document ({detail: {state, previous}}), and for
 * `session:progress` ({detail: the stream's progress line}, e.g. start_progress.js), and use
 * window.LabSession: `state` (the last one read) and `refresh()` (ask the server for the status now).
 * Selecting a console tab dispatches `console:select` ({detail: {console}}) from #session-page.
 */
(() => {
  "use strict";

  const page = document.getElementById("session-page");
  if (!page) return;

  const LabSite = window.LabSite || { announce() {}, csrfToken: () => "", onLoad: (fn) => fn(document.body) };
  const HEARTBEAT_EVERY_MS = 30_000; // at most one heartbeat per 30 s of activity
  const DEFAULT_WARN_SECONDS = 5 * 60; // only if the page does not say (the server's setting wins)
  const IDLE_WARN_SECONDS = 120; // the idle dialog opens this long before the idle stop
  const REFRESH_EVERY_MS = 5_000; // after time is up, ask for the status at most this often
  const STREAM_FAILURES_BEFORE_POLLING = 3; // failed (re)connections in a row
  const POLL_EVERY_MS = 2_000; // without the stream, while the session changes state
  const STREAM_RETRY_MS = 30_000; // without the stream, how long before trying it again
  const MAX_LOG_LINES = 500; // the progress log keeps its newest lines

  const isOwner = page.dataset.owner === "true";
  const heartbeatUrl = page.dataset.heartbeatUrl;
  const dialog = document.getElementById("idle-dialog");
  const dialogCountdown = dialog?.querySelector("[data-idle-countdown]");

  const current = {
    state: null, // set from the status region; the first read announces the state to listeners
    skewMs: 0, // server clock minus this browser's clock
    expiresAt: null, // server-clock milliseconds
    idleTimeoutMs: 0,
    warnSeconds: DEFAULT_WARN_SECONDS,
    lastActive: 0, // server-clock milliseconds
    statusReadAt: 0, // server-clock milliseconds when the server last said when it saw activity
    lastEventId: null,
    warned: new Set(),
    lastHeartbeat: 0,
    trailingHeartbeat: 0,
    lastRefresh: 0,
    diskLevel: null, // "ok", "warning" or "full" where the session's disk is limited
    closingDialog: false,
    logOpen: null, // null until the learner opens or shuts the progress log
    initialised: false,
  };

  const serverNow = () => Date.now() + current.skewMs;

  function parseTime(value) {
    if (!value) return null;
    const ms = Date.parse(value.replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(ms) ? null : ms;
  }

  function formatSeconds(total) {
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = String(total % 60).padStart(2, "0");
    return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
  }

  function spokenDuration(total) {
    const minutes = Math.round(total / 60);
    return minutes >= 1 ? `${minutes} minute${minutes === 1 ? "" : "s"}` : "less than a minute";
  }

  /** Ask HTMX to re-fetch the status region (it listens for session-refresh while running). */
  function requestRefresh(force = false) {
    if (!window.htmx) return;
    if (!force && Date.now() - current.lastRefresh < REFRESH_EVERY_MS) return;
    current.lastRefresh = Date.now();
    window.htmx.trigger(document.body, "session-refresh");
  }

  window.LabSession = {
    sessionId: page.dataset.sessionId,
    /** The state last read from the status region (the page's own until the first read). */
    get state() {
      return current.state || page.dataset.state;
    },
    /** Re-fetch the status now, e.g. when a console learns the session is no longer running. */
    refresh: () => requestRefresh(true),
  };

  // ---- status region -------------------------------------------------------------------

  function readStatus(region) {
    const previous = current.state;
    current.state = region.dataset.state;
    page.dataset.state = current.state;
    current.diskLevel = region.dataset.diskLevel || null;

    const renderedAt = Number(region.dataset.serverNow);
    if (renderedAt) current.skewMs = renderedAt * 1000 - Date.now();
    current.expiresAt = parseTime(region.dataset.expiresAt);
    current.idleTimeoutMs = Number(region.dataset.idleTimeoutSeconds || 0) * 1000;
    const warnSeconds = Number.parseInt(region.dataset.warningSeconds ?? "", 10);
    if (Number.isFinite(warnSeconds) && warnSeconds >= 0) current.warnSeconds = warnSeconds;
    // The server's word on when it last saw activity (any signal: CPU work too), not the page's guess.
    current.lastActive = parseTime(region.dataset.lastActive) || current.lastActive;
    current.statusReadAt = serverNow();

    // Keep the progress log open or shut as the learner left it, scrolled to the newest line.
    const logBox = region.querySelector(".event-log-wrap");
    if (logBox && current.logOpen !== null) logBox.open = current.logOpen;
    const log = region.querySelector(".event-log");
    if (log) log.scrollTop = log.scrollHeight;

    // Tell screen readers what changed: new log lines and the new state, in one message.
    const spoken = [];
    const events = [...region.querySelectorAll("[data-event-id]")];
    const ids = events.map((li) => Number(li.dataset.eventId));
    if (current.lastEventId !== null) {
      for (const li of events) {
        const text = li.querySelector(".event-message")?.textContent.trim();
        if (text && Number(li.dataset.eventId) > current.lastEventId) spoken.push(text);
      }
    }
    current.lastEventId = Math.max(current.lastEventId ?? 0, ...ids, 0);

    if (previous !== current.state) {
      const label = region.querySelector(".state")?.textContent.trim() || current.state;
      if (current.initialised) spoken.push(`Session is now ${label.toLowerCase()}.`);
      document.dispatchEvent(new CustomEvent("session:state", { detail: { state: current.state, previous } }));
    }
    if (spoken.length) LabSite.announce(spoken.join(" "));
    current.initialised = true;
    if (ENDED_STATES.has(current.state)) closeStream();
    else openStream();
    tick();
  }

  // ---- live stream ---------------------------------------------------------------------

  const ENDED_STATES = new Set(["stopped", "failed", "expired"]);
  const CHANGING_STATES = new Set(["waiting", "requested", "provisioning", "stopping"]);
  // statusHtml: the status region the stream last sent (null until its first one on this page).
  const live = { source: null, failures: 0, polling: 0, retry: 0, statusHtml: null };

  function openStream() {
    const url = page.dataset.streamUrl;
    if (live.source || live.polling || !url || typeof window.EventSource !== "function") return;
    const address = new URL(url, window.location.href);
    // Only lines newer than the page's; a reconnect sends Last-Event-ID, which the server prefers.
    if (current.lastEventId !== null) address.searchParams.set("after", String(current.lastEventId));
    const source = new EventSource(address);
    live.source = source;
    source.addEventListener("open", () => { live.failures = 0; });
    source.addEventListener("progress", (event) => appendLine(JSON.parse(event.data)));
    source.addEventListener("state", (event) => {
      const data = JSON.parse(event.data);
      // A new state, or the same one showing something new (a resource notice appears or goes).
      const changed = live.statusHtml !== null && data.html !== live.statusHtml;
      live.statusHtml = data.html;
      if (data.state !== current.state || changed) swapStatus(data.html);
    });
    source.addEventListener("end", closeStream);
    source.addEventListener("error", () => {
      // The browser reconnects by itself, unless the server refused (a 404 or not a stream).
      live.failures += 1;
      if (source.readyState === EventSource.CLOSED || live.failures >= STREAM_FAILURES_BEFORE_POLLING) {
        closeStream();
        startPolling();
      }
    });
  }

  function closeStream() {
    live.source?.close();
    live.source = null;
  }

  function startPolling() {
    if (live.polling || ENDED_STATES.has(current.state)) return;
    live.polling = window.setInterval(() => {
      if (CHANGING_STATES.has(current.state)) requestRefresh(true);
    }, POLL_EVERY_MS);
    live.retry = window.setTimeout(() => {
      window.clearInterval(live.polling);
      live.polling = 0;
      live.failures = 0;
      if (!ENDED_STATES.has(current.state)) openStream();
    }, STREAM_RETRY_MS);
  }

  /** Put the server's new status region in place of the old; HTMX processes it and session.js reads it. */
  function swapStatus(html) {
    const region = document.getElementById("session-status");
    if (!region) return;
    if (window.htmx) {
      window.htmx.swap(region, html, { swapStyle: "outerHTML", swapDelay: 0, settleDelay: 0 });
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (fresh) {
      region.replaceWith(fresh);
      readStatus(fresh);
    }
  }

  const pendingSpeech = [];

  function appendLine(line) {
    if (current.lastEventId !== null && line.id <= current.lastEventId) return; // shown already
    const wrap = document.querySelector("#session-status .event-log-wrap");
    const log = wrap?.querySelector(".event-log");
    if (!log) return;
    const item = document.createElement("li");
    item.className = `event event-${String(line.level).replace(/[^a-z]/g, "")}`;
    item.dataset.eventId = String(line.id);
    const time = document.createElement("time");
    time.dateTime = line.datetime;
    time.textContent = line.time;
    const message = document.createElement("span");
    message.className = "event-message";
    message.textContent = line.message;
    item.append(time, " ", message);
    log.append(item);
    while (log.children.length > MAX_LOG_LINES) log.firstElementChild.remove();
    wrap.hidden = false;
    log.scrollTop = log.scrollHeight;
    current.lastEventId = line.id;
    // Lines that arrive together are spoken together.
    if (!pendingSpeech.length) {
      window.setTimeout(() => LabSite.announce(pendingSpeech.splice(0).join(" ")), 0);
    }
    pendingSpeech.push(line.message);
    document.dispatchEvent(new CustomEvent("session:progress", { detail: line })); // start_progress.js
  }

  // ---- countdown and idle warning ------------------------------------------------------

  function updateTimeLeft(now) {
    const box = document.querySelector("#session-status [data-time-left]");
    const value = box?.querySelector("[data-time-left-value]");
    if (!box || !value || current.expiresAt === null) return;
    const left = Math.max(0, Math.round((current.expiresAt - now) / 1000));
    value.textContent = left > 0 ? formatSeconds(left) : "time is up";
    box.classList.toggle("is-warning", left < current.warnSeconds);
    for (const mark of [current.warnSeconds, 60]) {
      if (left > 0 && left <= mark && !current.warned.has(mark)) {
        current.warned.add(mark);
        LabSite.announce(`${spokenDuration(left)} left in this session.`);
      }
    }
    if (left === 0) requestRefresh();
  }

  function closeDialog() {
    if (!dialog?.open) return;
    current.closingDialog = true;
    dialog.close();
    current.closingDialog = false;
  }

  function updateIdle(now) {
    if (!dialog || !isOwner || !current.idleTimeoutMs || !current.lastActive) return closeDialog();
    const left = Math.max(0, Math.round((current.lastActive + current.idleTimeoutMs - now) / 1000));
    const warnAt = Math.min(IDLE_WARN_SECONDS, Math.floor(current.idleTimeoutMs / 2000));
    if (left > warnAt) return closeDialog();
    // Work running in the session (CPU), the preview or another tab may have kept it active since the
    // page last heard: before warning, ask the server when it last saw activity (the status region).
    const warnFrom = current.lastActive + current.idleTimeoutMs - warnAt * 1000;
    if (!dialog.open && window.htmx && current.statusReadAt < warnFrom) return requestRefresh();
    if (dialogCountdown) dialogCountdown.textContent = formatSeconds(left);
    if (!dialog.open && typeof dialog.showModal === "function") dialog.showModal();
    if (left === 0) requestRefresh();
  }

  function tick() {
    if (current.state !== "running") {
      closeDialog();
      return;
    }
    const now = serverNow();
    updateTimeLeft(now);
    updateIdle(now);
  }

  // ---- heartbeats ----------------------------------------------------------------------

  /** `answer`: the learner answered the idle dialog, which counts whatever the lab's idle signals. */
  async function sendHeartbeat(answer = false) {
    current.lastHeartbeat = Date.now();
    try {
      const response = await fetch(heartbeatUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": LabSite.csrfToken(), Accept: "application/json" },
        body: answer ? new URLSearchParams({ answer: "1" }) : undefined,
      });
      if (!response.ok || !(response.headers.get("content-type") || "").includes("json")) return;
      const data = await response.json();
      // The server's word: the page in use counts only where the lab counts it (idle signals).
      current.lastActive = parseTime(data.last_active) || current.lastActive;
      current.statusReadAt = serverNow();
      if (typeof data.seconds_left === "number") current.expiresAt = serverNow() + data.seconds_left * 1000;
      if (data.state && data.state !== current.state) requestRefresh(true);
      else if (data.disk && data.disk.level !== current.diskLevel) {
        current.diskLevel = data.disk.level;
        requestRefresh(true); // the status region says how full the disk is, and what to do
      }
      tick();
    } catch {
      // Offline for a moment: the next activity tries again.
    }
  }

  /** Throttled to one per HEARTBEAT_EVERY_MS, with a trailing call so late activity still counts. */
  function activity(force = false) {
    if (!isOwner || !heartbeatUrl || current.state !== "running") return;
    const wait = current.lastHeartbeat + HEARTBEAT_EVERY_MS - Date.now();
    if (force || wait <= 0) {
      window.clearTimeout(current.trailingHeartbeat);
      current.trailingHeartbeat = 0;
      sendHeartbeat(force);
    } else if (!current.trailingHeartbeat) {
      current.trailingHeartbeat = window.setTimeout(() => {
        current.trailingHeartbeat = 0;
        activity();
      }, wait);
    }
  }

  const listen = { capture: true, passive: true };
  for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) {
    window.addEventListener(type, () => activity(), listen);
  }
  // Movement counts too, except while the dialog is up: it must be answered on purpose.
  window.addEventListener("pointermove", () => { if (!dialog?.open) activity(); }, listen);

  // "I'm still here" (or Escape) closes the dialog; a close we did not make ourselves is an answer.
  dialog?.addEventListener("close", () => {
    if (current.closingDialog) return;
    current.lastActive = serverNow(); // keep the dialog shut while the heartbeat is on its way
    activity(true);
  });

  document.addEventListener("click", (event) => {
    const summary = event.target instanceof Element ? event.target.closest(".event-log-wrap > summary") : null;
    if (summary) current.logOpen = !summary.parentElement.open; // the click is about to toggle it
  });

  // ---- console tabs --------------------------------------------------------------------

  const tablist = page.querySelector("[data-console-tabs]");
  if (tablist) {
    const tabs = [...tablist.querySelectorAll('[role="tab"]')];
    const select = (tab, focus) => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        const panel = document.getElementById(other.getAttribute("aria-controls"));
        if (panel) panel.hidden = !selected;
      }
      if (focus) tab.focus();
      page.dispatchEvent(new CustomEvent("console:select", { bubbles: true, detail: { console: tab.dataset.consoleTab } }));
    };
    tablist.addEventListener("click", (event) => {
      const tab = event.target instanceof Element ? event.target.closest('[role="tab"]') : null;
      if (tab) select(tab, false);
    });
    tablist.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(document.activeElement);
      if (index < 0) return;
      const next = {
        ArrowRight: tabs[(index + 1) % tabs.length],
        ArrowLeft: tabs[(index - 1 + tabs.length) % tabs.length],
        Home: tabs[0],
        End: tabs[tabs.length - 1],
      }[event.key];
      if (next) {
        event.preventDefault();
        select(next, true);
      }
    });
    select(tabs.find((tab) => tab.getAttribute("aria-selected") === "true") || tabs[0], false);
  }

  // ---- staff: the environment's output ------------------------------------------------

  const outputPanel = page.querySelector("[data-output-panel]");
  if (outputPanel && typeof window.EventSource === "function") {
    const text = outputPanel.querySelector("[data-output-text]");
    const status = outputPanel.querySelector("[data-output-status]");
    const MAX_OUTPUT_CHARS = 200_000;
    let source = null;
    const say = (message, problem = false) => {
      status.textContent = message;
      status.classList.toggle("notice", problem);
      status.classList.toggle("notice-error", problem);
    };
    const stop = () => {
      source?.close();
      source = null;
    };
    outputPanel.addEventListener("toggle", () => {
      if (!outputPanel.open) {
        stop();
        return;
      }
      if (source) return;
      say("Connecting…");
      source = new EventSource(outputPanel.dataset.outputUrl);
      source.addEventListener("open", () => {
        text.textContent = ""; // every connection starts again with the newest output
        say("Following the output live.");
      });
      source.addEventListener("output", (event) => {
        if (status.classList.contains("notice")) say("Following the output live."); // the runner answers again
        const atEnd = text.scrollTop + text.clientHeight >= text.scrollHeight - 4;
        text.append(JSON.parse(event.data).text);
        if (text.textContent.length > MAX_OUTPUT_CHARS) text.textContent = text.textContent.slice(-MAX_OUTPUT_CHARS / 2);
        if (atEnd) text.scrollTop = text.scrollHeight;
      });
      source.addEventListener("runner-error", (event) => {
        const problem = JSON.parse(event.data);
        say(problem.permanent ? problem.message : `${problem.message} (trying again)`, true);
        if (problem.permanent) stop();
      });
      source.addEventListener("end", () => {
        say("The session has ended.");
        stop();
      });
      source.addEventListener("error", () => {
        if (source?.readyState === EventSource.CLOSED) {
          say("The output is not available (the server refused the stream).", true);
          stop();
        } else {
          say("Connection lost; reconnecting…");
        }
      });
    });
  }

  // ---- start ---------------------------------------------------------------------------

  LabSite.onLoad((root) => {
    const region = root.id === "session-status" ? root : root.querySelector("#session-status");
    if (region) readStatus(region);
  });
  window.setInterval(tick, 1000);
})();
