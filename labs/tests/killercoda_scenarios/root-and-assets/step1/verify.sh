#!/bin/bash
if ! grep -q "made by the intro" /root/answer.txt 2>/dev/null; then
  echo "/root/answer.txt does not hold the intro's text yet."
  exit 1
fi
