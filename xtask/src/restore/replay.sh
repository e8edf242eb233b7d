# shellcheck shell=bash
# Replay a gzipped dump into the psql command given after the source and CHECK, in one transaction
# that is COMMITted only when the whole file decompressed cleanly (a truncated or damaged stream is
# never committed, even when it ends on a statement) and CHECK, SQL run in that transaction after
# the dump, did not fail (it counts the rows, and raises when they are not the manifest's: the
# counts are taken before the commit, on rows no other session has seen). The source:
#   file PATH                          a file fetch.sh downloaded (and whose sha256 was checked)
#   object OBJ SHA256 N FLAG*N         streamed from the bucket (`rclone cat` with the N flags) in the
#                                      same pass: the object's sha256 is taken as it arrives (the
#                                      whole object, even when psql stops first), and COMMIT is sent
#                                      only when it equals SHA256 (the manifest's; the caller
#                                      compared the listed size). Until then the SQL runs
#                                      uncommitted, as the restore's role that owns only the
#                                      scratch database.
#
# The dump cannot run psql meta-commands (`\!`, `\connect`, `\copy`): psql runs under `\restrict`
# with a key made here, and the dump's own `\restrict KEY` header line and `\unrestrict KEY`
# trailer (pg_dump 15.14+) are taken out, so any meta-command in the dump is an error
# (ON_ERROR_STOP) and nothing is committed.
#
# psql's output must be unaligned and tuples only (`-A -t`): what CHECK prints follows the verdict
# line, from a marker line carrying this run's key on (the dump cannot print that key: it never
# sees it), so nothing the dump prints can pass for it.
#
# stdout: a line VERDICT RC [SHA256], then what CHECK printed; VERDICT one of
#   ok      committed
#   fetch   rclone failed with RC (object: 3 or 4 = not there): nothing committed
#   differs the object's sha256 (given after RC) is not SHA256: nothing committed
#   gunzip  the file is not a complete gzip stream (RC): nothing committed
#   psql    psql failed with RC (3: an SQL error or a meta-command, 2: the connection): nothing committed
# (object: the sha256 follows on every verdict but fetch). Exit 3 (no verdict): psql cannot
# restrict meta-commands (older than 13.22, 14.19, 15.14, 16.10, 17.6); exit 5: no temp dir (TMPDIR
# not a writable directory).
#
# Every stage's status is read and judged below (PIPESTATUS), so neither errexit nor pipefail
# (which the host prepends to bash scripts) may end the script early.
set -u +e +o pipefail
kind=$1
case $kind in
  file)
    file=$2
    shift 2
    ;;
  object)
    obj=$2 want_sum=$3 n=$4
    shift 4
    flags=("${@:1:$n}")
    shift "$n"
    ;;
  *) exit 2 ;;
esac
check=$1
shift
if command -v igzip >/dev/null 2>&1; then
  gz=igzip
elif command -v pigz >/dev/null 2>&1; then
  gz=pigz
else
  gz=gzip
fi
# `\restrict` arrived in 17.6, 16.10, 15.14, 14.19 and 13.22 (CVE-2025-8714).
v=$("$@" --version 2>/dev/null | sed -n 's/.* \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' | head -n1)
read -r major minor <<<"${v:-0 0}"
case $major in
  13) need=22 ;; 14) need=19 ;; 15) need=14 ;; 16) need=10 ;; 17) need=6 ;;
  *) if [ "$major" -ge 18 ]; then need=0; else need=999; fi ;;
esac
if [ "$minor" -lt "$need" ]; then
  printf 'psql %s.%s cannot run under \\restrict, so it cannot keep a dump from running psql meta-commands: use a postgres image or client of at least 17.6, 16.10, 15.14, 14.19 or 13.22\n' "$major" "$minor" >&2
  exit 3
fi
# The stream needs GNU tee's -p (it goes on feeding the hash when the decompressor stops); one
# without it would exit before opening the hash's fifo, leaving the hash waiting for ever.
if [ "$kind" = object ] && ! tee -p /dev/null </dev/null >/dev/null 2>&1; then
  echo "tee -p does not work here: streaming the backup needs GNU coreutils' tee" >&2
  exit 3
