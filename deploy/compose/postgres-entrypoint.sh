#!/bin/sh
# PostgreSQL for deploy/compose.yaml: on first start (an empty PGDATA), a cluster whose network
# connections need a password, and the platform's role and database; then the server, as PID 1's
# child-free main process (`exec`), so `docker stop` reaches it (STOPSIGNAL SIGINT: a fast shutdown).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=labs}"
: "${POSTGRES_DB:=labs}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2
    exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # Local (socket) connections as the postgres user only; everything over the network by password.
    pwfile=$(mktemp)
    printf '%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    printf '%s\n' "host all all 0.0.0.0/0 scram-sha-256" "host all all ::/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    # psql variables (:"name", :'value') quote the role, the database and the password.
    psql -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
        -v user="$POSTGRES_USER" -v password="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entrypoint: created the cluster, role $POSTGRES_USER and database $POSTGRES_DB"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*'
