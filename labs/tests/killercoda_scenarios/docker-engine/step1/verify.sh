#!/bin/bash
docker image inspect kc-app:1 >/dev/null 2>&1 || { echo "There is no image kc-app:1 yet."; exit 1; }
docker run --rm kc-app:1 | grep -q "hello from kc-app"
