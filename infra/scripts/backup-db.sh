#!/usr/bin/env bash
# backup-db.sh: dump PostgreSQL, prove the dump is complete, upload it, prove the upload.
#
# A backup that silently fails is worse than none. Every stage below either succeeds or stops the
# script with a line `backup-db: FAILED stage=<stage> ...` on stderr and a non-zero exit:
#   exit 1  a stage failed (dump, verify, upload, remote verification, object already exists)
#   exit 2  bad input (LABEL, BACKUP_TIMESTAMP, BACKUP_MODE, a missing required variable); nothing ran
#   exit 3  a dependency could not be reached or run (pg_dump/rclone/docker missing, remote unreachable
#           or refusing the credentials before anything was dumped, PostgreSQL down or gone mid-dump)
# On success the last line on stdout is machine-readable (cargo xtask backup parses it):
#   BACKUP_OK path=<remote>:<bucket>/<prefix>/YYYYMM/<file> size=<bytes> hash_type=<md5|sha1> hash=<hex>
#
# Stages: input -> tools -> remote (reachable, object absent) -> dump (to a temp file, pipefail) ->
# verify (gzip integrity + `-- PostgreSQL database dump complete` trailer + size floor) -> hash ->
# upload (rclone copyto, bounded retries/timeouts, --ignore-existing) -> remote-verify (size + hash).
# The temp directory is removed on every exit path (success, failure, INT/TERM/HUP).
#
# Environment (cargo xtask backup sets these; a cron job on the server can too):
#   LABEL                  suffix of the file name, [A-Za-z0-9._-], 1-80 chars, starts with a letter or
#                          digit (default: nightly)
#   BACKUP_BUCKET          bucket (required)
#   BACKUP_REMOTE          rclone remote name (default: b2). Every setting of the remote can come from
#                          rclone's own RCLONE_CONFIG_<REMOTE>_* variables or its config file
#                          (`rclone config file`; RCLONE_CONFIG names another one). On a server the B2
#                          key lives there, readable by the deploy user only; never in this script.
#   BACKUP_PREFIX          folder inside the bucket (default: postgres)
#   BACKUP_MODE            direct | compose (default: compose)
#     direct:  pg_dump with libpq's PGHOST PGPORT PGUSER PGDATABASE, password only as PGPASSWORD
#              (or ~/.pgpass); BACKUP_PG_DUMP names the pg_dump program (default: pg_dump)
#     compose: `<compose> -p P -f F... [--env-file E] exec -T <service> pg_dump -U <user> <db>`; the
#              container's own environment holds the password.
#              BACKUP_COMPOSE_PROJECT (required), BACKUP_COMPOSE_FILES (required, `:`-separated),
#              BACKUP_COMPOSE_ENV_FILE (optional), BACKUP_COMPOSE_SERVICE (default: postgres),
#              BACKUP_DB_USER, BACKUP_DB_NAME (required), BACKUP_COMPOSE_CMD (`docker compose` or
#              `docker-compose`; default: whichever runs). Named BACKUP_COMPOSE_* because COMPOSE_FILE
#              and COMPOSE_PROJECT_NAME are Compose's own variables.
#   BACKUP_TMPDIR          where the temp file goes (default: $TMPDIR or /tmp)
#   BACKUP_MIN_BYTES       size floor of the compressed dump (default: 256)
#   BACKUP_DUMP_TIMEOUT    seconds the dump may take before it is stopped (default: 3600): a pg_dump
#                          waiting on a lock or a silent server fails the dump stage instead of hanging
#   BACKUP_TIMESTAMP       YYYYmmdd_HHMMSS to use instead of now (UTC), e.g. to re-run a failed nightly
#   BACKUP_GZIP            compressor (default: pigz when present, else gzip; both write .gz)
#   BACKUP_GZIP_LEVEL      1-9 (default: 1). Measured on a 412 MB dump, 2 cores: pigz -1 is 2.6x faster
#                          than -6 (4.5 s vs 11.8 s for pg_dump | pigz) for a 5% larger file.
#   RCLONE                 rclone program (default: rclone)
#   BACKUP_RCLONE_RETRIES, BACKUP_RCLONE_LOW_LEVEL_RETRIES, BACKUP_RCLONE_CONTIMEOUT,
#   BACKUP_RCLONE_TIMEOUT  bounded retries/timeouts (defaults: 2, 2, 10s, 60s): a bad key fails in seconds
set -Eeuo pipefail
umask 077

