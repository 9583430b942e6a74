#!/bin/bash
if [ "$(cat /etc/kc-lab/settings.conf 2>/dev/null)" != configured ]; then
  echo "settings.conf must say 'configured'; it says: '$(cat /etc/kc-lab/settings.conf 2>&1)'"
  exit 1
fi
