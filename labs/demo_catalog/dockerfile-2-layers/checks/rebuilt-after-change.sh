#!/bin/sh
# Step 1 ("Watch the cache miss") is done when quotes:before was built again after app.py changed.
# Runs as the learner (it needs the session's Docker engine), in the workspace. The last line
# printed is what the learner reads when the check fails.
set -u
STARTER_APP_SHA256=0fa81b9c7fd907045e8d92630e47fbbe03165c8098c04e3e14848a5c8339394e

if ! found=$(docker image inspect --format '{{.Id}}' quotes:before 2>&1); then
    echo "$found"
    echo "There is no image quotes:before yet: build it with docker build -t quotes:before ."
    exit 1
fi
if [ "$(sha256sum < app.py | cut -d' ' -f1)" = "$STARTER_APP_SHA256" ]; then
    echo "app.py is unchanged: change a quote in it (the sed command of this step does), then build quotes:before again."
    exit 1
fi
if ! built=$(docker run --rm --entrypoint cat quotes:before /app/app.py 2>&1); then
    echo "$built"
    echo "Cannot read app.py in quotes:before: build it again with docker build -t quotes:before ."
    exit 1
fi
if [ "$built" != "$(cat app.py)" ]; then
    echo "quotes:before holds an older app.py: build it again after your change, with time docker build -t quotes:before ."
    exit 1
fi
echo "quotes:before was built from the changed app.py."
