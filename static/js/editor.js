/* The session page's file editor: a lazy file tree, CodeMirror 6, save with conflict detection.
 *
 * Markup: templates/sessions_app/_editor.html ([data-editor] with the endpoint URLs).
 * Server: sessions_app/files_views.py (JSON). Every file carries a `version` (SHA-256 of its
 * bytes); a save sends the version it started from and gets 409 with what is on disk if the
 * file changed meanwhile, and the learner then chooses to overwrite or to reload.
 *
 * One file is open at a time, and it is the one the title names. Replacing it while it has
 * unsaved edits (opening another file, creating one) first asks: save them, discard them, or
 * cancel; the edits are saved or dropped only as chosen, and the editor takes no typing until
 * the next file is shown, so no keystroke lands in a file on its way out.
 *
 * Other scripts: window.LabEditor.current() returns {path, content} of the open file (or null);
 * forms marked data-editor-context (e.g. the hint form) get file_path and file_content added to
 * their HTMX requests. Listens for `session:state` from session.js to enable or disable itself.
 */
(() => {
  "use strict";

  const root = document.querySelector("[data-editor]");
  const CM = window.LabCodeMirror;
  if (!root) return;
  const LabSite = window.LabSite || { announce() {}, csrfToken: () => "" };
  // CodeMirror's styles go into constructed style sheets where the browser has them, else into a
  // <style> element, which the Content-Security-Policy lets in only with the page's nonce.
  const cspNonce = CM ? CM.EditorView.cspNonce.of(document.currentScript?.nonce || "") : [];
  const CONTEXT_CHARS = 8000; // how much of the open file a hint request carries

  const $ = (selector) => root.querySelector(selector);
  const urls = {
    list: root.dataset.listUrl,
    open: root.dataset.openUrl,
    save: root.dataset.saveUrl,
    create: root.dataset.createUrl,
    rename: root.dataset.renameUrl,
    delete: root.dataset.deleteUrl,
  };
  const tree = $("[data-editor-tree]");
  const host = $("[data-editor-host]");
  const empty = $("[data-editor-empty]");
  const statusLine = $("[data-editor-status]");
  const fileLabel = $("[data-editor-filename]");
  const dirtyMark = $("[data-editor-dirty]");
  const conflictDialog = $("[data-editor-conflict]");
  const promptDialog = $("[data-editor-prompt]");
  const unsavedDialog = $("[data-editor-unsaved]");
  const buttons = Object.fromEntries(
    [...root.querySelectorAll("[data-editor-action]")].map((b) => [b.dataset.editorAction, b]),
  );

  const state = {
    running: root.dataset.running === "true",
    loaded: false, // the tree's top level has been fetched
    selected: "", // the tree item the toolbar acts on ("" = the workspace itself)
    file: null, // {path, version, saved: CodeMirror Text as last saved or loaded}
    saving: false,
    view: null,
    language: null, // a CodeMirror Compartment
    access: null, // a CodeMirror Compartment: read-only while not running or while switching files
    switching: false, // the open file is being replaced: typing waits for the next one
  };

  // ---- small helpers ---------------------------------------------------------------------

  function say(message, kind = "info") {
    statusLine.textContent = message;
    statusLine.dataset.kind = kind;
    if (kind === "error") LabSite.announce(message);
  }

  const parentOf = (path) => (path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "");
  const baseName = (path) => path.slice(path.lastIndexOf("/") + 1);
  const within = (path, folder) => path === folder || path.startsWith(`${folder}/`);

  class RequestError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function call(url, { method = "GET", params = null, body = null } = {}) {
    const target = new URL(url, window.location.href);
    if (params) for (const [key, value] of Object.entries(params)) target.searchParams.set(key, value);
    let response;
    try {
      response = await fetch(target, {
        method,
        credentials: "same-origin",
        headers: {
          Accept: "application/json",
          ...(body ? { "Content-Type": "application/json", "X-CSRFToken": LabSite.csrfToken() } : {}),
        },
        body: body ? JSON.stringify(body) : null,
      });
    } catch {
      throw new RequestError("The server could not be reached. Check your connection and try again.", 0, {});
    }
    let data = {};
    if ((response.headers.get("content-type") || "").includes("json")) data = await response.json();
    if (!response.ok) {
      const fallback = response.status === 403 ? "Your sign-in expired; reload the page." : `The server said ${response.status}.`;
      throw new RequestError(data.error || fallback, response.status, data);
    }
    return data;
  }

  /** The language for a file, chosen by its name (and for extensionless scripts, by the #! line). */
  function languageFor(path, text) {
    const name = baseName(path).toLowerCase();
    if (name === "dockerfile" || name === "containerfile" || name.startsWith("dockerfile.") || name.endsWith(".dockerfile")) {
      return "dockerfile";
    }
    if (/\.(py|pyw|pyi)$/.test(name)) return "python";
    if (/\.(ya?ml)$/.test(name) || name === ".clang-format") return "yaml";
    if (/\.(sh|bash|zsh|ksh)$/.test(name) || /^\.(bashrc|bash_profile|profile|zshrc)$/.test(name)) return "shell";
    if (!name.includes(".")) {
      const first = text.slice(0, 80).split("\n", 1)[0];
      if (/^#!.*\bpython/.test(first)) return "python";
      if (/^#!.*\b(ba|z|k|da)?sh\b/.test(first)) return "shell";
    }
    return null;
  }

  // ---- CodeMirror ----------------------------------------------------------------------------

  function dirty() {
    return Boolean(state.file && state.view && !state.view.state.doc.eq(state.file.saved));
  }

  function showDirty() {
    const isDirty = dirty();
    dirtyMark.hidden = !isDirty;
    root.classList.toggle("is-dirty", isDirty);
    buttons.save.disabled = !state.running || !state.file || state.saving;
  }

  function extensionsFor(path, text) {
    const language = languageFor(path, text);
    // CodeMirror joins lines with "\n": keep a Windows file's CRLF endings instead of rewriting them on save.
    const crlf = text.includes("\r\n") && !/(^|[^\r])\n/.test(text);
    return [
      ...(crlf ? [CM.EditorState.lineSeparator.of("\r\n")] : []),
      cspNonce,
      CM.basicSetup,
      CM.keymap.of([{ key: "Mod-s", preventDefault: true, run: () => { save(); return true; } }, CM.indentWithTab]),
      state.language.of(language && CM.languages[language] ? CM.languages[language]() : []),
      CM.EditorView.updateListener.of((update) => { if (update.docChanged) showDirty(); }),
      CM.EditorView.contentAttributes.of({ "aria-label": `Contents of ${path}` }),
      state.access.of(readOnlyNow()),
    ];
  }

  const readOnlyNow = () => CM.EditorState.readOnly.of(!state.running || state.switching);

  function setSwitching(on) {
    state.switching = on;
    if (state.view && state.file) state.view.dispatch({ effects: state.access.reconfigure(readOnlyNow()) });
  }

  function showFile(path, text, version) {
    if (!state.view) {
      state.language = new CM.Compartment();
      state.access = new CM.Compartment();
      state.view = new CM.EditorView({ parent: host, state: CM.EditorState.create({ extensions: [cspNonce] }) });
    }
    state.view.setState(CM.EditorState.create({ doc: text, extensions: extensionsFor(path, text) }));
    state.file = { path, version, saved: state.view.state.doc };
    host.hidden = false;
    empty.hidden = true;
    fileLabel.textContent = path;
    fileLabel.title = path;
    markOpenInTree();
    showDirty();
  }

  function closeFile(message) {
    state.file = null;
    if (state.view) state.view.setState(CM.EditorState.create({ doc: "" }));
    host.hidden = true;
    empty.hidden = false;
    if (message) empty.textContent = message;
    fileLabel.textContent = "No file open";
    fileLabel.title = "";
    markOpenInTree();
    showDirty();
  }

  // ---- the file tree (lazy: a folder's entries are fetched when it is first opened) ----------

  function itemFor(path) {
    return [...tree.querySelectorAll("[data-path]")].find((li) => li.dataset.path === path) || null;
  }

  function makeItem(entry, level) {
    const li = document.createElement("li");
    li.setAttribute("role", "treeitem");
    li.setAttribute("aria-level", String(level));
    li.setAttribute("aria-selected", "false");
    li.tabIndex = -1;
    li.dataset.path = entry.path;
    li.className = entry.is_dir ? "editor-node is-dir" : "editor-node is-file";
    const label = document.createElement("span");
    label.className = "editor-node-label";
    label.style.setProperty("--level", String(level - 1));
    label.textContent = entry.name;
    label.title = entry.path;
    li.append(label);
    if (entry.is_dir) {
      li.dataset.dir = "true";
      li.setAttribute("aria-expanded", "false");
      const group = document.createElement("ul");
      group.setAttribute("role", "group");
      group.hidden = true;
      li.append(group);
    }
    return li;
  }

  async function loadFolder(path) {
    const data = await call(urls.list, { params: { path } });
    const list = path ? itemFor(path)?.querySelector(":scope > ul") : tree;
    if (!list) return;
    const level = path ? Number(itemFor(path).getAttribute("aria-level")) + 1 : 1;
    const open = new Set(
      [...list.querySelectorAll(':scope > li[aria-expanded="true"]')].map((li) => li.dataset.path),
    );
    list.replaceChildren(...data.entries.map((entry) => makeItem(entry, level)));
    if (!path && !data.entries.length) {
      const note = document.createElement("li");
      note.className = "editor-tree-empty muted";
      note.textContent = "The workspace is empty.";
      list.append(note);
    }
    list.dataset.loaded = "true";
    // Folders that were open stay open, with fresh contents.
    await Promise.all([...open].filter(itemFor).map((folder) => expand(folder)));
    markOpenInTree();
    ensureFocusable();
  }

  async function expand(path) {
    const li = itemFor(path);
    if (!li || li.dataset.dir !== "true") return;
    li.setAttribute("aria-expanded", "true");
    li.querySelector(":scope > ul").hidden = false;
    try {
      await loadFolder(path);
    } catch (error) {
      li.setAttribute("aria-expanded", "false");
      li.querySelector(":scope > ul").hidden = true;
      say(error.message, "error");
    }
  }

  function collapse(path) {
    const li = itemFor(path);
    if (!li || li.dataset.dir !== "true") return;
    li.setAttribute("aria-expanded", "false");
    li.querySelector(":scope > ul").hidden = true;
  }

  async function refreshTree(path = "") {
    if (!state.running) return;
    try {
      await loadFolder(path && itemFor(path) ? path : "");
      state.loaded = true;
    } catch (error) {
      say(error.message, "error");
    }
  }

  function visibleItems() {
    return [...tree.querySelectorAll("[data-path]")].filter((li) => !li.parentElement.closest("[hidden]"));
  }

  function ensureFocusable() {
    const items = visibleItems();
    if (!items.length) return;
    if (!items.some((li) => li.tabIndex === 0)) items[0].tabIndex = 0;
  }

  function select(path, focus = false) {
    state.selected = path;
    for (const li of tree.querySelectorAll("[data-path]")) {
      const chosen = li.dataset.path === path;
      li.setAttribute("aria-selected", String(chosen));
      li.tabIndex = chosen ? 0 : -1;
      if (chosen && focus) li.focus();
    }
    updateToolbar();
  }

  function markOpenInTree() {
    for (const li of tree.querySelectorAll("[data-path]")) {
      li.classList.toggle("is-open", Boolean(state.file) && li.dataset.path === state.file.path);
    }
  }

  async function activate(li) {
    select(li.dataset.path);
    if (li.dataset.dir === "true") {
      if (li.getAttribute("aria-expanded") === "true") collapse(li.dataset.path);
      else await expand(li.dataset.path);
    } else {
      await openFile(li.dataset.path);
    }
  }

  tree.addEventListener("click", (event) => {
    const li = event.target instanceof Element ? event.target.closest("[data-path]") : null;
    if (li) activate(li);
  });

  tree.addEventListener("keydown", (event) => {
    const li = event.target instanceof Element ? event.target.closest("[data-path]") : null;
    if (!li) return;
    const items = visibleItems();
    const index = items.indexOf(li);
    const isDir = li.dataset.dir === "true";
    const expanded = li.getAttribute("aria-expanded") === "true";
    let handled = true;
    switch (event.key) {
      case "ArrowDown": if (items[index + 1]) select(items[index + 1].dataset.path, true); break;
      case "ArrowUp": if (items[index - 1]) select(items[index - 1].dataset.path, true); break;
      case "Home": select(items[0].dataset.path, true); break;
      case "End": select(items[items.length - 1].dataset.path, true); break;
      case "ArrowRight":
        if (isDir && !expanded) expand(li.dataset.path);
        else if (isDir) { const child = li.querySelector(":scope > ul > li[data-path]"); if (child) select(child.dataset.path, true); }
        break;
      case "ArrowLeft":
        if (isDir && expanded) collapse(li.dataset.path);
        else { const parent = li.parentElement.closest("[data-path]"); if (parent) select(parent.dataset.path, true); }
        break;
      case "Enter": case " ": activate(li); break;
      case "F2": act("rename"); break;
      case "Delete": act("delete"); break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  // ---- open and save ---------------------------------------------------------------------------

  /** Ask what to do with the open file's unsaved edits before `action`: "save", "discard" or "cancel". */
  function askUnsaved(action) {
    const name = state.file.path;
    return new Promise((resolve) => {
      $("[data-editor-unsaved-message]").textContent = `${name} has unsaved changes. Save them before you ${action}?`;
      unsavedDialog.querySelector('[data-editor-unsaved-choice="save"]').textContent = `Save ${name}`;
      unsavedDialog.querySelector('[data-editor-unsaved-choice="discard"]').textContent = `Discard changes to ${name}`;
      unsavedDialog.returnValue = "";
      // Escape closes the dialog with no value: the same as Cancel.
      unsavedDialog.addEventListener("close", () => resolve(unsavedDialog.returnValue || "cancel"), { once: true });
      unsavedDialog.showModal();
    });
  }

  /** Whether the open file may be replaced for `action`: clean, or its edits saved or discarded as the learner chose. */
  async function mayLeaveOpenFile(action) {
    if (!dirty()) return true;
    const file = state.file;
    const choice = await askUnsaved(action);
    if (state.file !== file) return false; // closed meanwhile (deleted): nothing to replace
    if (choice === "discard") return true;
    if (choice === "save") {
      setSwitching(true); // what is saved is what is on screen now: no typing while it goes
      try {
        return await save();
      } finally {
        setSwitching(false);
      }
    }
    say(`Still editing ${file.path}; nothing else was done.`);
    state.view?.focus();
    return false;
  }

  async function openFile(path) {
    if (state.file && state.file.path === path) {
      state.view?.focus();
      return;
    }
    if (!(await mayLeaveOpenFile(`open ${path}`))) return;
    say(`Opening ${path}…`);
    setSwitching(true);
    try {
      const data = await call(urls.open, { params: { path } });
      showFile(data.path, data.content, data.version);
      say(`Opened ${data.path}.`);
      state.view.focus();
    } catch (error) {
      say(error.message, "error");
    } finally {
      setSwitching(false);
    }
  }

  /** Save the open file; resolves to whether it was saved (a conflict shows its dialog and gives false). */
  async function save(version = null) {
    if (!state.file || !state.running || state.saving) return false;
    const file = state.file;
    const sent = state.view.state.doc; // what this save writes, even if typing goes on meanwhile
    const content = state.view.state.sliceDoc(); // joined with the file's own line separator
    state.saving = true;
    showDirty();
    say(`Saving ${file.path}…`);
    try {
      const data = await call(urls.save, {
        method: "POST",
        body: { path: file.path, content, version: version ?? file.version },
      });
      if (state.file === file) {
        file.version = data.version;
        file.saved = sent;
      }
      say(`Saved ${file.path}.`);
      LabSite.announce(`Saved ${file.path}.`);
      return true;
    } catch (error) {
      if (error.status === 409 && error.body.conflict && state.file === file) {
        showConflict(file, error.body);
      } else {
        say(`Not saved: ${error.message}`, "error");
      }
      return false;
    } finally {
      state.saving = false;
      showDirty();
    }
  }

  function showConflict(file, body) {
    $("[data-editor-conflict-message]").textContent =
      `${body.error} Overwrite it with your version, or reload what is on disk and lose your changes?`;
    const diskWrap = $("[data-editor-conflict-disk-wrap]");
    diskWrap.hidden = typeof body.disk_content !== "string";
    $("[data-editor-conflict-disk]").textContent = (body.disk_content || "").slice(0, 20000);
    const reload = conflictDialog.querySelector('[data-editor-conflict-choice="reload"]');
    reload.textContent = body.disk_exists ? "Reload from disk (lose my changes)" : "Close the file (lose my changes)";
    conflictDialog.dataset.diskVersion = body.disk_version;
    conflictDialog._conflict = { file, body };
    say(body.error, "error");
    if (typeof conflictDialog.showModal === "function") conflictDialog.showModal();
  }

  conflictDialog.addEventListener("click", (event) => {
    const choice = event.target instanceof Element ? event.target.closest("[data-editor-conflict-choice]") : null;
    if (!choice) return;
    const { file, body } = conflictDialog._conflict || {};
    conflictDialog.close();
    conflictDialog._conflict = null;
    if (!file || state.file !== file) return;
    const what = choice.dataset.editorConflictChoice;
    if (what === "overwrite") {
      save(body.disk_version);
    } else if (what === "reload") {
      if (body.disk_exists && typeof body.disk_content === "string") {
        showFile(file.path, body.disk_content, body.disk_version);
        say(`Reloaded ${file.path} from disk.`);
      } else if (body.disk_exists) {
        closeFile(`${file.path} can no longer be shown in the editor.`);
      } else {
        closeFile(`${file.path} was deleted.`);
        refreshTree(parentOf(file.path));
      }
    } else {
      state.view?.focus();
    }
  });

  // ---- create, rename, delete ------------------------------------------------------------------

  /** Ask for a path in the page's own dialog; resolves to the trimmed text, or null if cancelled. */
  function ask(title, label, value, okLabel) {
    return new Promise((resolve) => {
      $("[data-editor-prompt-title]").textContent = title;
      $("[data-editor-prompt-label]").textContent = label;
      $("[data-editor-prompt-ok]").textContent = okLabel;
      const input = $("[data-editor-prompt-input]");
      input.value = value;
      promptDialog.returnValue = "";
      promptDialog.addEventListener(
        "close",
        () => resolve(promptDialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null),
        { once: true },
      );
      promptDialog.showModal();
      input.focus();
      const dot = value.lastIndexOf(".");
      const slash = value.lastIndexOf("/");
      input.setSelectionRange(slash + 1, dot > slash + 1 ? dot : value.length);
    });
  }

  /** The folder new things go into: the selected folder, or the selected file's folder. */
  function targetFolder() {
    const li = state.selected ? itemFor(state.selected) : null;
    if (!li) return "";
    return li.dataset.dir === "true" ? li.dataset.path : parentOf(li.dataset.path);
  }

  async function act(action) {
    if (!state.running) return;
    try {
      if (action === "refresh") {
        await refreshTree();
        say("File list refreshed.");
      } else if (action === "save") {
        await save();
      } else if (action === "new-file" || action === "new-folder") {
        const folder = targetFolder();
        const kind = action === "new-file" ? "file" : "folder";
        const path = await ask(`New ${kind}`, "Path in the workspace", folder ? `${folder}/` : "", "Create");
        if (!path) return;
        // A new file opens in place of the open one: settle its edits first, before anything is created.
        if (kind === "file" && !(await mayLeaveOpenFile(`create ${path}`))) return;
        let data;
        setSwitching(kind === "file");
        try {
          data = await call(urls.create, { method: "POST", body: { path, kind } });
          if (kind === "file") showFile(data.entry.path, "", data.version);
        } finally {
          setSwitching(false);
        }
        if (kind === "file") state.view.focus();
        say(`Created ${data.entry.path}.`);
        await refreshTree();
        await revealFolder(parentOf(data.entry.path));
        select(data.entry.path);
      } else if (action === "rename") {
        const path = state.selected;
        if (!path) return;
        const newPath = await ask(`Rename ${baseName(path)}`, "New path in the workspace", path, "Rename");
        if (!newPath || newPath === path) return;
        const data = await call(urls.rename, { method: "POST", body: { path, new_path: newPath } });
        if (state.file && within(state.file.path, data.path)) {
          state.file.path = data.new_path + state.file.path.slice(data.path.length);
          fileLabel.textContent = state.file.path;
        }
        await refreshTree();
        await revealFolder(parentOf(data.new_path));
        select(data.new_path);
        say(`Renamed ${data.path} to ${data.new_path}.`);
      } else if (action === "delete") {
        const path = state.selected;
        if (!path) return;
        const isDir = itemFor(path)?.dataset.dir === "true";
        const question = isDir ? `Delete the folder ${path} and everything in it?` : `Delete ${path}?`;
        if (!window.confirm(`${question} This cannot be undone.`)) return;
        await call(urls.delete, { method: "POST", body: { path } });
        if (state.file && within(state.file.path, path)) closeFile(`${state.file.path} was deleted.`);
        select("");
        await refreshTree(parentOf(path));
        say(`Deleted ${path}.`);
      }
    } catch (error) {
      say(error.message, "error");
    }
  }

  /** Expand every folder on the way to `path`, so an item inside it can be shown. */
  async function revealFolder(path) {
    if (!path) return;
    const parts = path.split("/");
    for (let i = 1; i <= parts.length; i += 1) {
      const folder = parts.slice(0, i).join("/");
      const li = itemFor(folder);
      if (li && li.getAttribute("aria-expanded") !== "true") await expand(folder);
    }
  }

  function updateToolbar() {
    const on = state.running;
    for (const name of ["new-file", "new-folder", "refresh"]) buttons[name].disabled = !on;
    buttons.rename.disabled = !on || !state.selected;
    buttons.delete.disabled = !on || !state.selected;
    showDirty();
  }

  root.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-editor-action]") : null;
    if (button && !button.disabled) act(button.dataset.editorAction);
  });

  // Ctrl-S anywhere in the pane (e.g. with the tree focused) saves instead of saving the web page.
  root.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "s") {
      event.preventDefault();
      save();
    }
  });

  window.addEventListener("beforeunload", (event) => {
    if (!dirty()) return;
    event.preventDefault();
    event.returnValue = ""; // older browsers need it set to show their warning
  });

  // ---- the session's state ---------------------------------------------------------------------

  function setRunning(running) {
    state.running = running;
    root.dataset.running = String(running);
    if (state.view && state.file) {
      // Keep the text (nothing is lost on screen) but stop edits that could no longer be saved.
      const { path, version, saved } = state.file;
      const text = state.view.state.sliceDoc();
      state.view.setState(CM.EditorState.create({ doc: text, extensions: extensionsFor(path, text) }));
      state.file = { path, version, saved };
    }
    updateToolbar();
    if (running && !state.loaded) refreshTree();
    if (!running) {
      empty.textContent = "The files can be edited while the session is running.";
      say(state.file ? "The session is not running: the editor is read-only and cannot save." : "");
    }
  }

  document.addEventListener("session:state", (event) => setRunning(event.detail.state === "running"));

  // The open file travels with requests that want it (the hint form marks itself data-editor-context).
  document.addEventListener("htmx:configRequest", (event) => {
    const element = event.detail.elt;
    if (!(element instanceof Element) || !element.closest("[data-editor-context]")) return;
    const current = window.LabEditor.current();
    if (!current) return;
    event.detail.parameters.file_path = current.path;
    event.detail.parameters.file_content = current.content.slice(0, CONTEXT_CHARS);
  });

  window.LabEditor = {
    current() {
      if (!state.file || !state.view) return null;
      return { path: state.file.path, content: state.view.state.sliceDoc() };
    },
    isDirty: dirty,
    refresh: () => refreshTree(),
  };

  if (!CM) {
    say("The editor could not load its code editor component; reload the page.", "error");
    for (const button of Object.values(buttons)) button.disabled = true;
    return;
  }
  setRunning(state.running);
})();
