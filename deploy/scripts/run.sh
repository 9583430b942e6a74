#!/usr/bin/env bash
# Set up and run the platform on its embedded defaults (SQLite, in-memory channel layer,
# jobs inline), with the demo labs loaded and an admin account printed. Serves the platform on
# http://127.0.0.1:8000 and web previews on http://localhost:8000.
source "$(dirname "$0")/lib.sh"

# Web previews on an origin of their own (README "Web preview"): localhost is another host name
# than 127.0.0.1, so the platform's cookies (scoped by host name, not port) never reach a learner's
# app, and the platform is not served on localhost. LAB_PREVIEW_HOST= (empty) keeps previews on the
# platform's origin, sandboxed.
LAB_PORT="${LAB_PORT:-8000}"
if [ -z "${LAB_PREVIEW_HOST+set}" ]; then
  export LAB_PREVIEW_HOST="localhost:$LAB_PORT"
  export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,[::1]}"
fi

ensure_python requirements.txt
ensure_sandbox_tools
if [ "${LAB_SKIP_DOCKER:-false}" != "true" ]; then
  ensure_docker
  ensure_images
fi

say "preparing the database and static files"
"$PY" manage.py migrate --noinput -v0
"$PY" manage.py collectstatic --noinput -v0
say "importing the demo labs"
"$PY" manage.py import_lab labs/demo_catalog
if [ "${LAB_SKIP_VM:-false}" != "true" ]; then
  # The demo VM lab's disk: a Debian kernel and a busybox initramfs, built once and cached.
  apt_install qemu-system-x86 qemu-utils busybox-static cpio
  ensure_qemu_user
  say "building the demo VM disk (cached after the first run)"
  VM_DIR="$(bash deploy/images/vm/build-test-vm.sh --print-dir | tail -n 1)"
  "$PY" manage.py register_image tiny-linux-vm "$VM_DIR/disk.qcow2"
fi
"$PY" manage.py ensure_admin --username admin

# The job worker (with Redis; without it jobs run on threads of the web server) and the
# housekeeping loops, each restarted by deploy/scripts/supervise.sh whenever it exits.
LOGS="${LAB_DATA_DIR:-$ROOT/var}"
mkdir -p "$LOGS"
SUPERVISED=()
supervise() { bash "$ROOT/deploy/scripts/supervise.sh" "$1" "$LOGS/$1.log" "${@:2}" & SUPERVISED+=($!); }
stop_supervised() {
  [ ${#SUPERVISED[@]} -eq 0 ] && return 0
  say "stopping the worker and housekeeping (a running job finishes first)"
  kill -TERM "${SUPERVISED[@]}" 2>/dev/null || true  # some may have stopped already
  wait "${SUPERVISED[@]}" || true
}
trap stop_supervised EXIT
if [ -n "${REDIS_URL:-}" ]; then
  supervise worker "$PY" manage.py run_worker default judge
fi
supervise reaper "$PY" manage.py reap_sessions --loop 30
supervise reconcile "$PY" manage.py reconcile_runners --loop 300
supervise gc "$PY" manage.py gc_snapshots --loop 3600
supervise watchdog "$PY" manage.py run_watchdog  # every LAB_WATCHDOG_INTERVAL_SECONDS (30)

say "serving on http://127.0.0.1:$LAB_PORT/ (Ctrl-C to stop)"
if [ -n "$LAB_PREVIEW_HOST" ]; then
  say "web previews on http://$LAB_PREVIEW_HOST/ (an origin of their own; the platform is not served there)"
else
  say "web previews on the platform's origin, sandboxed (LAB_PREVIEW_HOST is empty)"
fi
# A preview host given with another port (LAB_PREVIEW_HOST=localhost:8001) is served there too.
LISTEN=(-b 127.0.0.1 -p "$LAB_PORT")
if [[ "$LAB_PREVIEW_HOST" =~ :([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" != "$LAB_PORT" ]; then
  LISTEN+=(-e "tcp:port=${BASH_REMATCH[1]}:interface=127.0.0.1")
fi
# webserver.serve: daphne with request bodies limited per route and streamed (webserver/limited_http.py).
"$PY" -m webserver.serve "${LISTEN[@]}" labsite.asgi:application
