# shellcheck shell=sh
# Remove the remote deploy lock in `$1` only if it still carries the token `$2` ('' = any).
set -eu
lock="$1/.deploy.lock"
[ -d "$lock" ] || exit 0
if [ -z "$2" ] || grep -qF -- "$2" "$lock/info.json" 2>/dev/null; then
  rm -rf "$lock"
fi
