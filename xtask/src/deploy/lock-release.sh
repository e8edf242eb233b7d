# shellcheck shell=sh
# Remove the remote deploy lock in `$1` only if it still carries the token read from stdin (empty
# = any). The token comes on stdin, not as an argument: an argument is on the command line of ssh
# here and of the shell there, which any user of either machine can read.
set -eu
token=$(cat)
lock="$1/.deploy.lock"
[ -d "$lock" ] || exit 0
if [ -z "$token" ] || grep -qF -- "$token" "$lock/info.json" 2>/dev/null; then
  rm -rf "$lock"
fi
