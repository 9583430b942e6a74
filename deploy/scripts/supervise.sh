#!/usr/bin/env bash
# supervise.sh NAME LOG COMMAND [ARG...]
# Run COMMAND with its output appended to LOG, and start it again whenever it exits: after 1 s,
# doubling up to 30 s while it keeps exiting within a minute of starting. SIGTERM, SIGINT or
# SIGHUP stop it: COMMAND gets SIGTERM and the supervisor exits once COMMAND has. COMMAND runs in
# a session of its own, so a Ctrl-C meant for the terminal reaches it only through the supervisor
# (otherwise the supervisor would see it exit and start it again).
set -u
if [ "$#" -lt 3 ]; then
  echo "usage: $0 NAME LOG COMMAND [ARG...]" >&2
  exit 2
fi
name=$1
log=$2
shift 2

child=0
stopping=0
stop() {
  stopping=1
  # It may have exited a moment ago; then there is nothing to stop.
  if [ "$child" -ne 0 ]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap stop TERM INT HUP

note() { printf '%s [supervise] %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" "$*" >>"$log"; }

# `wait` returns early when a trapped signal arrives; wait again until the process is really gone.
wait_for() {
  local pid=$1 status=0
  while :; do
    wait "$pid"
    status=$?
    if [ -z "$(jobs -pr)" ]; then return "$status"; fi
  done
}

delay=1
while [ "$stopping" -eq 0 ]; do
  started=$SECONDS
  setsid "$@" >>"$log" 2>&1 &
  child=$!
  wait_for "$child"
  status=$?
  child=0
  [ "$stopping" -eq 1 ] && break
  ran=$((SECONDS - started))
  if [ "$ran" -ge 60 ]; then delay=1; fi
  note "exited with status $status after ${ran} s; starting it again in ${delay} s"
  sleep "$delay" &
  child=$!
  wait_for "$child"
  child=0
  if [ "$delay" -lt 30 ]; then delay=$((delay * 2 > 30 ? 30 : delay * 2)); fi
done
note "stopped"
