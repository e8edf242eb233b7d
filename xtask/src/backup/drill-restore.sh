# shellcheck shell=bash
# Download the backup `$1` (an rclone path) on the host and restore it with the psql command given
# as `$2...` (run by `bash` with `set -Eeuo pipefail`; `@RCLONE_FLAGS@` stands for RCLONE_FLAGS).
obj=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
# shellcheck disable=SC2086 # @RCLONE_FLAGS@ is replaced by fixed, quoted words
rclone copyto @RCLONE_FLAGS@ "$obj" "$tmp/backup.sql.gz"
if command -v pigz >/dev/null 2>&1; then
  gz=pigz
else
  gz=gzip
fi
"$gz" -dc "$tmp/backup.sql.gz" | "$@" >/dev/null
