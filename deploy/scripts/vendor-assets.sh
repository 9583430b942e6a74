#!/bin/sh
# Copy the browser libraries the pages need from node_modules into static/vendor/, so the
# platform serves them itself and runs offline (no CDN). The copies are committed.
#
#   npm ci && sh deploy/scripts/vendor-assets.sh
#
# Versions come from package-lock.json and are recorded in static/vendor/VERSIONS.txt;
# labs/tests/test_pages.py fails if the two disagree.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
NM="$ROOT/node_modules"
OUT="$ROOT/static/vendor"
LOCK="$ROOT/package-lock.json"

[ -f "$LOCK" ] || { echo "vendor-assets: $LOCK is missing" >&2; exit 1; }
for pkg in htmx.org @xterm/xterm @xterm/addon-fit @novnc/novnc asciinema-player; do
    [ -d "$NM/$pkg" ] || { echo "vendor-assets: $NM/$pkg is missing; run 'npm ci' first" >&2; exit 1; }
done

# Version of a package as installed, which must be the one the lock file pins.
installed_version() {
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$NM/$1/package.json"
}
locked_version() {
    node -e '
        const lock = require(process.argv[1]);
        const entry = lock.packages && lock.packages["node_modules/" + process.argv[2]];
        if (!entry) { console.error("vendor-assets: " + process.argv[2] + " is not in the lock file"); process.exit(1); }
        process.stdout.write(entry.version);
    ' "$LOCK" "$1"
}

# Copy a minified file without its sourceMappingURL comment: the maps are not shipped, and
# the manifest static storage refuses to collect a file that points at a missing map.
copy_without_map() {
    sed -e '/^[/][/][#@] sourceMappingURL=/d' -e 's#/[*][#@] sourceMappingURL=[^*]*[*]/##' "$1" > "$2"
}

rm -rf "$OUT/htmx" "$OUT/xterm" "$OUT/xterm-addon-fit" "$OUT/novnc" "$OUT/asciinema-player"
mkdir -p "$OUT/htmx" "$OUT/xterm" "$OUT/xterm-addon-fit" "$OUT/novnc" "$OUT/asciinema-player"

# htmx: the minified build.
cp "$NM/htmx.org/dist/htmx.min.js" "$OUT/htmx/htmx.min.js"
cp "$NM/htmx.org/LICENSE" "$OUT/htmx/LICENSE"

# xterm.js: the UMD build (window.Terminal) and its stylesheet.
copy_without_map "$NM/@xterm/xterm/lib/xterm.js" "$OUT/xterm/xterm.js"
cp "$NM/@xterm/xterm/css/xterm.css" "$OUT/xterm/xterm.css"
cp "$NM/@xterm/xterm/LICENSE" "$OUT/xterm/LICENSE"

# xterm fit addon: the UMD build (window.FitAddon).
copy_without_map "$NM/@xterm/addon-fit/lib/addon-fit.js" "$OUT/xterm-addon-fit/addon-fit.js"
cp "$NM/@xterm/addon-fit/LICENSE" "$OUT/xterm-addon-fit/LICENSE"

# noVNC: its RFB client and everything it imports (pako included) bundled by esbuild into one
# ES module: the page loads one file, not ~40 modules one after another. es2022 for noVNC's
# top-level await.
"$NM/.bin/esbuild" "$ROOT/deploy/assets/novnc-entry.js" --bundle --format=esm --minify --target=es2022 \
    --legal-comments=none --charset=utf8 --log-level=warning --outfile="$OUT/novnc/rfb.bundle.js"
cp "$NM/@novnc/novnc/LICENSE.txt" "$OUT/novnc/LICENSE.txt"

# asciinema-player: the self-contained bundle (window.AsciinemaPlayer, WASM inlined) and its
# stylesheet, for replaying terminal recordings in the admin.
copy_without_map "$NM/asciinema-player/dist/bundle/asciinema-player.min.js" "$OUT/asciinema-player/asciinema-player.min.js"
cp "$NM/asciinema-player/dist/bundle/asciinema-player.css" "$OUT/asciinema-player/asciinema-player.css"
cp "$NM/asciinema-player/LICENSE" "$OUT/asciinema-player/LICENSE"

# CodeMirror 6 (the file editor): ES modules spread over many packages, bundled by esbuild
# (a devDependency) from deploy/assets/codemirror-entry.js into one classic script that sets
# window.LabCodeMirror. LICENSES.txt lists every package inside the bundle, its version and licence.
CODEMIRROR_PACKAGES="codemirror @codemirror/commands @codemirror/lang-python @codemirror/lang-yaml @codemirror/language @codemirror/legacy-modes @codemirror/state @codemirror/view"
for pkg in $CODEMIRROR_PACKAGES esbuild; do
    [ -d "$NM/$pkg" ] || { echo "vendor-assets: $NM/$pkg is missing; run 'npm ci' first" >&2; exit 1; }
done
rm -rf "$OUT/codemirror"
mkdir -p "$OUT/codemirror"
CM_META=$(mktemp)
"$NM/.bin/esbuild" "$ROOT/deploy/assets/codemirror-entry.js" --bundle --format=iife --minify --target=es2020 \
    --legal-comments=none --charset=utf8 --log-level=warning --metafile="$CM_META" \
    --outfile="$OUT/codemirror/codemirror.bundle.js"
node -e '
    const fs = require("fs"), path = require("path");
    const [meta, nm] = process.argv.slice(1);
    const names = new Set();
    for (const input of Object.keys(JSON.parse(fs.readFileSync(meta, "utf8")).inputs)) {
        const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
        if (m) names.add(m[1]);
    }
    const out = ["Packages bundled into codemirror.bundle.js (name version licence), then their licence texts.", ""];
    const texts = [];
    for (const name of [...names].sort()) {
        const dir = path.join(nm, name);
        const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
        out.push(`${name} ${pkg.version} ${pkg.license || "unknown"}`);
        const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
        texts.push(`==== ${name} ${pkg.version}`, file ? fs.readFileSync(path.join(dir, file), "utf8").trim() : "(no licence file)", "");
    }
    process.stdout.write([...out, "", ...texts].join("\n") + "\n");
' "$CM_META" "$NM" > "$OUT/codemirror/LICENSES.txt"
rm -f "$CM_META"

{
    echo "# Vendored front-end assets, written by deploy/scripts/vendor-assets.sh from package-lock.json."
    echo "# Do not edit by hand: change package.json, run npm install, then the script."
    for pkg in htmx.org @xterm/xterm @xterm/addon-fit @novnc/novnc asciinema-player $CODEMIRROR_PACKAGES; do
        installed=$(installed_version "$pkg")
        locked=$(locked_version "$pkg")
        if [ "$installed" != "$locked" ]; then
            echo "vendor-assets: node_modules has $pkg $installed but the lock file pins $locked; run 'npm ci'" >&2
            exit 1
        fi
        echo "$pkg $locked"
    done
} > "$OUT/VERSIONS.txt.tmp"
mv "$OUT/VERSIONS.txt.tmp" "$OUT/VERSIONS.txt"

echo "vendor-assets: copied into $OUT"
cat "$OUT/VERSIONS.txt"
