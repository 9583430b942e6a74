/* Entry point for the vendored CodeMirror 6 bundle (static/vendor/codemirror/codemirror.bundle.js).
 *
 * CodeMirror 6 ships as ES modules spread over many packages; deploy/scripts/vendor-assets.sh
 * bundles this file with esbuild into one classic script that sets window.LabCodeMirror, so
 * the pages load it like the other vendored libraries and static/js/editor.js needs no build.
 * Languages: Python and YAML (Lezer grammars), shell and Dockerfile (legacy stream modes).
 */
import { basicSetup, EditorView } from "codemirror";
import { indentWithTab } from "@codemirror/commands";
import { StreamLanguage } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { yaml } from "@codemirror/lang-yaml";
import { dockerFile } from "@codemirror/legacy-modes/mode/dockerfile";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { Compartment, EditorState } from "@codemirror/state";
import { keymap } from "@codemirror/view";

const languages = {
  python: () => python(),
  yaml: () => yaml(),
  shell: () => StreamLanguage.define(shell),
  dockerfile: () => StreamLanguage.define(dockerFile),
};

window.LabCodeMirror = Object.freeze({
  EditorView,
  EditorState,
  Compartment,
  keymap,
  basicSetup,
  indentWithTab,
  languages,
});
