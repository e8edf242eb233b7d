# shellcheck shell=sh
# Take the remote deploy lock in `$1`: the lock directory appears with its info.json (stdin)
# already in it (built in a temp directory, then renamed into place, which fails when the lock
# exists). Prints `acquired`, or `held` and the holder's info.
set -eu
mkdir -p "$1"
umask 077
tmp="$1/.deploy.lock.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp"
cat > "$tmp/info.json"
if [ ! -e "$1/.deploy.lock" ] && mv -T "$tmp" "$1/.deploy.lock" 2>/dev/null; then
  echo acquired
else
  echo held
  cat "$1/.deploy.lock/info.json" 2>/dev/null || true
fi
