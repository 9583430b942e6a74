/* The terminal console: tabs of xterm.js shells over WebSockets.
 *
 * Mounts into [data-console-mount="terminal"] while the session is running (see session.js for
 * `session:state` and window.LabSession). Wire protocol, per tab:
 *   GET ws(s)://host/ws/sessions/<id>/terminal/?name=<tab>&cols=<n>&rows=<n>
 *   server → client: binary = output bytes; text JSON {type: ready|pong|exit|error}
 *   client → server: binary = input bytes; text JSON {type: resize|ack|ping}
 *   close codes: 4403 forbidden, 4409 session not running, 4500 runner error, 1000 shell exited,
 *   4400 bad request;
 *   anything else is a broken connection and is retried with backoff, reusing the tab's name so
 *   the server can attach the same shell again.
 * Tab names are kept in sessionStorage (a reload reconnects the same tabs) and the font size in
 * localStorage.
 */
(() => {
  "use strict";

  const page = document.getElementById("session-page");
  const mount = page?.querySelector('[data-console-mount="terminal"]');
  if (!page || !mount || typeof window.Terminal !== "function" || !window.LabConsoles) return;

  useNonceForCreatedStyles(document.currentScript?.nonce);

  const LabSite = window.LabSite || { announce() {} };
  const { el, socketUrl: wsUrl, Connection, STATE_TEXT } = window.LabConsoles;
  const FitAddon = window.FitAddon?.FitAddon;

  const ACK_BYTES = 64 * 1024; // acknowledge output in chunks of about this much…
  const ACK_EVERY_MS = 100; // …or this often while some is unacknowledged
  const PING_EVERY_MS = 25_000;
  const FONT_KEY = "labs:terminal-font-size";
  const FONT_MIN = 10;
  const FONT_MAX = 28;
  const FONT_DEFAULT = 14;
  const CLOSE = { ...window.LabConsoles.CLOSE, shellExited: 1000, badRequest: 4400 };

  const storageKey = mount.dataset.storageKey || "labs:terminals";
  const wsPath = mount.dataset.wsPath;
  const encoder = new TextEncoder();
  const INPUT_CHUNK = 32 * 1024;
  const HELD_INPUT_LIMIT = 64 * 1024; // typed before the shell is attached; more is dropped

  // ---- small helpers -------------------------------------------------------------------

  /**
   * xterm.js writes its theme, cell size and scrollbar rules into <style> elements it creates and
   * has no option to give them the Content-Security-Policy nonce, without which style-src blocks
   * them. So <style> elements this page's scripts create get the nonce this script came with.
   * Markup injected into the page (what the policy guards against) never passes through here.
   */
  function useNonceForCreatedStyles(nonce) {
    if (!nonce || document.createElement.labsStyleNonce) return;
    const create = document.createElement;
    const withNonce = function (tagName, options) {
      const element = create.call(this, tagName, options);
      if (element instanceof HTMLStyleElement) element.nonce = nonce;
      return element;
    };
    withNonce.labsStyleNonce = true;
    document.createElement = withNonce;
  }

  function readJson(storage, key, fallback) {
    try {
      const value = JSON.parse(storage.getItem(key) || "null");
      return value ?? fallback;
    } catch {
      return fallback; // storage disabled or garbage: start afresh
    }
  }

  function writeJson(storage, key, value) {
    try {
      storage.setItem(key, JSON.stringify(value));
    } catch {
      // Private mode or quota: tabs simply are not remembered.
    }
  }

  function fontSize() {
    let stored = FONT_DEFAULT;
    try {
      stored = Number(window.localStorage.getItem(FONT_KEY)) || FONT_DEFAULT;
    } catch {
      // storage disabled
    }
    return Math.min(FONT_MAX, Math.max(FONT_MIN, stored));
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain-HTTP installs have no async clipboard API.
    const area = el("textarea", { readonly: true, class: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("copy failed");
  }

  function socketUrl(name, cols, rows) {
    const query = new URLSearchParams({ name, cols: String(cols), rows: String(rows) });
    return wsUrl(`${wsPath}?${query}`);
  }

  // ---- one tab: an xterm.js terminal and its connection --------------------------------

  class TerminalTab extends Connection {
    constructor(console_, name) {
      super("data-terminal-state");
      this.console = console_;
      this.name = name;
      this.ws = null;
      this.pingTimer = 0;
      this.ackTimer = 0;
      this.unacked = 0; // bytes written to the screen since the last ack
      this.exited = false;
      this.lastError = "";
      this.lastSize = "";

      const id = `terminal-${name}`;
      this.dot = el("span", { class: "conn-dot", "aria-hidden": "true" });
      this.tab = el(
        "button",
        {
          type: "button",
          role: "tab",
          class: "terminal-tab",
          id: `${id}-tab`,
          "aria-controls": `${id}-panel`,
          "aria-selected": "false",
          "aria-keyshortcuts": "Delete",
          tabindex: "-1",
          "data-terminal-tab": name,
        },
        this.dot,
        el("span", { class: "visually-hidden" }, "Terminal "),
        name,
      );
      this.closeButton = el(
        "button",
        { type: "button", class: "terminal-tab-close", tabindex: "-1", "aria-label": `Close terminal ${name}`, title: "Close (Delete)" },
        "×",
      );
      this.tabWrap = el("span", { class: "terminal-tab-wrap", role: "presentation" }, this.tab, this.closeButton);

      this.newShellButton = el("button", { type: "button", class: "term-action", hidden: true, "data-new-shell": "" }, "New shell");
      this.reconnectButton = el("button", { type: "button", class: "term-action", hidden: true, "data-reconnect": "" }, "Reconnect now");
      this.screen = el("div", { class: "terminal-screen", "data-terminal-screen": name });
      this.panel = el(
        "div",
        { role: "tabpanel", class: "terminal-panel", id: `${id}-panel`, "aria-labelledby": `${id}-tab`, hidden: true, "data-terminal-panel": name },
        el("div", { class: "terminal-status" }, this.badge, this.detail, this.newShellButton, this.reconnectButton),
        this.screen,
      );

      this.term = new window.Terminal({
        fontSize: fontSize(),
        fontFamily: 'ui-monospace, "SFMono-Regular", "Cascadia Code", "Source Code Pro", Menlo, Consolas, monospace',
        // Rows exactly one font-height tall cut off what is drawn below the baseline's descent:
        // with DejaVu Sans Mono at 14 px and a pixel ratio of 1, every underscore ("x86_64" read
        // "x86 64"). A little leading keeps the whole glyph inside its row.
        lineHeight: 1.2,
        cursorBlink: true,
        scrollback: 5000,
        screenReaderMode: false,
        theme: { background: "#0d1117", foreground: "#c9d1d9", cursor: "#c9d1d9", selectionBackground: "#264f78" },
      });
      this.fit = FitAddon ? new FitAddon() : null;
      if (this.fit) this.term.loadAddon(this.fit);
      this.opened = false;

      this.term.onData((data) => this.sendBytes(encoder.encode(data)));
      // Some mouse reports are raw bytes in a string, one char per byte.
      this.term.onBinary((data) => this.sendBytes(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
      this.term.onResize(({ cols, rows }) => this.sendResize(cols, rows));
      this.term.attachCustomKeyEventHandler((event) => this.console.handleKey(event, this));

      this.newShellButton.addEventListener("click", () => this.reconnect());
      this.reconnectButton.addEventListener("click", () => this.reconnect());
      this.resizeObserver = new ResizeObserver(() => this.fitNow());
    }

    /** Put the terminal on screen; xterm.js needs a visible element to measure its cells. */
    open() {
      if (this.opened) return;
      this.opened = true;
      this.term.open(this.screen);
      this.resizeObserver.observe(this.screen);
      this.fitNow();
    }

    fitNow() {
      if (!this.opened || this.panel.hidden || !this.screen.offsetWidth || !this.screen.offsetHeight) return;
      try {
        this.fit?.fit();
      } catch {
        // Not measurable yet (fonts loading); the next resize tries again.
      }
    }

    setState(state, detail = "") {
      if (state === "disconnected" && this.state !== state && detail && this.console.active === this) {
        LabSite.announce(`Terminal ${this.name} disconnected: ${detail}.`);
      }
      super.setState(state, detail);
      this.tabWrap.dataset.state = state;
      this.tab.title = `Terminal ${this.name}: ${STATE_TEXT[state].toLowerCase()}${detail ? ` (${detail})` : ""}`;
      this.newShellButton.hidden = !(state === "disconnected" && this.exited);
    }

    connect() {
      if (this.ws || this.stopped) return;
      this.exited = false;
      this.lastError = "";
      this.startAttempt();
      const ws = new WebSocket(socketUrl(this.name, this.term.cols, this.term.rows));
      ws.binaryType = "arraybuffer";
      // The server attaches the shell before it says "ready"; keys typed until then wait here.
      this.attached = false;
      this.heldInput = [];
      this.heldBytes = 0;
      this.ws = ws;
      ws.addEventListener("message", (event) => this.onMessage(event));
      ws.addEventListener("close", (event) => this.onClose(ws, event));
      this.awaitingPong = false;
      this.pingTimer = window.setInterval(() => this.ping(ws), PING_EVERY_MS);
    }

    /** Keep the connection warm through proxies; a ping still unanswered a round later means it is dead. */
    ping(ws) {
      if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      if (this.awaitingPong) {
        ws.close(); // the close event may take long on a dead link: do not wait for it
        this.onClose(ws, { code: 4000 });
        return;
      }
      this.awaitingPong = this.sendJson({ type: "ping" });
    }

    onMessage(event) {
      if (typeof event.data !== "string") {
        const bytes = new Uint8Array(event.data);
        // Flow control: acknowledge what the screen has actually drawn, so a flood of output
        // waits for a slow browser instead of piling up in memory.
        this.term.write(bytes, () => this.written(bytes.length));
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "ready") {
        // Without a kept shell (images without tmux) the old text stays above a fresh prompt.
        if (this.everConnected && !message.reattached) this.term.write("\r\n\x1b[2m[new shell]\x1b[0m\r\n");
        this.everConnected = true;
        this.attempts = 0;
        this.setState("connected", message.reattached ? "reattached" : "");
        this.sendResize(this.term.cols, this.term.rows, true);
        this.attached = true;
        const held = this.heldInput;
        this.heldInput = [];
        this.heldBytes = 0;
        for (const bytes of held) this.sendBytes(bytes);
        if (this.console.active === this) LabSite.announce(`Terminal ${this.name} connected.`);
      } else if (message.type === "pong") {
        this.awaitingPong = false;
      } else if (message.type === "exit") {
        this.exited = true;
      } else if (message.type === "error") {
        this.lastError = String(message.message || "error");
        this.detail.textContent = this.lastError;
      }
    }

    written(length) {
      this.unacked += length;
      if (this.unacked >= ACK_BYTES) {
        this.flushAck();
      } else if (!this.ackTimer) {
        this.ackTimer = window.setTimeout(() => this.flushAck(), ACK_EVERY_MS);
      }
    }

    flushAck() {
      window.clearTimeout(this.ackTimer);
      this.ackTimer = 0;
      if (!this.unacked) return;
      if (this.sendJson({ type: "ack", bytes: this.unacked })) this.unacked = 0;
    }

    onClose(ws, event) {
      if (this.ws !== ws) return;
      this.ws = null;
      window.clearInterval(this.pingTimer);
      window.clearTimeout(this.ackTimer);
      this.ackTimer = 0;
      this.unacked = 0; // a new connection starts its own count
      const code = event.code;
      if (this.closedForGood(code)) return;
      if (code === CLOSE.badRequest) {
        this.canReconnect = true; // retrying the same request would be refused again
        this.setState("disconnected", "the server refused this terminal");
      } else if (code === CLOSE.runnerError) {
        this.canReconnect = true;
        this.setState("disconnected", this.lastError || "the environment reported an error");
      } else if (code === CLOSE.shellExited) {
        this.exited = true;
        this.setState("disconnected", "the shell exited");
        this.term.write("\r\n\x1b[2m[shell exited]\x1b[0m\r\n");
        window.LabSession?.refresh(); // a stopped session ends its shells too: show that, not "New shell"
      } else {
        this.scheduleReconnect();
      }
    }

    /** "Reconnect now" and "New shell": connect at once, forgetting the backoff. */
    reconnect() {
      this.stopped = false;
      this.attempts = 0;
      if (this.ws) return;
      if (this.exited) {
        this.term.reset();
        this.everConnected = false; // a clean screen needs no "[new shell]" line
      }
      this.connect();
      this.term.focus();
    }

    sendBytes(bytes) {
      if (this.ws?.readyState !== WebSocket.OPEN) return;
      if (!this.attached) {
        if (this.heldBytes + bytes.length <= HELD_INPUT_LIMIT) {
          this.heldInput.push(bytes);
          this.heldBytes += bytes.length;
        }
        return;
      }
      // The server drops input frames over 64 KiB, so a big paste goes in pieces.
      for (let start = 0; start < bytes.length; start += INPUT_CHUNK) {
        this.ws.send(bytes.subarray(start, start + INPUT_CHUNK));
      }
    }

    sendJson(message) {
      if (this.ws?.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(message));
      return true;
    }

    sendResize(cols, rows, force = false) {
      const size = `${cols}x${rows}`;
      if (!force && size === this.lastSize) return;
      if (this.sendJson({ type: "resize", cols, rows })) this.lastSize = size;
    }

    /** For stop(): close the socket; its close event says "disconnected". */
    hangUp() {
      if (!this.ws) return false;
      this.ws.close(1000);
      return true;
    }

    dispose() {
      this.stop();
      this.resizeObserver.disconnect();
      this.term.dispose();
      this.tabWrap.remove();
      this.panel.remove();
    }
  }

  // ---- the console: tabs, toolbar, storage ---------------------------------------------

  class TerminalConsole {
    constructor() {
      this.tabs = [];
      this.active = null;
      const saved = readJson(window.sessionStorage, storageKey, {});
      this.nextNumber = Number(saved.next) || 1;

      this.tablist = el("div", { role: "tablist", class: "terminal-tabs", "aria-label": "Terminals" });
      this.addButton = el(
        "button",
        { type: "button", class: "terminal-add", "aria-label": "New terminal", title: "New terminal", "data-terminal-add": "" },
        "+",
      );
      const tool = (label, text, attrs = {}) => el("button", { type: "button", class: "term-tool", "aria-label": label, title: label, ...attrs }, text);
      this.copyButton = tool("Copy selection (Ctrl+Shift+C)", "Copy", { "data-terminal-copy": "" });
      this.pasteButton = tool("Paste (Ctrl+Shift+V)", "Paste", { "data-terminal-paste": "" });
      this.smallerButton = tool("Smaller text", "A−", { "data-font-smaller": "" });
      this.biggerButton = tool("Larger text", "A+", { "data-font-bigger": "" });
      this.panels = el("div", { class: "terminal-panels" });
      this.empty = el("p", { class: "terminal-empty", hidden: true }, "No terminal is open. Press + to open one.");
      this.root = el(
        "div",
        { class: "terminal-console" },
        el(
          "div",
          { class: "terminal-bar" },
          el("div", { class: "terminal-tabs-wrap" }, this.tablist, this.addButton),
          el("div", { class: "terminal-tools", role: "group", "aria-label": "Terminal tools" },
            this.copyButton, this.pasteButton, this.smallerButton, this.biggerButton),
        ),
        this.panels,
        this.empty,
      );
      mount.replaceChildren(this.root);

      this.addButton.addEventListener("click", () => this.add().term.focus());
      this.copyButton.addEventListener("click", () => this.copy());
      this.pasteButton.addEventListener("click", () => this.paste());
      this.smallerButton.addEventListener("click", () => this.changeFont(-1));
      this.biggerButton.addEventListener("click", () => this.changeFont(1));
      this.tablist.addEventListener("click", (event) => this.onTabClick(event));
      this.tablist.addEventListener("keydown", (event) => this.onTabKey(event));

      // The visible tab is measured first, so its shell starts at the right size.
      const names = Array.isArray(saved.tabs) ? saved.tabs.filter((n) => /^[a-z0-9-]{1,16}$/.test(n)) : [];
      for (const name of names.length ? names : [null]) this.add(name, false, false);
      this.select(this.tabs.find((t) => t.name === saved.active) || this.tabs[0], false);
      for (const tab of this.tabs) tab.connect();
    }

    save() {
      writeJson(window.sessionStorage, storageKey, {
        tabs: this.tabs.map((t) => t.name),
        active: this.active?.name || null,
        next: this.nextNumber,
      });
    }

    /** Open a tab; a new one gets the next number, never a closed tab's, so it is a fresh shell. */
    add(name = null, select = true, connect = true) {
      if (!name) {
        const used = new Set(this.tabs.map((t) => t.name));
        while (used.has(String(this.nextNumber))) this.nextNumber += 1;
        name = String(this.nextNumber);
        this.nextNumber += 1;
      } else if (/^\d+$/.test(name)) {
        this.nextNumber = Math.max(this.nextNumber, Number(name) + 1);
      }
      const tab = new TerminalTab(this, name);
      this.tabs.push(tab);
      this.tablist.append(tab.tabWrap);
      this.panels.append(tab.panel);
      tab.closeButton.addEventListener("click", () => this.close(tab));
      this.empty.hidden = true;
      if (select) this.select(tab, false);
      if (connect) tab.connect();
      this.save();
      return tab;
    }

    select(tab, focus = true) {
      if (!tab) return;
      this.active = tab;
      for (const other of this.tabs) {
        const selected = other === tab;
        other.tab.setAttribute("aria-selected", String(selected));
        other.tab.tabIndex = selected ? 0 : -1;
        other.panel.hidden = !selected;
      }
      tab.open();
      tab.fitNow();
      if (focus) tab.tab.focus();
      this.save();
    }

    close(tab) {
      const index = this.tabs.indexOf(tab);
      if (index < 0) return;
      tab.dispose();
      this.tabs.splice(index, 1);
      if (this.active === tab) {
        this.active = null;
        this.select(this.tabs[Math.min(index, this.tabs.length - 1)], false);
        this.active?.tab.focus();
      }
      if (!this.tabs.length) {
        this.empty.hidden = false;
        this.addButton.focus();
      }
      LabSite.announce(`Terminal ${tab.name} closed.`);
      this.save();
    }

    onTabClick(event) {
      const button = event.target instanceof Element ? event.target.closest("[data-terminal-tab]") : null;
      const tab = this.tabs.find((t) => t.tab === button);
      if (tab) {
        this.select(tab, false);
        tab.term.focus();
      }
    }

    onTabKey(event) {
      const index = this.tabs.findIndex((t) => t.tab === document.activeElement);
      if (index < 0) return;
      const count = this.tabs.length;
      const next = {
        ArrowRight: this.tabs[(index + 1) % count],
        ArrowLeft: this.tabs[(index - 1 + count) % count],
        Home: this.tabs[0],
        End: this.tabs[count - 1],
      }[event.key];
      if (next) {
        event.preventDefault();
        this.select(next, true);
      } else if (event.key === "Delete") {
        event.preventDefault();
        this.close(this.tabs[index]);
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.tabs[index].term.focus();
      }
    }

    /** Ctrl+Shift+C copies and Ctrl+Shift+V pastes, as in desktop terminals; plain Ctrl+C stays ^C. */
    handleKey(event, tab) {
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey || event.altKey || event.metaKey) return true;
      if (event.code === "KeyC") {
        event.preventDefault(); // Chromium would open its element inspector
        this.copy(tab);
        return false;
      }
      if (event.code === "KeyV") {
        // Let the browser deliver its own paste event to xterm.js: no permission prompt needed.
        return false;
      }
      return true;
    }

    async copy(tab = this.active) {
      const text = tab?.term.getSelection() || "";
      if (!text) {
        LabSite.announce("Select text in the terminal first.");
        this.flash(this.copyButton, "Select text first");
        return;
      }
      try {
        await copyText(text);
        this.flash(this.copyButton, "Copied");
        LabSite.announce("Copied.");
      } catch {
        this.flash(this.copyButton, "Copy failed");
      }
      tab.term.focus();
    }

    async paste(tab = this.active) {
      if (!tab) return;
      try {
        if (!navigator.clipboard?.readText) throw new Error("no clipboard API");
        const text = await navigator.clipboard.readText();
        if (text) tab.term.paste(text);
      } catch {
        // Plain HTTP, or the permission was refused: the keyboard shortcut still works.
        this.flash(this.pasteButton, "Use Ctrl+Shift+V");
        LabSite.announce("The browser did not allow reading the clipboard; press Ctrl+Shift+V in the terminal.");
      }
      tab.term.focus();
    }

    flash(button, text) {
      button.dataset.label = button.dataset.label || button.textContent;
      button.textContent = text;
      window.clearTimeout(Number(button.dataset.timer || 0));
      button.dataset.timer = String(window.setTimeout(() => { button.textContent = button.dataset.label; }, 2000));
    }

    changeFont(step) {
      const size = Math.min(FONT_MAX, Math.max(FONT_MIN, fontSize() + step));
      try {
        window.localStorage.setItem(FONT_KEY, String(size));
      } catch {
        // not remembered, still applied
      }
      for (const tab of this.tabs) tab.term.options.fontSize = size;
      this.active?.fitNow();
      LabSite.announce(`Text size ${size}.`);
    }

    /** Fit the visible terminal when its pane is shown or the window changes size. */
    refit() {
      this.active?.fitNow();
    }

    /** The session stopped: keep the text on screen to read and copy, but connect no more. */
    stopAll(reason) {
      for (const tab of this.tabs) tab.stop(reason);
    }
  }

  // ---- start and stop with the session -------------------------------------------------

  let consoleUi = null;

  function sync(state) {
    if (state === "running") {
      if (!consoleUi) {
        consoleUi = new TerminalConsole();
      } else {
        // Running again after a stop we saw (rare): reconnect what is there.
        for (const tab of consoleUi.tabs) tab.reconnect();
      }
    } else if (consoleUi) {
      consoleUi.stopAll(`the session is ${state}`);
    }
  }

  document.addEventListener("session:state", (event) => sync(event.detail.state));
  // A check finished, so a step may have started: the server runs its foreground script (Killercoda's)
  // in terminal "1" if it has one waiting.
  document.body.addEventListener("judge-progress", () => {
    consoleUi?.tabs.find((tab) => tab.name === "1")?.sendJson({ type: "steps" });
  });
  page.addEventListener("console:select", (event) => {
    if (event.detail.console === "terminal") window.requestAnimationFrame(() => consoleUi?.refit());
  });
  window.addEventListener("resize", () => consoleUi?.refit());
  // Leaving the page closes the sockets itself; do not treat that as a dropped connection.
  window.addEventListener("pagehide", () => consoleUi?.stopAll("page closed"));
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && consoleUi && (window.LabSession?.state || page.dataset.state) === "running") {
      for (const tab of consoleUi.tabs) tab.reconnect(); // back from the back/forward cache
    }
  });

  // Click-to-run: command blocks in the instructions get a Run button that types into the open terminal.
  const RUNNABLE_LANGUAGES = new Set(["bash", "sh", "shell", "console", "exec", "exec-interrupt"]);
  function runInTerminal(text, interrupt) {
    const tab = consoleUi?.active;
    if (!tab) {
      LabSite.announce("Open a terminal first: the session must be running.");
      return;
    }
    document.getElementById("console-tab-terminal")?.click();
    if (interrupt) tab.sendBytes(new Uint8Array([3])); // Ctrl-C stops what runs first
    // Enter is CR, as a keyboard sends it; each line of a multi-line block is its own command.
    tab.sendBytes(encoder.encode(`${text.replace(/\n+$/, "").replace(/\n/g, "\r")}\r`));
    tab.term.focus();
  }
  for (const block of page.querySelectorAll(".instructions-pane [data-code-block]")) {
    const action = block.dataset.action || "";
    if (!RUNNABLE_LANGUAGES.has(action) && !RUNNABLE_LANGUAGES.has(block.dataset.language || "")) continue;
    const actions = block.querySelector("[data-code-actions]");
    const code = block.querySelector("pre");
    if (!actions || !code) continue;
    const interrupt = action === "exec-interrupt" || block.dataset.language === "exec-interrupt";
    const run = el("button", { type: "button", class: "code-run", "data-run-code": "", "aria-label": "Run in the terminal" }, "Run");
    run.addEventListener("click", () => runInTerminal(code.textContent, interrupt));
    actions.prepend(run);
  }
  window.LabTerminals = { run: runInTerminal };

  sync(window.LabSession?.state || page.dataset.state);
})();