STAGE=input
TMP_DIR=""
PROG=backup-db

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# fail STAGE CODE MESSAGE: the one way out on a failure.
fail() {
  local stage=$1 code=$2
  shift 2
  printf '%s: FAILED stage=%s: %s\n' "$PROG" "$stage" "$*" >&2
  exit "$code"
}

cleanup() {
  if [ -n "$TMP_DIR" ] && [ -d "$TMP_DIR" ]; then
    rm -rf -- "$TMP_DIR"
  fi
}
on_err() {
  local code=$?
  # Only the main shell reports (command substitutions inherit the trap with -E).
  if [ "${BASHPID:-$$}" = "$$" ]; then
    printf '%s: FAILED stage=%s: command failed (exit %s) at line %s\n' "$PROG" "$STAGE" "$code" "${BASH_LINENO[0]}" >&2
    exit 1
  fi
}
on_signal() {
  trap - INT TERM HUP
  printf '%s: FAILED stage=%s: interrupted by SIG%s\n' "$PROG" "$STAGE" "$1" >&2
  exit 1
}
trap cleanup EXIT
trap on_err ERR
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# ---- input: validate everything before touching anything ------------------------------------------
LABEL="${LABEL:-nightly}"
if [ "${#LABEL}" -gt 80 ] || ! [[ "$LABEL" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
  fail input 2 "LABEL must be 1-80 characters of [A-Za-z0-9._-] starting with a letter or digit"
fi
BACKUP_REMOTE="${BACKUP_REMOTE:-b2}"
BACKUP_PREFIX="${BACKUP_PREFIX:-postgres}"
BACKUP_BUCKET="${BACKUP_BUCKET:-}"
BACKUP_MODE="${BACKUP_MODE:-compose}"
BACKUP_MIN_BYTES="${BACKUP_MIN_BYTES:-256}"
RCLONE="${RCLONE:-rclone}"
name_re='^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
[[ "$BACKUP_REMOTE" =~ $name_re ]] || fail input 2 "BACKUP_REMOTE must match $name_re"
[[ "$BACKUP_BUCKET" =~ $name_re ]] || fail input 2 "BACKUP_BUCKET is required and must match $name_re"
[[ "$BACKUP_PREFIX" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]{0,126}$ && "$BACKUP_PREFIX" != *..* ]] ||
  fail input 2 "BACKUP_PREFIX must be a relative path of [A-Za-z0-9._/-]"
[[ "$BACKUP_MIN_BYTES" =~ ^[0-9]{1,15}$ ]] || fail input 2 "BACKUP_MIN_BYTES must be a number"
BACKUP_GZIP_LEVEL="${BACKUP_GZIP_LEVEL:-1}"
[[ "$BACKUP_GZIP_LEVEL" =~ ^[1-9]$ ]] || fail input 2 "BACKUP_GZIP_LEVEL must be 1-9"
BACKUP_DUMP_TIMEOUT="${BACKUP_DUMP_TIMEOUT:-3600}"
[[ "$BACKUP_DUMP_TIMEOUT" =~ ^[1-9][0-9]{0,5}$ ]] || fail input 2 "BACKUP_DUMP_TIMEOUT must be a number of seconds (1-999999)"
for v in BACKUP_RCLONE_RETRIES BACKUP_RCLONE_LOW_LEVEL_RETRIES; do
  [[ "${!v:-1}" =~ ^[0-9]{1,3}$ ]] || fail input 2 "$v must be a small number"
done
for v in BACKUP_RCLONE_CONTIMEOUT BACKUP_RCLONE_TIMEOUT; do
  [[ "${!v:-1s}" =~ ^[0-9]{1,5}(ms|s|m)$ ]] || fail input 2 "$v must be a duration like 10s"
done

if [ -n "${BACKUP_TIMESTAMP:-}" ]; then
  [[ "$BACKUP_TIMESTAMP" =~ ^[0-9]{8}_[0-9]{6}$ ]] || fail input 2 "BACKUP_TIMESTAMP must be YYYYmmdd_HHMMSS"
  TIMESTAMP=$BACKUP_TIMESTAMP
else
  TIMESTAMP=$(date -u +%Y%m%d_%H%M%S)
fi
FILE="station_backup_${TIMESTAMP}_${LABEL}.sql.gz"
OBJECT="${BACKUP_REMOTE}:${BACKUP_BUCKET}/${BACKUP_PREFIX}/${TIMESTAMP:0:6}/${FILE}"

dump_cmd=()
case "$BACKUP_MODE" in
  direct)
    dump_cmd=("${BACKUP_PG_DUMP:-pg_dump}" --no-password)
    ;;
  compose)
    [[ "${BACKUP_COMPOSE_PROJECT:-}" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || fail input 2 "BACKUP_COMPOSE_PROJECT is required in compose mode"
    [ -n "${BACKUP_COMPOSE_FILES:-}" ] || fail input 2 "BACKUP_COMPOSE_FILES is required in compose mode"
    [[ "${BACKUP_DB_USER:-}" =~ ^[a-z_][a-z0-9_]*$ ]] || fail input 2 "BACKUP_DB_USER must be a plain identifier"
    [[ "${BACKUP_DB_NAME:-}" =~ ^[a-z_][a-z0-9_]*$ ]] || fail input 2 "BACKUP_DB_NAME must be a plain identifier"
    service="${BACKUP_COMPOSE_SERVICE:-postgres}"
    [[ "$service" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || fail input 2 "BACKUP_COMPOSE_SERVICE is not a service name"
    ;;
  *) fail input 2 "BACKUP_MODE must be direct or compose" ;;
esac

# ---- tools ---------------------------------------------------------------------------------------
STAGE=tools
need() { command -v "$1" >/dev/null 2>&1 || fail tools 3 "\`$1\` is not installed or not on PATH (apt-get install $2)"; }
need "$RCLONE" rclone
if [ -n "${BACKUP_GZIP:-}" ]; then
  GZ=$BACKUP_GZIP
elif command -v pigz >/dev/null 2>&1; then
  GZ=pigz
else
  GZ=gzip
fi
need "$GZ" "$GZ"
need md5sum coreutils
need sha1sum coreutils
need timeout coreutils
if [ "$BACKUP_MODE" = direct ]; then
  need "${dump_cmd[0]}" postgresql-client
else
  compose=()
  if [ -n "${BACKUP_COMPOSE_CMD:-}" ]; then
    read -r -a compose <<<"$BACKUP_COMPOSE_CMD"
  elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
  else
    fail tools 3 "neither \`docker compose\` nor \`docker-compose\` runs here"
  fi
  need "${compose[0]}" docker.io
  compose+=(-p "$BACKUP_COMPOSE_PROJECT")
  IFS=: read -r -a files <<<"$BACKUP_COMPOSE_FILES"
  for f in "${files[@]}"; do compose+=(-f "$f"); done
  if [ -n "${BACKUP_COMPOSE_ENV_FILE:-}" ]; then compose+=(--env-file "$BACKUP_COMPOSE_ENV_FILE"); fi
  dump_cmd=("${compose[@]}" exec -T "$service" pg_dump -U "$BACKUP_DB_USER" "$BACKUP_DB_NAME")
fi

rclone_flags=(
  --low-level-retries "${BACKUP_RCLONE_LOW_LEVEL_RETRIES:-2}"
  --retries "${BACKUP_RCLONE_RETRIES:-2}"
  --retries-sleep 1s
  --contimeout "${BACKUP_RCLONE_CONTIMEOUT:-10s}"
  --timeout "${BACKUP_RCLONE_TIMEOUT:-60s}"
  --stats 0
  --log-level NOTICE
)

# remote_stat OBJECT HASH_TYPE: lsjson of one object with one hash type. Exit 0 with JSON on stdout,
# 10 when it does not exist, else rclone's error code (stderr kept in $TMP_DIR/rclone.err).
remote_stat() {
  local out rc=0
  out=$("$RCLONE" lsjson --stat --hash-type "$2" "${rclone_flags[@]}" "$1" 2>"$TMP_DIR/rclone.err") || rc=$?
  case "$rc" in
    # rclone 1.75's S3 backend answers `lsjson --stat` on a missing key with exit 0 and a phantom
    # directory entry (`"IsDir": true, "Size": -1`): an object is a file, so that means "absent".
    0) if printf '%s' "$out" | grep -q '"IsDir": *true'; then return 10; fi
       printf '%s\n' "$out" ;;
    3 | 4) return 10 ;; # directory / file not found
    *) return "$rc" ;;
  esac
}
# The last lines rclone logged, without the harmless "Config file ... not found" notice.
rclone_err() { grep -v -e 'Config file .* not found' "$TMP_DIR/rclone.err" | tail -n 3 | tr '\n' ' ' || true; }
json_num() { grep -o "\"$1\": *[0-9]*" | head -n1 | grep -o '[0-9]*$' || true; }
json_hash() { grep -o "\"$1\": *\"[0-9a-f]*\"" | head -n1 | grep -o '[0-9a-f]*"$' | tr -d '"' || true; }

