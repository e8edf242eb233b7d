# shellcheck shell=bash
# Download $1 (an rclone path) into a fresh temp dir on the host; print "DIR SHA256 SIZE".
# The rclone flags follow as $2...
obj=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-restore.XXXXXXXX")
# Exit 4: the object is not there (rclone's 3 "directory not found", 4 "file not found");
# exit 3: any other rclone failure (the remote out of reach, refused credentials).
rc=0
rclone copyto "$@" "$obj" "$dir/backup.sql.gz" >&2 || rc=$?
if [ "$rc" -ne 0 ]; then
  rm -rf -- "$dir"
  case $rc in
    3 | 4) exit 4 ;;
    *) exit 3 ;;
  esac
fi
sum=$(sha256sum "$dir/backup.sql.gz" | cut -d' ' -f1)
size=$(stat -c %s "$dir/backup.sql.gz")
echo "$dir $sum $size"
