#!/bin/bash
mkdir -p /root/reports
echo "# Summary" > /root/reports/template.md
