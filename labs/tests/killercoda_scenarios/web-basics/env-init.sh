touch /tmp/env-ready
