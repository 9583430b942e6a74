/* The graphical console: noVNC over the session's VNC WebSocket (/ws/sessions/<id>/vnc/).
 *
 * Mounts into [data-console-mount="vnc"] while the session is running. The WebSocket is opened
 * here and handed to noVNC, so its close code can be read: 4403 (not allowed) and 4409 (session
 * not running, or no desktop) end the console; 4500 (runner error) and a failed VNC
 * authentication wait for "Reconnect now"; anything else (4502 the VNC server does not answer
 * yet, 1000 it closed, a dropped network) is retried with backoff (1 s, 2 s, 4 s … 15 s).
 */
import RFB from "../vendor/novnc/rfb.bundle.js";

const page = document.getElementById("session-page");
const mount = page?.querySelector('[data-console-mount="vnc"]');

// Loaded before this module by the page (static/js/consoles.js).
const { el, socketUrl, CLOSE, Connection } = window.LabConsoles;

const announce = (message) => window.LabSite?.announce(message);

class VncConsole extends Connection {
  constructor(root) {
    super("data-vnc-state");
    this.url = socketUrl(root.dataset.wsPath);
    this.rfb = null;
    this.ws = null;
    this.closeCode = 0;

    const button = (text, attrs = {}) => el("button", { type: "button", class: "term-tool", ...attrs }, text);
    this.reconnectButton = button("Reconnect now", { hidden: true, "data-vnc-reconnect": "" });
    this.ctrlAltDelButton = button("Ctrl+Alt+Del", { "data-vnc-ctrl-alt-del": "", disabled: true });
    this.fullscreenButton = button("Full screen", { "data-vnc-fullscreen": "", "aria-pressed": "false" });
    this.clipboardText = el("textarea", {
      id: "vnc-clipboard-text",
      class: "vnc-clipboard-text",
      rows: "3",
      placeholder: "Text to send to the desktop's clipboard",
    });
    this.clipboardButton = button("Send clipboard text", { "data-vnc-clipboard-send": "", disabled: true });
    this.passwordForm = el(
      "form",
      { class: "vnc-password", hidden: true },
      el("label", { for: "vnc-password-input" }, "Desktop password"),
      el("input", { id: "vnc-password-input", type: "password", autocomplete: "off" }),
      el("button", { type: "submit", class: "term-tool" }, "Connect"),
    );
    this.screen = el("div", { class: "vnc-screen", "data-vnc-screen": "" });
    this.container = el(
      "div",
      { class: "vnc-console" },
      el(
        "div",
        { class: "console-toolbar" },
        el("div", { class: "terminal-status" }, this.badge, this.detail, this.reconnectButton),
        el("div", { class: "terminal-tools", role: "group", "aria-label": "Desktop tools" },
          this.ctrlAltDelButton, this.fullscreenButton),
      ),
      this.passwordForm,
      this.screen,
      el(
        "details",
        { class: "vnc-clipboard" },
        el("summary", {}, "Clipboard"),
        el("label", { for: "vnc-clipboard-text" }, "Text for the desktop (the desktop's own copies show here too)"),
        this.clipboardText,
        el("div", { class: "vnc-clipboard-actions" }, this.clipboardButton),
      ),
    );
    root.replaceChildren(this.container);

    this.reconnectButton.addEventListener("click", () => this.reconnect());
    this.ctrlAltDelButton.addEventListener("click", () => {
      this.rfb?.sendCtrlAltDel();
      this.rfb?.focus();
    });
    this.fullscreenButton.addEventListener("click", () => this.toggleFullscreen());
    this.clipboardButton.addEventListener("click", () => {
      if (!this.rfb) return;
      this.rfb.clipboardPasteFrom(this.clipboardText.value);
      announce("Sent to the desktop's clipboard.");
    });
    this.passwordForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = this.passwordForm.querySelector("input");
      this.rfb?.sendCredentials({ password: input.value });
      input.value = "";
      this.passwordForm.hidden = true;
    });
    document.addEventListener("fullscreenchange", () => {
      this.fullscreenButton.setAttribute("aria-pressed", String(document.fullscreenElement === this.container));
    });
  }

  setState(state, detail = "") {
    super.setState(state, detail);
    const connected = state === "connected";
    this.ctrlAltDelButton.disabled = !connected;
    this.clipboardButton.disabled = !connected;
  }

  connect() {
    if (this.rfb || this.stopped) return;
    this.closeCode = 0;
    this.closeReason = "";
    this.startAttempt();

    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.closeCode = event.code;
      this.closeReason = event.reason;
    });
    this.ws = ws;
    this.screen.replaceChildren();
    const rfb = new RFB(this.screen, ws, { shared: true });
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.background = "#000";
    this.rfb = rfb;

    rfb.addEventListener("connect", () => {
      this.attempts = 0;
      this.setState("connected", this.desktopName || "");
      announce("Desktop connected.");
    });
    rfb.addEventListener("desktopname", (event) => {
      this.desktopName = event.detail.name;
      if (this.state === "connected") this.detail.textContent = this.desktopName;
    });
    rfb.addEventListener("clipboard", (event) => {
      this.clipboardText.value = event.detail.text;
    });
    rfb.addEventListener("credentialsrequired", () => {
      this.passwordForm.hidden = false;
      this.passwordForm.querySelector("input").focus();
    });
    rfb.addEventListener("securityfailure", (event) => {
      this.securityFailure = event.detail.reason || "authentication failed";
    });
    // noVNC reports the disconnect from inside the socket's close handler; decide after it.
    rfb.addEventListener("disconnect", () => window.setTimeout(() => this.onDisconnect(rfb), 0));
  }

  onDisconnect(rfb) {
    if (this.rfb !== rfb) return;
    this.rfb = null;
    this.ws = null;
    this.passwordForm.hidden = true;
    if (this.closedForGood(this.closeCode, this.closeReason)) return;
    if (this.closeCode === CLOSE.runnerError || this.securityFailure) {
      this.canReconnect = true;
      this.setState("disconnected", this.securityFailure || this.closeReason || "the desktop is not reachable");
      this.securityFailure = "";
    } else {
      this.scheduleReconnect(this.closeReason);
    }
  }

  reconnect() {
    this.stopped = false;
    this.attempts = 0;
    this.connect();
  }

  /** For stop(): end the session with the desktop; onDisconnect then says "disconnected". */
  hangUp() {
    if (!this.rfb) return false;
    this.rfb.disconnect();
    return true;
  }

  async toggleFullscreen() {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await this.container.requestFullscreen();
    } catch {
      announce("Full screen is not available here.");
    }
    this.rfb?.focus();
  }
}

if (page && mount) {
  let vnc = null;
  const sync = (state) => {
    if (state === "running") {
      if (!vnc) vnc = new VncConsole(mount);
      vnc.reconnect();
    } else if (vnc) {
      vnc.stop(`the session is ${state}`);
    }
  };
  document.addEventListener("session:state", (event) => sync(event.detail.state));
  page.addEventListener("console:select", (event) => {
    if (event.detail.console === "vnc") vnc?.rfb?.focus();
  });
  window.addEventListener("pagehide", () => vnc?.stop("page closed"));
  sync(window.LabSession?.state || page.dataset.state);
}
