# shellcheck shell=sh
# Append stdin to the file `$1` (created 0600 when new).
set -eu
umask 077
cat >> "$1"