# ---- remote: reachable with these credentials, and the object does not exist ----------------------
STAGE=remote
base_dir=${BACKUP_TMPDIR:-${TMPDIR:-/tmp}}
[ -d "$base_dir" ] || fail remote 2 "BACKUP_TMPDIR $base_dir is not a directory"
TMP_DIR=$(mktemp -d "$base_dir/backup-db.XXXXXXXX")
say "target $OBJECT"
rc=0
remote_stat "$OBJECT" md5 >/dev/null || rc=$?
case "$rc" in
  0) fail remote 1 "$OBJECT already exists: refusing to overwrite a backup" ;;
  10) ;;
  *) fail remote 3 "cannot reach $BACKUP_REMOTE: (rclone exit $rc) $(rclone_err)" ;;
esac

# ---- dump: to a temp file; with pipefail a failing pg_dump fails the pipeline ----------------------
STAGE=dump
DUMP="$TMP_DIR/$FILE"
say "dump ($BACKUP_MODE mode, compressing with $GZ -$BACKUP_GZIP_LEVEL)"
start=$SECONDS
rc=0
# Bounded: `timeout` stops the dump (TERM, then KILL 30 s later); --foreground keeps it in our
# process group so Ctrl-C still reaches it.
timeout --foreground --kill-after=30 "$BACKUP_DUMP_TIMEOUT" "${dump_cmd[@]}" 2>"$TMP_DIR/dump.err" |
  "$GZ" "-$BACKUP_GZIP_LEVEL" -c >"$DUMP" || rc=$?
