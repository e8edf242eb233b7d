# shellcheck shell=bash
# Download $1 (an rclone path) into a fresh temp dir on the host, hashing it as it arrives (one
# pass: rclone cat | tee FILE | sha256); print "DIR SHA256 SIZE". The rclone flags follow as $2...
# Exit 4: the object is not there (rclone's 3 "directory not found", 4 "file not found");
# exit 3: any other rclone failure (the remote out of reach, refused credentials) or no temp dir.
obj=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-restore.XXXXXXXX") || exit 3
if command -v openssl >/dev/null 2>&1; then
  sha() { openssl dgst -sha256 -r | cut -d' ' -f1; }
else
  sha() { sha256sum | cut -d' ' -f1; }
fi
set +e
rclone cat "$@" "$obj" | tee "$dir/backup.sql.gz" | sha >"$dir/sum"
st=("${PIPESTATUS[@]}")
set -e
read -r sum <"$dir/sum" || sum=""
rm -f -- "$dir/sum"
if [ "${st[0]}" -ne 0 ] || [ "${st[1]}" -ne 0 ]; then
  rm -rf -- "$dir"
  case ${st[0]} in
    3 | 4) exit 4 ;;
    0) exit 1 ;;
    *) exit 3 ;;
  esac
fi
size=$(stat -c %s "$dir/backup.sql.gz")
echo "$dir $sum $size"
