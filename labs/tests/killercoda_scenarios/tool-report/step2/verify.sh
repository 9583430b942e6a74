#!/bin/bash
test -s /root/reports/summary.md
