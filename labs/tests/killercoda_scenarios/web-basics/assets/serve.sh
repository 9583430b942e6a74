#!/bin/sh
cd /root/site && exec python3 -m http.server 8080
