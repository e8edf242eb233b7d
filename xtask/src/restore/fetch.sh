# shellcheck shell=bash
# Download $1 (an rclone path) into a fresh temp dir on the host; print "DIR SHA256 SIZE".
# The rclone flags follow as $2...
obj=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-restore.XXXXXXXX")
if ! rclone copyto "$@" "$obj" "$dir/backup.sql.gz" >&2; then
  rm -rf -- "$dir"
  exit 3
fi
sum=$(sha256sum "$dir/backup.sql.gz" | cut -d' ' -f1)
size=$(stat -c %s "$dir/backup.sql.gz")
echo "$dir $sum $size"
