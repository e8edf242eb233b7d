# shellcheck shell=bash
# Download the backup `$1` (an rclone path) on the host, check its sha256 against `$2` (`-`: no
# check; exit 65 on a mismatch, before anything is restored) and restore it with the psql command
# given as `$3...` (run by `bash` with `set -Eeuo pipefail`; `@RCLONE_FLAGS@` stands for RCLONE_FLAGS).
obj=$1
want=$2
shift 2
tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
# shellcheck disable=SC2086 # @RCLONE_FLAGS@ is replaced by fixed, quoted words
rclone copyto @RCLONE_FLAGS@ "$obj" "$tmp/backup.sql.gz"
if [ "$want" != - ]; then
  got=$(sha256sum "$tmp/backup.sql.gz" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "sha256 of the downloaded backup is $got, its manifest says $want: corrupt or replaced" >&2
    exit 65
  fi
fi
if command -v igzip >/dev/null 2>&1; then
  gz=igzip
elif command -v pigz >/dev/null 2>&1; then
  gz=pigz
else
  gz=gzip
fi
"$gz" -dc "$tmp/backup.sql.gz" | "$@" >/dev/null
