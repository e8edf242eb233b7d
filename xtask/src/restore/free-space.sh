# shellcheck shell=sh
# The filesystem of each path given, where PostgreSQL runs: one line each, the last line of
# `df -Pk PATH` (POSIX format: GNU and busybox alike), or `?` when df cannot tell (no such path,
# no right to stat it, no df).
for p in "$@"; do
  if l=$(df -Pk -- "$p" 2>/dev/null | tail -n 1) && [ -n "$l" ]; then
    printf '%s\n' "$l"
  else
    echo '?'
  fi
done
