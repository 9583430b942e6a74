/* Behaviour shared by every page: confirmations, copy buttons on code blocks, announcements.
 * Everything here is an enhancement; the pages work without it. */
(() => {
  "use strict";

  const LabSite = (window.LabSite = window.LabSite || {});

  /** Say something to screen readers through the page's polite live region. */
  LabSite.announce = (message) => {
    const region = document.getElementById("sr-announcer");
    if (!region || !message) return;
    region.textContent = "";
    // A fresh text node a moment later makes repeated messages get read again.
    window.setTimeout(() => { region.textContent = message; }, 50);
  };

  /** The CSRF token base.html puts in <body hx-headers>, for fetch() calls. */
  LabSite.csrfToken = () => {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch {
      return "";
    }
  };

  /** Run `callback(root)` for the initial page and for every piece of content HTMX swaps in. */
  LabSite.onLoad = (callback) => {
    if (window.htmx) {
      window.htmx.onLoad(callback);
    } else if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", () => callback(document.body));
    } else {
      callback(document.body);
    }
  };

  // <form data-confirm="Question?">: ask before submitting. Capture phase, so it runs before HTMX.
  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    },
    true,
  );

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain-HTTP installs have no async clipboard API.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("copy failed");
  }

  function flashLabel(button, text) {
    button.dataset.label = button.dataset.label || button.textContent;
    button.textContent = text;
    window.clearTimeout(Number(button.dataset.timer || 0));
    button.dataset.timer = String(window.setTimeout(() => { button.textContent = button.dataset.label; }, 2000));
  }

  // Copy buttons that labs/markdown.py puts on code blocks (data-code-block > pre).
  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-copy-code]") : null;
    if (!button) return;
    const pre = button.closest("[data-code-block]")?.querySelector("pre");
    if (!pre) return;
    try {
      await copyText(pre.textContent.replace(/\n$/, ""));
      flashLabel(button, "Copied");
      LabSite.announce("Copied to the clipboard.");
    } catch {
      flashLabel(button, "Copy failed");
      LabSite.announce("Could not copy; select the text and copy it by hand.");
    }
  });

  // The buttons are rendered hidden so that pages without JavaScript show no dead controls.
  LabSite.onLoad((root) => {
    root.querySelectorAll("[data-copy-code][hidden]").forEach((button) => { button.hidden = false; });
  });
})();
