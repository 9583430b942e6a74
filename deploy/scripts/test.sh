#!/usr/bin/env bash
# Set up everything the test suite needs and run it all: lint, types, migrations, deploy
# checks and pytest on the real PostgreSQL, Redis, Docker engine, QEMU and Chromium.
source "$(dirname "$0")/lib.sh"

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_services() {
  if [ "${CI:-}" = "true" ]; then
    # In CI the machine provides both; a missing one must fail the run, never fall back to SQLite.
    command -v pg_isready >/dev/null || apt_install postgresql-client
    command -v redis-cli >/dev/null || apt_install redis-tools
    pg_up || die "PostgreSQL is not reachable on 127.0.0.1:5432 (CI=true requires it)"
    redis_up || die "Redis is not reachable on 127.0.0.1:6379 (CI=true requires it)"
    return
  fi
  if ! pg_up; then
    apt_install postgresql
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || die "could not start PostgreSQL"
    # Local trust auth for the test database, as on the CI machines.
    $SUDO -u postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  fi
  if ! redis_up; then
    apt_install redis-server
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
    redis_up || die "could not start Redis"
  fi
}

ensure_python requirements-dev.txt
ensure_sandbox_tools
apt_install chromium qemu-system-x86 qemu-utils busybox-static cpio xvfb x11vnc x11-xserver-utils x11-utils docker-compose openssl
ensure_kubectl
ensure_services
ensure_qemu_user
ensure_docker
ensure_images

export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"  # always exists; tests use test_postgres
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
export LAB_RQ_ASYNC=false
export LAB_DATA_DIR="${LAB_DATA_DIR:-$ROOT/var/test}"
mkdir -p "$LAB_DATA_DIR" "$LAB_DATA_DIR/staticfiles" "$ROOT/artifacts"  # whitenoise expects STATIC_ROOT

say "ruff"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy" .
say "makemigrations --check"
"$PY" manage.py makemigrations --check --dry-run
say "check --deploy with production settings"
DJANGO_SECRET_KEY="$(head -c 48 /dev/urandom | base64)" DJANGO_SECURE_COOKIES=true \
  DJANGO_SECURE_SSL_REDIRECT=true DJANGO_HSTS_SECONDS=31536000 DJANGO_HSTS_PRELOAD=true DJANGO_ALLOWED_HOSTS=labs.example.org \
  "$PY" manage.py check --deploy --fail-level WARNING
say "pytest"
"$VENV/bin/pytest" "$@"
