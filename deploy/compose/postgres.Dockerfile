# PostgreSQL 15 from Debian's archive, for deploy/compose.yaml: built FROM the locally imported Debian
# rootfs, so no registry is needed. postgres-entrypoint.sh creates the cluster, the role and the
# database on first start (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB), then runs the server.
ARG BASE_IMAGE=labs/base-rootfs:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# No "main" cluster from the package's scripts: the entrypoint makes one in the volume instead.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/compose.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV POSTGRES_USER=labs POSTGRES_DB=labs
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 \
    CMD pg_isready -q -h 127.0.0.1 -p 5432 -U "$POSTGRES_USER" -d "$POSTGRES_DB" || exit 1
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
