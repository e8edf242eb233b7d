# shellcheck shell=bash
# Replay a gzipped dump into the psql command given after the source, in one transaction that is
# COMMITted only when the whole file decompressed cleanly (a truncated or damaged stream is never
# committed, even when it ends on a statement) and CHECK, SQL run in that transaction after the
# dump (the first line on stdin, see below), did not fail (it counts the rows, and raises when they are not the manifest's: the
# counts are taken before the commit, on rows no other session has seen). The source:
#   file PATH                          a file fetch.sh downloaded (and whose sha256 was checked)
#   object OBJ SHA256 GRACE N FLAG*N   streamed from the bucket (`rclone cat` with the N flags) in the
#                                      same pass: the object's sha256 is taken as it arrives, and
#                                      COMMIT is sent only when it equals SHA256 (the manifest's; the
#                                      caller compared the listed size). Until then the SQL runs
#                                      uncommitted, as the restore's role that owns only the
#                                      scratch database. When psql stops first on the dump's own
#                                      fault (an SQL error, exit 3; or its input ended early) the
#                                      object goes on streaming into the hash for GRACE more seconds
#                                      at most, so that a corrupt object is told from a dump that
#                                      fails; past them the download is stopped and the sha256 is
#                                      not known ("-" below). Any other stop of psql (the connection,
#                                      xtask's handler ending the session) stops the download at once.
#
# stdin is xtask's lifeline (process::Lifeline): its first line is CHECK (on stdin, not an argument:
# a manifest's tables can be more than an argument may hold); after it nothing is read from it but a
# line asking the replay to stop, and its end of file means xtask is gone (killed, even with -9; over SSH the
# session closed). Either stops every process of the replay at once (rclone, tee, the hash, the
# decompressor, psql: each stage runs in a process group of its own, `set -m`, and the groups are
# killed), removes the temp dir, and never sends COMMIT: the COMMIT is written only while the
# lifeline is still open and silent. The replay runs in a child of this shell (`supervise`), which
# watches the lifeline: the shell xtask started is killed with xtask (PR_SET_PDEATHSIG), the
# supervisor is not. A SIGTERM, SIGINT or SIGHUP to this shell stops the replay the same way.
#
# The dump cannot run psql meta-commands (`\!`, `\connect`, `\copy`): psql runs under `\restrict`
# with a key made here, and the dump's own `\restrict KEY` header line and `\unrestrict KEY`
# trailer (pg_dump 15.14+) are taken out, so any meta-command in the dump is an error
# (ON_ERROR_STOP) and nothing is committed.
#
# psql's output must be unaligned and tuples only (`-A -t`): what CHECK prints follows the verdict
# line, from a marker line carrying a key of this run's on (the dump cannot print that key: it never
# sees it; not the `\restrict` key, which is never on any command line), so nothing the dump prints
# can pass for it.
#
# stdout: a line VERDICT RC [SHA256], then what CHECK printed; VERDICT one of
#   ok      committed
#   fetch   rclone failed with RC (object: 3 or 4 = not there): nothing committed
#   differs the object's sha256 (given after RC) is not SHA256: nothing committed
#   gunzip  the file is not a complete gzip stream (RC): nothing committed
#   psql    psql failed with RC (3: an SQL error or a meta-command, 2: the connection): nothing committed
#   stopped the lifeline asked the replay to stop, or closed, or a signal came (RC 0): nothing committed
# (object: after RC the object's sha256 on every verdict but fetch and stopped, or `-` when the
# download was stopped before the object's end). Exit 3 (no verdict): psql cannot restrict
# meta-commands (older than 13.22, 14.19, 15.14, 16.10, 17.6); exit 5: no temp dir (TMPDIR not a
# writable directory).
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
    obj=$2 want_sum=$3 grace=$4 n=$5
    shift 5
    flags=("${@:1:$n}")
    shift "$n"
    ;;
  *) exit 2 ;;
