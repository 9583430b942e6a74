#!/bin/sh
# Pack the website project into a dated archive in ~/backups.
set -eu
mkdir -p "$HOME/backups"
archive="$HOME/backups/website-$(date +%Y%m%d-%H%M%S).tar.gz"
tar -czf "$archive" -C "$(dirname "$0")/../projects" website
echo "Backup written to $archive"
ls -l "$archive"
