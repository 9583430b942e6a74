#!/bin/bash
getent hosts node01 >/dev/null || { echo "node01 does not resolve"; exit 1; }
ssh node01 cat /root/on-node01.txt | grep -q "lives on node01" || { echo "node01's asset is missing"; exit 1; }
ssh node01 test -f /root/done || { echo "There is no /root/done on node01 yet."; exit 1; }
