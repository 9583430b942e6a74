#!/bin/sh
# Download the platform's Python packages (requirements.txt and their dependencies, wheels only)
# into var/platform-wheels/, where deploy/Dockerfile installs them from without an index.
#
#   sh deploy/compose/wheels.sh        (from anywhere; a second run with the same inputs is a no-op)
#
# Why: pip in a build container trusts only Debian's CA bundle. Where PyPI is reached through a
# TLS-inspecting proxy whose CA only the host trusts (these build machines), pip inside
# `docker build` fails. So pip runs here in a container of labs/python:3.11-slim (Debian's Python,
# the image's own: environment markers such as python_full_version < "3.11.3" are evaluated by the
# interpreter that resolves, so the host's Python would pick other packages) with the host's CA
# bundle mounted for this one download, and without that image's own pip.conf (no index there).
# Nothing of it enters the platform's image.
# Without var/platform-wheels the Dockerfile installs from PyPI itself.
#
# Environment: WHEELS_IMAGE (labs/python:3.11-slim, from deploy/scripts/build-images.sh python),
# WHEELS_CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt).
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
OUT="$ROOT/var/platform-wheels"
IMAGE=${WHEELS_IMAGE:-labs/python:3.11-slim}
CA=${WHEELS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

PYVER=$(docker run --rm --network none "$IMAGE" python3 -c 'import platform; print(platform.python_version())') \
    || { echo "wheels.sh: cannot run python3 in $IMAGE (build it: deploy/scripts/build-images.sh python)" >&2; exit 1; }
STAMP=".requirements-$( (cat "$ROOT/requirements.txt"; echo "python $PYVER") | sha256sum | cut -c1-16)"
[ -f "$OUT/$STAMP" ] && exit 0

rm -rf "$OUT.part"
mkdir -p "$OUT.part"
if ! docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp -e PIP_CERT=/run/host-ca.crt \
        -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_CONFIG_FILE=/dev/null -v "$CA:/run/host-ca.crt:ro" \
        -v "$ROOT/requirements.txt:/run/requirements.txt:ro" -v "$OUT.part:/wheels" "$IMAGE" \
        python3 -m pip download --no-cache-dir --only-binary=:all: -d /wheels -r /run/requirements.txt \
        >"$OUT.log" 2>&1; then
    tail -n 30 "$OUT.log" >&2
    echo "wheels.sh: pip download failed; full log: $OUT.log" >&2
    exit 1
fi
touch "$OUT.part/$STAMP"
rm -rf "$OUT"
mv "$OUT.part" "$OUT"
echo "wheels.sh: $(ls "$OUT" | grep -c '\.whl$') wheels for Python $PYVER in $OUT"
