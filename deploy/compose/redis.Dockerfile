# Redis from Debian's archive, for deploy/compose.yaml: built FROM the locally imported Debian rootfs,
# so no registry is needed. The append-only file in /data (a volume) keeps queued jobs across a
# restart; the port is published on the host's loopback only (compose.yaml).
ARG BASE_IMAGE=labs/base-rootfs:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
USER redis
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=5 \
    CMD [ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ] || exit 1
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--save", ""]
