#!/bin/bash
# Runs as root when the session starts.
echo "made by the intro" > /root/intro-made.txt
mkdir -p /etc/kc-lab
chmod 700 /etc/kc-lab
touch /ks/background-finished
