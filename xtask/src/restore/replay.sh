# shellcheck shell=bash
# Download the gzipped dump $1 (an rclone path) and replay it into the psql command that follows the
# rclone flags, in one pass and in one transaction that is COMMITted only when the object's sha256 and
# size equal $2 and $3 ("-": no manifest, not compared). $4 is the number of rclone flags that follow.
#
# Nothing is written to the host's disk but two small result files, and a corrupted, truncated or
# substituted object is never committed: psql gets BEGIN, the dump, and COMMIT only after the object
# was read to its end and matched. The dump cannot run psql meta-commands (`\!`, `\connect`, `\copy`):
# psql runs under `\restrict` with a key made here, and the dump's own `\restrict KEY` header line and
# its `\unrestrict KEY` trailer (pg_dump 15.14+) are taken out, so any meta-command in the dump is an
# error (ON_ERROR_STOP) and nothing is committed.
#
# stdout, one line: VERDICT RC SHA256 SIZE, VERDICT one of
#   ok        committed (RC 0)
#   mismatch  read to the end, sha256 or size differ: nothing committed (RC 0)
#   fetch     rclone failed with RC: nothing committed
#   gunzip    the object is not a complete gzip stream (RC): nothing committed
#   psql      psql failed with RC (3: an SQL error or a meta-command, 2: the connection): nothing committed
# Every stage's status is read and judged below (PIPESTATUS), so neither errexit nor pipefail
# (which the host prepends to bash scripts) may end the script early.
set -u +e +o pipefail
obj=$1 want_sum=$2 want_size=$3 nflags=$4
shift 4
flags=("${@:1:$nflags}")
shift "$nflags"
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-restore.XXXXXXXX") || exit 3
trap 'rm -rf -- "$dir"' EXIT
mkfifo "$dir/sum.fifo" "$dir/size.fifo" || exit 3
if command -v igzip >/dev/null 2>&1; then
  gz=igzip
elif command -v pigz >/dev/null 2>&1; then
  gz=pigz
else
  gz=gzip
fi
if command -v openssl >/dev/null 2>&1; then
  sha() { openssl dgst -sha256 -r | cut -d' ' -f1; }
else
  sha() { sha256sum | cut -d' ' -f1; }
fi
key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ "${#key}" -eq 48 ] || exit 3

# The dump on stdin without its own `\restrict KEY` line (only in the leading comment block) and,
# when it had one, without the trailer pg_dump writes after it ("\n\\unrestrict KEY\n\n" at the very
# end: cut by byte count, so a trailer of any other shape leaves `\u...` for psql to refuse).
strip_key() {
  local line k=""
  for _ in $(seq 64); do
    if ! IFS= read -r -n 4096 line; then
      printf '%s' "$line"
      return 0
    fi
    if [ "${#line}" -ge 4096 ]; then
      printf '%s' "$line"
      break
    fi
    case $line in
      '\restrict '*)
        k=${line#'\restrict '}
        if [[ $k =~ ^[A-Za-z0-9]{1,128}$ ]]; then
          break
        fi
        k=""
        printf '%s\n' "$line"
        break
        ;;
      '' | --*) printf '%s\n' "$line" ;;
      *)
        printf '%s\n' "$line"
        break
        ;;
    esac
  done
  if [ -n "$k" ]; then
    head -c -"$((15 + ${#k}))"
  else
    cat
  fi
}

{
  sha <"$dir/sum.fifo" >"$dir/sum" &
  hp=$!
  wc -c <"$dir/size.fifo" >"$dir/size" &
  wp=$!
  printf '\\restrict %s\nBEGIN;\n' "$key"
  rclone cat "${flags[@]}" "$obj" | tee "$dir/sum.fifo" "$dir/size.fifo" | "$gz" -dc | strip_key
  echo "${PIPESTATUS[*]}" >"$dir/status"
  wait "$hp" "$wp"
  read -r sum <"$dir/sum" || sum=-
  read -r size <"$dir/size" || size=-
  read -r rc tc gc sc <"$dir/status"
  if [ "$rc" = 0 ] && [ "$tc" = 0 ] && [ "$gc" = 0 ] && [ "$sc" = 0 ]; then
    if { [ "$want_sum" = - ] || [ "$sum" = "$want_sum" ]; } && { [ "$want_size" = - ] || [ "$size" = "$want_size" ]; }; then
      echo commit >"$dir/verdict"
      printf 'COMMIT;\n'
    else
      echo mismatch >"$dir/verdict"
    fi
  fi
} | "$@" >/dev/null
pc=$?
read -r sum <"$dir/sum" || sum=-
read -r size <"$dir/size" || size=-
read -r rc tc gc sc <"$dir/status" || { rc=x tc=x gc=x sc=x; }
verdict=$(cat "$dir/verdict" 2>/dev/null || true)
# SIGPIPE (141) in a stage means a later stage stopped reading first: the later one is the cause.
if [ "$rc" != 0 ] && [ "$rc" != 141 ]; then
  echo "fetch $rc $sum $size"
elif [ "$gc" != 0 ] && [ "$gc" != 141 ]; then
  echo "gunzip $gc $sum $size"
elif [ "$pc" != 0 ]; then
  echo "psql $pc $sum $size"
elif [ "$verdict" = commit ]; then
  echo "ok 0 $sum $size"
elif [ "$verdict" = mismatch ]; then
  echo "mismatch 0 $sum $size"
else
  echo "fetch ${rc}/${tc}/${gc}/${sc} $sum $size"
fi