cat "$TMP_DIR/dump.err" >&2
# PostgreSQL down (or gone during the dump) is a dependency that could not be reached: exit 3.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -qiE 'connection refused|is the server running|server closed the connection unexpectedly|terminating connection due to administrator command|the database system is (shutting down|starting up|not yet accepting)|could not translate host name|timeout expired|service "?[A-Za-z0-9._-]+"? is not running' "$TMP_DIR/dump.err"; then
  fail dump 3 "PostgreSQL could not be reached (down, or gone during the dump): nothing uploaded. $(tail -n 2 "$TMP_DIR/dump.err" | tr '\n' ' ')"
fi
if [ "$rc" -eq 124 ]; then
  fail dump 1 "the dump did not finish within ${BACKUP_DUMP_TIMEOUT}s (BACKUP_DUMP_TIMEOUT) and was stopped: nothing uploaded. Check that the database answers and no long lock blocks pg_dump, or raise BACKUP_DUMP_TIMEOUT"
fi
[ "$rc" -eq 0 ] || fail dump 1 "the dump pipeline exited $rc (pg_dump or $GZ failed): nothing uploaded"

# ---- verify: gzip integrity, the completeness trailer, the size floor ----------------------------
STAGE=verify
# One decompression pass does what `gzip -t` does (a corrupt or truncated .gz makes -d exit non-zero:
# CRC and length are checked) and hands us the last bytes of the SQL for the trailer check.
rc=0
"$GZ" -dc "$DUMP" | tail -c 4096 >"$TMP_DIR/tail.sql" || rc=$?
[ "$rc" -eq 0 ] || fail verify 1 "gzip integrity test failed ($GZ -d exit $rc): the compressed dump is corrupt"
# A plain dump ends with `-- PostgreSQL database dump complete` then `--` (PG 15.14+ adds
# `\unrestrict KEY` after it). A dump cut off mid-COPY lacks it.
last=$(grep -v -e '^[[:space:]]*$' -e '^\\unrestrict ' "$TMP_DIR/tail.sql" | tail -n 2 | tr '\n' '|' || true)
[ "$last" = "-- PostgreSQL database dump complete|--|" ] ||
  fail verify 1 "the dump does not end with '-- PostgreSQL database dump complete': it is truncated"
