#!/bin/bash
# Killercoda's usual helper: wait until the background script is done.
while [ ! -f /ks/background-finished ]; do sleep 0.2; done
echo "Setup finished."
