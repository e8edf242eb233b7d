# shellcheck shell=bash
# Download $1 (an rclone path) into a fresh temp dir on the host; print "SHA256 SIZE DIR" (the
# directory last: TMPDIR may hold spaces).
# $2: `manifest` when the caller checks the sha256 printed here against the object's manifest:
# rclone's own hash comparison after the transfer (md5/sha1, a second read of the file) is then
# skipped (--ignore-checksum), the sha256 over every byte being the stronger check; `rclone`
# otherwise (no manifest: rclone's check is the only one). The rclone flags follow as $3...
# Exit 4: the object is not there (rclone's 3 "directory not found", 4 "file not found");
# exit 3: any other rclone failure (the remote out of reach, refused credentials); exit 5: no temp
# dir (TMPDIR not a writable directory).
obj=$1
mode=$2
shift 2
extra=()
[ "$mode" != manifest ] || extra=(--ignore-checksum)
# The temp dir is removed on every way out but the one that hands it over (its name printed):
# a failure, and Ctrl-C, SIGTERM or a hang-up (the terminal's or ssh's) during the download, since
# whoever runs this learns the directory only from that last line. A lost stdout (SIGPIPE on the
# last line) removes it too.
dir=
handed_over=
trap '[ -n "$handed_over" ] || [ -z "$dir" ] || rm -rf -- "$dir"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-restore.XXXXXXXX") || exit 5
rc=0
rclone copyto "${extra[@]}" "$@" "$obj" "$dir/backup.sql.gz" >&2 || rc=$?
if [ "$rc" -ne 0 ]; then
  case $rc in
    3 | 4) exit 4 ;;
    *) exit 3 ;;
  esac
fi
if command -v openssl >/dev/null 2>&1; then
  sum=$(openssl dgst -sha256 -r "$dir/backup.sql.gz" | cut -d' ' -f1)
else
  sum=$(sha256sum "$dir/backup.sql.gz" | cut -d' ' -f1)
fi
size=$(stat -c %s "$dir/backup.sql.gz")
echo "$sum $size $dir" || exit 3
handed_over=1
