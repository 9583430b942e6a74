/* What the session page's consoles (terminal.js, vnc.js, preview.js) share, as window.LabConsoles:
 *   el(tag, attrs, ...children)  build an element
 *   socketUrl(path)              ws(s)://host<path>, the scheme following the page's
 *   CLOSE, STATE_TEXT            close codes every console handles, and its badge's words
 *   Connection                   base class of a console connection: the status badge and detail,
 *                                "Reconnect now", and reconnecting with backoff (1 s, 2 s, 4 s … 15 s)
 * A plain script: the templates load it before the consoles.
 */
(() => {
  "use strict";

  const MAX_BACKOFF_S = 15;
  const CLOSE = Object.freeze({ forbidden: 4403, notRunning: 4409, runnerError: 4500 });
  const STATE_TEXT = Object.freeze({
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting",
    disconnected: "Disconnected",
  });

  /** Build an element: el("button", {type: "button", class: "x", "aria-label": "…"}, "text", child). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "hidden") node.hidden = Boolean(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children);
    return node;
  }

  function socketUrl(path) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}${path}`;
  }

  /**
   * One console's connection state. A subclass creates `this.reconnectButton`, and implements
   * connect() (calling startAttempt() once it goes ahead) and hangUp() (close the open connection;
   * false if there is none). `stateAttribute` is the badge attribute that mirrors the state.
   */
  class Connection {
    constructor(stateAttribute) {
      this.stateAttribute = stateAttribute;
      this.state = "disconnected";
      this.attempts = 0; // failed connections in a row, for the backoff
      this.retryTimer = 0;
      this.countdownTimer = 0;
      this.stopped = false; // no more reconnects (console closed, session over, page leaving)
      this.canReconnect = false;
      this.badge = el("span", { class: "conn-badge", role: "status", [stateAttribute]: "disconnected" }, STATE_TEXT.disconnected);
      this.detail = el("span", { class: "conn-detail" });
    }

    setState(state, detail = "") {
      this.state = state;
      this.badge.setAttribute(this.stateAttribute, state);
      // Only a real change is spoken (the badge is a live region; the countdown beside it is not).
      if (this.badge.textContent !== STATE_TEXT[state]) this.badge.textContent = STATE_TEXT[state];
      this.detail.textContent = detail;
      this.reconnectButton.hidden = !(state === "reconnecting" || (state === "disconnected" && this.canReconnect));
    }

    cancelRetry() {
      window.clearTimeout(this.retryTimer);
      window.clearInterval(this.countdownTimer);
    }

    /** A connection is being opened: drop a pending retry and say so. */
    startAttempt() {
      this.cancelRetry();
      this.canReconnect = false;
      this.setState(this.attempts ? "reconnecting" : "connecting", this.attempts ? "connecting…" : "");
    }

    /**
     * The connection closed: handle the ends every console shares (stopped on purpose, not
     * allowed, session not running) and return true, or return false for the console to decide.
     */
    closedForGood(code, reason = "") {
      if (this.stopped) {
        this.setState("disconnected", this.stoppedReason || "");
      } else if (code === CLOSE.forbidden) {
        this.stopped = true;
        this.setState("disconnected", "not allowed");
      } else if (code === CLOSE.notRunning) {
        this.stopped = true;
        this.setState("disconnected", reason || "the session is not running");
        window.LabSession?.refresh();
      } else {
        return false;
      }
      return true;
    }

    /** Try again after 1, 2, 4 … 15 s, counting down on the badge's detail. */
    scheduleReconnect(why = "") {
      const delay = Math.min(MAX_BACKOFF_S, 2 ** this.attempts);
      this.attempts += 1;
      let left = delay;
      const show = () => this.setState("reconnecting", `in ${left} s${why ? ` (${why})` : ""}`);
      show();
      this.countdownTimer = window.setInterval(() => {
        left -= 1;
        if (left > 0) show();
      }, 1000);
      this.retryTimer = window.setTimeout(() => {
        window.clearInterval(this.countdownTimer);
        this.connect();
      }, delay * 1000);
    }

    /** Stop for good (console closed, session over, page leaving); `reason` shows on the badge. */
    stop(reason = "") {
      this.stopped = true;
      this.stoppedReason = reason;
      this.cancelRetry();
      if (!this.hangUp()) this.setState("disconnected", reason);
    }
  }

  window.LabConsoles = Object.freeze({ el, socketUrl, CLOSE, STATE_TEXT, Connection });
})();
