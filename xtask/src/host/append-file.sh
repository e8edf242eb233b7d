# shellcheck shell=sh
# Append stdin to the file `$1` and keep it 0600 (also one that existed with another mode).
set -eu
umask 077
cat >> "$1"
chmod 600 "$1"