size=$(wc -c <"$DUMP" | tr -d ' ')
[ "$size" -ge "$BACKUP_MIN_BYTES" ] ||
  fail verify 1 "the compressed dump is $size bytes, below the floor of $BACKUP_MIN_BYTES bytes"
say "dump ok: $size bytes compressed in $((SECONDS - start))s, trailer present"

# ---- upload: never overwrite; bounded retries and timeouts ---------------------------------------
STAGE=upload
say "upload to $OBJECT"
rc=0
"$RCLONE" copyto --ignore-existing "${rclone_flags[@]}" "$DUMP" "$OBJECT" 2>"$TMP_DIR/rclone.err" || rc=$?
[ "$rc" -eq 0 ] || fail upload 1 "rclone copyto exited $rc: $(rclone_err)"

# ---- remote-verify: the object's size and hash equal the local file's ----------------------------
STAGE=remote-verify
hash_type="" remote_hash="" remote_size=""
for ht in md5 sha1; do
  rc=0
  json=$(remote_stat "$OBJECT" "$ht") || rc=$?
  [ "$rc" -ne 10 ] || fail remote-verify 1 "$OBJECT is not on the remote after the upload"
  [ "$rc" -eq 0 ] || fail remote-verify 1 "cannot stat $OBJECT (rclone exit $rc): $(rclone_err)"
  remote_size=$(printf '%s' "$json" | json_num Size)
  remote_hash=$(printf '%s' "$json" | json_hash "$ht")
  if [ -n "$remote_hash" ]; then
    hash_type=$ht
    break
  fi
done
[ "$remote_size" = "$size" ] || fail remote-verify 1 "remote size ${remote_size:-?} != local size $size"
[ -n "$hash_type" ] || fail remote-verify 1 "the remote reports neither an md5 nor a sha1 hash for $OBJECT"
local_hash=$("${hash_type}sum" "$DUMP" | cut -d' ' -f1)
[ "$remote_hash" = "$local_hash" ] ||
  fail remote-verify 1 "remote $hash_type $remote_hash != local $local_hash (was the object written by someone else?)"

STAGE=finished
say "verified: $OBJECT ($size bytes, $hash_type $local_hash)"
printf 'BACKUP_OK path=%s size=%s hash_type=%s hash=%s\n' "$OBJECT" "$size" "$hash_type" "$local_hash"
