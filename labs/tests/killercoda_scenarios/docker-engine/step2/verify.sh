#!/bin/bash
curl -s --max-time 5 http://localhost:8080/hostname >/dev/null || { echo "Nothing answers on localhost:8080."; exit 1; }