esac
# CHECK, then fd 9: the lifeline; nothing else reads it (every other stdin is /dev/null).
IFS= read -r check || exit 2
exec 9<&0 </dev/null
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
mark=xtask-check-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ "${#mark}" -eq 60 ] || exit 3
dir=$(mktemp -d "${TMPDIR:-/tmp}/xtask-replay.XXXXXXXX") || exit 5

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

# The object from the bucket into the fifo $dir/data; its sha256 into $dir/sum, over the whole
# object: `tee -p` goes on feeding the hash when the decompressor stops reading. rclone's status
# into $dir/fetch; $dir/sum.done once the hash is complete.
download() {
  sha256 <"$dir/sum.fifo" >"$dir/sum" &
  local hp=$!
  { rclone cat "${flags[@]}" "$obj"; echo $? >"$dir/fetch"; } | tee -p "$dir/sum.fifo" >"$dir/data"
  wait "$hp" && : >"$dir/sum.done"
}

# The SQL psql gets on stdout ($dir/sql): the dump in a transaction, then the check and COMMIT only
# when the whole dump decompressed, the object's sha256 is the manifest's, and the lifeline is
# still open and silent (`read -t 0`: a line or its end is there to be read).
produce() {
  # synchronous_commit off for this session only: its COMMIT does not wait for the WAL flush.
  # Durability is not given up: nothing uses this database before the swap, whose own
  # (synchronous) commit flushes the WAL up to it, this transaction's included.
  # maintenance_work_mem of at least 256 MB for this session (the server's when higher): the
  # dump's index builds (CREATE INDEX, primary keys) and foreign-key checks sort in memory, not
  # on disk (64 MB, the default, spills for a few million rows). One session's, for the replay.
  printf '\\restrict %s\nBEGIN;\nSET synchronous_commit = off;\n%s\n' "$key" \
    "SELECT pg_catalog.set_config('maintenance_work_mem', pg_catalog.int8larger(pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) / 1024, 262144)::pg_catalog.text || 'kB', false);"
  if [ "$kind" = file ]; then
    "$gz" -dc <"$file" | strip_key
  else
    "$gz" -dc <"$dir/data" | strip_key
  fi
  local st=("${PIPESTATUS[@]}")
  echo "${st[0]} ${st[1]}" >"$dir/status"
  if [ "${st[0]}" != 0 ] || [ "${st[1]}" != 0 ]; then
    return 0
  fi
  if [ "$kind" = object ]; then
    # The decompressor read the object to its end: the download ends; wait for its hash.
    while [ ! -e "$dir/sum.done" ] && kill -0 -- "-$d" 2>/dev/null; do
      sleep 0.01
    done
    local rc sum
    read -r rc <"$dir/fetch" || rc=x
    read -r sum <"$dir/sum" || sum=x
    if [ ! -e "$dir/sum.done" ] || [ "$rc" != 0 ] || [ "$sum" != "$want_sum" ]; then
      return 0
    fi
  fi
  if read -r -t 0 -u 9; then
    return 0
  fi
  : >"$dir/commit"
  # On a line of its own (a dump cut before its trailer may end without a newline, in a
  # comment). CHECK may RESET ALL: synchronous_commit is set again for the COMMIT.
  printf '\n'
  if [ -n "$check" ]; then
    printf "SELECT '%s';\n%s\nSET synchronous_commit = off;\n" "$mark" "$check"
  fi
  printf 'COMMIT;\n'
}

# Whether process group $1 (empty: none) still has a process.
alive() {
  [ -n "$1" ] && kill -0 -- "-$1" 2>/dev/null
}

# SIGTERM to the process groups given (empty ones skipped).
halt() {
  local g
  for g; do
    if [ -n "$g" ]; then
      kill -TERM -- "-$g" 2>/dev/null
    fi
  done
}

# The verdict, then what CHECK printed (the lines after its marker).
say() {
  echo "$1"
  tail -n +2 "$dir/check" 2>/dev/null
}

