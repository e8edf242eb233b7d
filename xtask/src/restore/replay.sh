# shellcheck shell=bash
# Replay the gzipped dump $1 into the psql command given as $2... (pigz when there is one).
file=$1
shift
if command -v pigz >/dev/null 2>&1; then gz=pigz; else gz=gzip; fi
"$gz" -dc -- "$file" | "$@" >/dev/null