fi
key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ "${#key}" -eq 48 ] || exit 3
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-replay.XXXXXXXX") || exit 5
trap 'rm -rf -- "$dir"' EXIT

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

if command -v openssl >/dev/null 2>&1; then
  sha256() { openssl dgst -sha256 -r | cut -d' ' -f1; }
else
  sha256() { sha256sum | cut -d' ' -f1; }
fi

# The object from the bucket on stdout; its sha256 into $dir/sum, over the whole object: `tee -p`
# goes on feeding the hash when the decompressor stops reading. rclone's status into $dir/fetch.
stream() {
  mkfifo "$dir/sum.fifo" || return 1
  sha256 <"$dir/sum.fifo" >"$dir/sum" &
  local hp=$!
  rclone cat "${flags[@]}" "$obj" | tee -p "$dir/sum.fifo"
  local st=("${PIPESTATUS[@]}")
  wait "$hp"
  echo "${st[0]}" >"$dir/fetch"
}

{
  # synchronous_commit off for this session only: its COMMIT does not wait for the WAL flush.
  # Durability is not given up: nothing uses this database before the swap, whose own
  # (synchronous) commit flushes the WAL up to it, this transaction's included.
  printf '\\restrict %s\nBEGIN;\nSET synchronous_commit = off;\n' "$key"
  if [ "$kind" = file ]; then
    "$gz" -dc <"$file" | strip_key
    echo "${PIPESTATUS[*]}" >"$dir/status"
  else
    stream | "$gz" -dc | strip_key
    echo "${PIPESTATUS[1]} ${PIPESTATUS[2]}" >"$dir/status"
  fi
  read -r gc sc <"$dir/status"
  commit=0
  if [ "$gc" = 0 ] && [ "$sc" = 0 ]; then
    commit=1
  fi
  if [ "$kind" = object ]; then
    read -r rc <"$dir/fetch" || rc=x
    read -r sum <"$dir/sum" || sum=x
    if [ "$rc" != 0 ] || [ "$sum" != "$want_sum" ]; then
      commit=0
    fi
  fi
  if [ "$commit" = 1 ]; then
    # On a line of its own (a dump cut before its trailer may end without a newline, in a
    # comment). CHECK may RESET ALL: synchronous_commit is set again for the COMMIT.
    printf '\n'
    if [ -n "$check" ]; then
      printf "SELECT 'xtask-check-%s';\n%s\nSET synchronous_commit = off;\n" "$key" "$check"
    fi
    printf 'COMMIT;\n'
  fi
} | "$@" | sed -n "/^xtask-check-$key\$/,\$p" >"$dir/check"
st=("${PIPESTATUS[@]}")
pc=${st[1]}
# The verdict, then what CHECK printed (the lines after its marker).
say() {
  echo "$1"
  tail -n +2 "$dir/check"
  exit 0
}
read -r gc sc <"$dir/status" || { gc=x sc=x; }
tail=""
if [ "$kind" = object ]; then
  read -r rc <"$dir/fetch" || rc=x
  read -r sum <"$dir/sum" || sum=x
  tail=" $sum"
  # No rclone status at all: the group was ended before the stream began (psql stopped first).
  if [ "$rc" = x ] && [ "$pc" != 0 ]; then
    say "psql $pc$tail"
  fi
  if [ "$rc" != 0 ]; then
    say "fetch $rc"
  fi
  if [ "$sum" != "$want_sum" ]; then
    say "differs 0$tail"
  fi
fi
# psql stopping first (an SQL error, the connection) leaves the stages before it SIGPIPEd (141) or
# failing on the broken pipe: then psql's status is the cause, whatever they say.
if [ "$pc" != 0 ]; then
  say "psql $pc$tail"
elif [ "$gc" != 0 ] || [ "$sc" != 0 ]; then
  say "gunzip $gc/$sc$tail"
else
  say "ok 0$tail"
fi
