#!/bin/sh
# Usage: sh check-size.sh IMAGE [LIMIT_MB]
# Passes when IMAGE is smaller than LIMIT_MB megabytes (default 250, 1 MB = 1,000,000 bytes,
# as `docker image ls` counts them).
set -eu
image="${1:?usage: check-size.sh IMAGE [LIMIT_MB]}"
limit_mb="${2:-250}"
bytes=$(docker image inspect --format '{{.Size}}' "$image")
mb=$((bytes / 1000000))
if [ "$bytes" -lt $((limit_mb * 1000000)) ]; then
    echo "OK: $image is $mb MB (limit $limit_mb MB)"
else
    echo "TOO BIG: $image is $mb MB (limit $limit_mb MB)" >&2
    exit 1
fi
