/* The web preview: an iframe on /sessions/<id>/preview/<port>/ for the lab's declared ports.
 *
 * Mounts into [data-console-mount="preview"] (data-preview-base, data-ports="8080,3000",
 * data-preview-sandbox: the frame's sandbox tokens) while the session is running. The frame is
 * always sandboxed; without data-preview-sandbox, strictly (an opaque origin for the app). It
 * loads only once the Preview tab is shown, so a server the learner has not started yet is not
 * asked for early; "Reload" asks again.
 */
(() => {
  "use strict";

  const page = document.getElementById("session-page");
  const mount = page?.querySelector('[data-console-mount="preview"]');
  if (!page || !mount || !window.LabConsoles) return;

  const base = mount.dataset.previewBase;
  const ports = (mount.dataset.ports || "").split(",").map((p) => p.trim()).filter((p) => /^\d+$/.test(p));
  if (!base || !ports.length) return;
  const panel = mount.closest('[role="tabpanel"]');
  const storageKey = `labs:preview-port:${base}`;
  // Never allow-same-origin unless the server says the preview has an origin of its own.
  const sandbox = mount.dataset.previewSandbox ?? "allow-scripts allow-forms allow-popups allow-modals allow-downloads";

  const { el } = window.LabConsoles;

  let ui = null;

  function build() {
    let port = ports[0];
    try {
      const saved = window.sessionStorage.getItem(storageKey);
      if (saved && ports.includes(saved)) port = saved;
    } catch {
      // storage disabled
    }
    const select = el("select", { id: "preview-port", class: "preview-port", "data-preview-port": "" },
      ...ports.map((p) => el("option", { value: p, selected: p === port }, p)));
    const reload = el("button", { type: "button", class: "term-tool", "data-preview-reload": "" }, "Reload");
    const open = el("a", { class: "term-tool", target: "_blank", rel: "noopener", "data-preview-open": "" },
      "Open in new tab", el("span", { class: "visually-hidden" }, " (opens a new window)"));
    // The sandbox is set before the frame has a document: it applies from the first navigation.
    const frame = el("iframe", { class: "preview-frame", title: `Web preview of port ${port}`, sandbox,
      "data-preview-frame": "" });
    const root = el(
      "div",
      { class: "preview-console" },
      el(
        "div",
        { class: "console-toolbar" },
        el("div", { class: "preview-port-field" }, el("label", { for: "preview-port" }, "Port"), select),
        el("div", { class: "terminal-tools" }, reload, open),
      ),
      frame,
    );
    mount.replaceChildren(root);

    const state = { port, loaded: false, frame, select, open };
    const url = () => `${base}${state.port}/`;
    const load = () => {
      state.loaded = true;
      open.href = url();
      frame.title = `Web preview of port ${state.port}`;
      // A new src always re-fetches, even when it equals the old one's.
      frame.src = "about:blank";
      window.setTimeout(() => { frame.src = url(); }, 0);
    };
    state.load = load;
    open.href = url();
    select.addEventListener("change", () => {
      state.port = select.value;
      try {
        window.sessionStorage.setItem(storageKey, state.port);
      } catch {
        // not remembered
      }
      load();
    });
    reload.addEventListener("click", load);
    return state;
  }

  const visible = () => panel && !panel.hidden;

  function sync(stateName) {
    if (stateName === "running") {
      if (!ui) ui = build();
      if (visible() && !ui.loaded) ui.load();
    } else if (ui) {
      // The environment is gone: drop the page rather than show the proxy's error in it.
      ui.frame.src = "about:blank";
      ui.loaded = false;
    }
  }

  document.addEventListener("session:state", (event) => sync(event.detail.state));
  page.addEventListener("console:select", (event) => {
    const running = (window.LabSession?.state || page.dataset.state) === "running";
    if (event.detail.console === "preview" && running && ui && !ui.loaded) ui.load();
  });
  sync(window.LabSession?.state || page.dataset.state);
})();