# The replay: the download, the SQL and psql, each a process group of its own, watched with the
# lifeline until they are done; then the verdict.
replay() {
  local stop="" cut="" until="" d="" p q line r pc
  trap 'stop=signal' TERM INT HUP
  mkfifo "$dir/sql" || exit 5
  if [ "$kind" = object ]; then
    mkfifo "$dir/data" "$dir/sum.fifo" || exit 5
  fi
  set -m
  if [ "$kind" = object ]; then
    download &
    d=$!
  fi
  produce >"$dir/sql" &
  p=$!
  { { "$@" <"$dir/sql"; echo $? >"$dir/psql"; } | sed -n "/^$mark\$/,\$p" >"$dir/check"; } &
  q=$!
  set +m
  while :; do
    if [ -z "$stop" ]; then
      read -r -t 0.02 -u 9 line
      r=$?
      if [ "$r" -eq 0 ]; then
        stop=asked
      elif [ "$r" -le 128 ]; then
        stop=gone
      fi
    fi
    if [ -n "$stop" ]; then
      halt "$d" "$p" "$q"
      break
    fi
    if ! alive "$q"; then
      # psql is done: nothing more of the SQL can be used.
      halt "$p"
      if ! alive "$d"; then
        break
      fi
      # The object still streams. Into the hash for GRACE more seconds when psql stopped on the
      # dump's fault (the sha256 tells a corrupt object from a failing dump), else not at all.
      if [ -z "$until" ]; then
        read -r pc <"$dir/psql" || pc=x
        case $pc in
          0 | 3) until=$((SECONDS + grace)) ;;
          *) until=$SECONDS ;;
        esac
      fi
      if [ "$SECONDS" -ge "$until" ]; then
        cut=1
        halt "$d"
        break
      fi
    fi
  done
  # Every group gone within a second (their processes ignore no SIGTERM of ours), else killed.
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    alive "$d" || alive "$p" || alive "$q" || break
    sleep 0.1
  done
  for i in "$d" "$p" "$q"; do
    if alive "$i"; then
      kill -KILL -- "-$i" 2>/dev/null
    fi
  done
  wait
  # Nobody may read the verdict any more (xtask gone): the temp dir is still removed.
  trap '' PIPE
  if [ -z "$stop" ] && read -r -t 0 -u 9; then
    stop=asked
  fi
  if [ -n "$stop" ]; then
    say "stopped 0"
    return 0
  fi
  local gc sc rc sum tail=""
  read -r gc sc <"$dir/status" || { gc=x sc=x; }
  read -r pc <"$dir/psql" || pc=x
  if [ "$kind" = object ]; then
    if [ -n "$cut" ]; then
      tail=" -"
    else
      read -r rc <"$dir/fetch" || rc=x
      read -r sum <"$dir/sum" || sum=x
      if [ "$rc" != 0 ]; then
        say "fetch $rc"
        return 0
      fi
      if [ ! -e "$dir/sum.done" ]; then
        sum=x
      fi
      tail=" $sum"
      if [ "$sum" != "$want_sum" ]; then
        say "differs 0$tail"
        return 0
      fi
    fi
  fi
  # psql stopping first (an SQL error, the connection) leaves the stages before it SIGPIPEd (141)
  # or failing on the broken pipe: then psql's status is the cause, whatever they say.
  if [ "$pc" != 0 ]; then
    say "psql $pc$tail"
  elif [ "$gc" != 0 ] || [ "$sc" != 0 ]; then
    say "gunzip $gc/$sc$tail"
  elif [ ! -e "$dir/commit" ]; then
    say "stopped 0"
  else
    say "ok 0$tail"
  fi
}

supervise() {
  replay "$@"
  rm -rf -- "$dir"
}

supervise "$@" &
sup=$!
trap 'kill -TERM "$sup" 2>/dev/null' TERM INT HUP
# Wait for the supervisor (again after a signal passed on to it), then remove the temp dir (which
# the supervisor also does when it outlives this shell).
while :; do
  wait "$sup"
  status=$?
  if ! kill -0 "$sup" 2>/dev/null; then
    break
  fi
done
rm -rf -- "$dir"
exit "$status"
