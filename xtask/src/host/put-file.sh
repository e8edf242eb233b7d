# shellcheck shell=sh
# Write stdin to `$1/$2` atomically (a temp file in the same directory, then `mv`) with mode `$3`.
set -eu
umask 077
dest="$1/$2"
dir=$(dirname "$dest")
mkdir -p "$dir"
tmp="$dir/.$(basename "$dest").xtask-tmp.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
chmod "$3" "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
