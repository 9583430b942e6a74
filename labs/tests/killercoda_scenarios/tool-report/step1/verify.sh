#!/bin/bash
# Killercoda verify scripts run as root and look under /root.
test -r /var/lib/kc-setup/step1 || { echo "setup missing"; exit 1; }
grep -q "hello from the tool" /root/output.txt
