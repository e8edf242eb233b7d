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
#             sha256=<hex> manifest=<path>.json
# (one line; the first four fields are the ones older parsers read).
#
# Stages: input -> tools -> remote (reachable, object and manifest absent) -> snapshot (a REPEATABLE
# READ transaction exports its snapshot and stays open) -> dump (pg_dump --snapshot, to a temp file,
# pipefail) -> counts (metadata and exact row counts, read in that same snapshot while the dump ran) ->
# verify (gzip integrity + `-- PostgreSQL database dump complete` trailer, both checked while the dump
# is written: the compressed bytes go to the file and through a decompressor in the same pass; size
# floor) -> hash ->
# upload (rclone copyto, bounded retries/timeouts, --ignore-existing) -> remote-verify (size + hash) ->
# manifest (written, uploaded beside the dump as <object>.json, verified remotely).
# The temp directory is removed and the snapshot session ended on every exit path (success, failure,
# INT/TERM/HUP).
#
# The manifest (schema `backup-manifest/1`, parsed by xtask/src/backup/manifest.rs):
#   {"schema","file","sha256","size","label","git_sha","created_at","database","server_version",
#    "newest_migration","tables"}: sha256 and size of the .sql.gz, git_sha from BACKUP_GIT_SHA (else
#   null), created_at = when the snapshot was taken (UTC), newest_migration = the greatest version's name
#   in `schema_migrations`, else TypeORM's newest `migrations` name, else null; tables = exact count(*)
#   of every ordinary and partitioned table outside the system schemas, keyed as PostgreSQL quotes
#   `schema.table` (format('%I.%I'): public.users, public."Audit Log"), sorted, all read in the snapshot
#   the dump was taken from, so they equal what the dump restores even while writers keep writing.
#   It is uploaded only after the dump is verified remotely; a failed manifest upload fails the backup
#   (the verified dump stays, without a manifest: `backup drill --strict` refuses such a backup).
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
#   BACKUP_GIT_SHA         40-hex commit of the release being deployed (deploy sets it), for the manifest
#   BACKUP_PSQL            direct mode: the psql program holding the snapshot (default: psql)
#   BACKUP_GZIP            compressor (default: igzip from Debian's `isal` when present, else pigz, else
#                          gzip; all write ordinary .gz that `gzip -t` and `gunzip` accept)
#   BACKUP_GZIP_LEVEL      1-9 (default: 1; igzip's levels are 0-3, so it gets min(level, 3)). Measured
#                          on a 412 MB dump, 2 cores: pigz -1 is 2.6x faster than -6 (4.5 s vs 11.8 s for
#                          pg_dump | pigz) for a 5% larger file; igzip -1 is faster still (bench/backup.sh).
#   RCLONE                 rclone program (default: rclone)
#   BACKUP_RCLONE_RETRIES, BACKUP_RCLONE_LOW_LEVEL_RETRIES, BACKUP_RCLONE_CONTIMEOUT,
#   BACKUP_RCLONE_TIMEOUT  bounded retries/timeouts (defaults: 2, 2, 10s, 60s): a bad key fails in seconds
set -Eeuo pipefail
umask 077

STAGE=input
TMP_DIR=""
SNAP_PID=""
HELPER_PIDS=()
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
  # End the snapshot session: EOF on its stdin ends psql (and `compose exec`); then make sure.
  if [ -n "$SNAP_PID" ]; then
    exec 7>&- 8<&-
    kill "$SNAP_PID" 2>/dev/null || true
    wait "$SNAP_PID" 2>/dev/null || true
  fi
  local pid
  for pid in "${HELPER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
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
BACKUP_GIT_SHA="${BACKUP_GIT_SHA:-}"
if [ -n "$BACKUP_GIT_SHA" ] && ! [[ "$BACKUP_GIT_SHA" =~ ^[0-9a-f]{40}$ ]]; then
  fail input 2 "BACKUP_GIT_SHA must be a full commit SHA (40 lowercase hex characters)"
fi
FILE="station_backup_${TIMESTAMP}_${LABEL}.sql.gz"
OBJECT="${BACKUP_REMOTE}:${BACKUP_BUCKET}/${BACKUP_PREFIX}/${TIMESTAMP:0:6}/${FILE}"
MANIFEST="${OBJECT}.json"

# Both programs run with these; `dump_cmd` gets `--snapshot=<id>` once the snapshot exists.
psql_opts=(-X -q -A -t -v ON_ERROR_STOP=1)
dump_cmd=()
dump_db=()
psql_cmd=()
case "$BACKUP_MODE" in
  direct)
    dump_cmd=("${BACKUP_PG_DUMP:-pg_dump}" --no-password)
    psql_cmd=("${BACKUP_PSQL:-psql}" --no-password "${psql_opts[@]}")
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
# GZ compresses (gz_opts), GUNZIP decompresses for the integrity check (the same program when
# BACKUP_GZIP names one).
if [ -n "${BACKUP_GZIP:-}" ]; then
  GZ=$BACKUP_GZIP
elif command -v igzip >/dev/null 2>&1; then
  GZ=igzip
elif command -v pigz >/dev/null 2>&1; then
  GZ=pigz
else
  GZ=gzip
fi
need "$GZ" "$GZ"
GUNZIP=$GZ
case "${GZ##*/}" in
  igzip)
    # igzip: levels 0-3; threads help on more than one core.
    gz_opts=("-$((BACKUP_GZIP_LEVEL < 3 ? BACKUP_GZIP_LEVEL : 3))" -T "$(nproc 2>/dev/null || echo 1)")
    ;;
  *) gz_opts=("-$BACKUP_GZIP_LEVEL") ;;
esac
need md5sum coreutils
need sha1sum coreutils
need sha256sum coreutils
need mkfifo coreutils
need timeout coreutils
if [ "$BACKUP_MODE" = direct ]; then
  need "${dump_cmd[0]}" postgresql-client
  need "${psql_cmd[0]}" postgresql-client
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
  dump_cmd=("${compose[@]}" exec -T "$service" pg_dump -U "$BACKUP_DB_USER")
  dump_db=("$BACKUP_DB_NAME")
  psql_cmd=("${compose[@]}" exec -T "$service" psql -U "$BACKUP_DB_USER" -d "$BACKUP_DB_NAME" "${psql_opts[@]}")
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
# One listing of the month's folder answers for both the dump and its manifest (each rclone call
# costs a start-up and, on B2, an authorization round trip).
rc=0
listing=$("$RCLONE" lsjson --files-only --no-mimetype --include "/$FILE" --include "/$FILE.json" \
  "${rclone_flags[@]}" "${OBJECT%/*}/" 2>"$TMP_DIR/rclone.err") || rc=$?
case "$rc" in
  0) for target in "$FILE" "$FILE.json"; do
       if grep -q -F "\"Path\":\"$target\"" <<<"$listing"; then
         fail remote 1 "${OBJECT%/*}/$target already exists: refusing to overwrite a backup"
       fi
     done ;;
  3) ;; # the month's folder does not exist yet
  *) fail remote 3 "cannot reach $BACKUP_REMOTE: (rclone exit $rc) $(rclone_err)" ;;
esac

# libpq/psql/pg_dump/compose messages that mean "the server is not there" (exit 3, not 1).
PG_UNREACHABLE='could not connect|connection refused|is the server running|server closed the connection unexpectedly|terminating connection due to administrator command|the database system is (shutting down|starting up|not yet accepting)|could not translate host name|timeout expired|service "?[A-Za-z0-9._-]+"? is not running'

# ---- snapshot: one REPEATABLE READ transaction exports its snapshot and stays open ----------------
# psql runs the fixed statements below, then reads its stdin (fd 7 here, a fifo) until we close it,
# which ends the transaction after the dump. pg_dump imports the exported snapshot, so the counts read
# in this transaction (concurrently with the dump) describe exactly the rows the dump contains.
STAGE=snapshot
# The session sits idle in its transaction while pg_dump runs: a server-wide
# idle_in_transaction_session_timeout or statement_timeout must not end it (pg_dump lifts them too).
SESSION_SQL="SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0"
BEGIN_SQL="BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
EXPORT_SQL="SELECT pg_export_snapshot()"
# Fixed SQL: identifiers quoted by PostgreSQL (format %I); the optional migration tables are only read
# when they exist with the expected columns (query_to_xml runs the query text only in that branch).
META_SQL="SELECT json_build_object(
  'database', current_database(),
  'server_version', split_part(current_setting('server_version'), ' ', 1),
  'newest_migration', CASE
    WHEN (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations')
          AND attname IN ('version', 'name') AND NOT attisdropped) = 2
      THEN (xpath('/row/m/text()', query_to_xml(
        'SELECT name AS m FROM schema_migrations ORDER BY version DESC LIMIT 1', false, true, '')))[1]::text
    WHEN (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('migrations')
          AND attname IN ('timestamp', 'name') AND NOT attisdropped) = 2
      THEN (xpath('/row/m/text()', query_to_xml(
        'SELECT name AS m FROM migrations ORDER BY \"timestamp\" DESC LIMIT 1', false, true, '')))[1]::text
  END,
  'tables', (SELECT coalesce(json_object_agg(t.k, t.n ORDER BY t.k COLLATE \"C\"), '{}'::json) FROM (
    SELECT format('%I.%I', n.nspname, c.relname) AS k,
      (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname,
        c.relname), false, true, '')))[1]::text::bigint AS n
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%') t))::text"
mkfifo "$TMP_DIR/snap.in" "$TMP_DIR/snap.out"
"${psql_cmd[@]}" -c "$SESSION_SQL" -c "$BEGIN_SQL" -c "$EXPORT_SQL" -c "$META_SQL" -f - \
  <"$TMP_DIR/snap.in" >"$TMP_DIR/snap.out" 2>"$TMP_DIR/psql.err" &
SNAP_PID=$!
exec 7>"$TMP_DIR/snap.in" 8<"$TMP_DIR/snap.out"
# snap_failed CODE HOW: psql ended (or never answered) before giving what we asked for.
snap_failed() {
  local why rc=0
  why=$(grep -v -e '^[[:space:]]*$' "$TMP_DIR/psql.err" | tail -n 3 | tr '\n' ' ' || true)
  if [ "$1" = timeout ]; then
    fail "$STAGE" 1 "PostgreSQL did not answer within ${BACKUP_DUMP_TIMEOUT}s (BACKUP_DUMP_TIMEOUT): nothing uploaded. $why"
  fi
  wait "$SNAP_PID" || rc=$?
  SNAP_PID=""
  # Exit 3 when the server is not reachable at all (psql exits 2; `compose exec` 1 when the service
  # is down); a reachable server refusing us (no such database, authentication) is a failed stage.
  if grep -qiE "$PG_UNREACHABLE" "$TMP_DIR/psql.err"; then
    fail "$STAGE" 3 "PostgreSQL could not be reached (psql exit $rc): nothing dumped. $why"
  fi
  fail "$STAGE" 1 "the snapshot session ended early (psql exit $rc): $why"
}
snapshot=""
rc=0
read -r -t "$BACKUP_DUMP_TIMEOUT" -u 8 snapshot || rc=$?
# read: >128 when the timeout expired, 1 at end of file (psql ended).
if [ "$rc" -gt 128 ]; then snap_failed timeout; elif [ "$rc" -ne 0 ]; then snap_failed eof; fi
[[ "$snapshot" =~ ^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$ ]] || fail snapshot 1 "unexpected snapshot id from pg_export_snapshot(): ${snapshot:0:80}"
CREATED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say "snapshot $snapshot exported at $CREATED_AT"

# ---- dump: to a temp file; with pipefail a failing pg_dump fails the pipeline ----------------------
STAGE=dump
DUMP="$TMP_DIR/$FILE"
say "dump ($BACKUP_MODE mode, compressing with ${GZ##*/} ${gz_opts[*]})"
start=$SECONDS
# One pass: pg_dump | compress | tee FILE | decompress | tail. The decompressor reads exactly the bytes
# written to the file, so it does what `gzip -t` does (CRC and length; a corrupt or truncated .gz fails
# it) without reading the file again, and hands us the last bytes of the SQL for the trailer check.
# tee also feeds sha256sum (for the manifest) and md5sum (for the remote check) through fifos, so
# nothing reads the file again before the upload.
# Bounded: `timeout` stops the dump (TERM, then KILL 30 s later); --foreground keeps it in our
# process group so Ctrl-C still reaches it.
mkfifo "$TMP_DIR/sha256.fifo" "$TMP_DIR/md5.fifo"
sha256sum <"$TMP_DIR/sha256.fifo" >"$TMP_DIR/dump.sha256" &
sha_pid=$!
md5sum <"$TMP_DIR/md5.fifo" >"$TMP_DIR/dump.md5" &
md5_pid=$!
HELPER_PIDS=("$sha_pid" "$md5_pid")
st=()
{
  # --no-owner: no `ALTER ... OWNER TO` lines, so `cargo xtask restore` can replay the dump as a
  # role that owns only its scratch database (owners need a superuser to set), then hand it all
  # to the database's owner.
  timeout --foreground --kill-after=30 "$BACKUP_DUMP_TIMEOUT" "${dump_cmd[@]}" --no-owner --snapshot="$snapshot" "${dump_db[@]}" 2>"$TMP_DIR/dump.err" |
    "$GZ" "${gz_opts[@]}" -c | tee "$DUMP" "$TMP_DIR/sha256.fifo" "$TMP_DIR/md5.fifo" |
    "$GUNZIP" -dc | tail -c 4096 >"$TMP_DIR/tail.sql"
  st=("${PIPESTATUS[@]}")
} || true
hash_rc=0
wait "$sha_pid" || hash_rc=$?
wait "$md5_pid" || hash_rc=$?
HELPER_PIDS=()
cat "$TMP_DIR/dump.err" >&2
# PostgreSQL down (or gone during the dump) is a dependency that could not be reached: exit 3.
if [ "${st[0]}" -ne 0 ] && [ "${st[0]}" -ne 124 ] && grep -qiE "$PG_UNREACHABLE" "$TMP_DIR/dump.err"; then
  fail dump 3 "PostgreSQL could not be reached (down, or gone during the dump): nothing uploaded. $(tail -n 2 "$TMP_DIR/dump.err" | tr '\n' ' ')"
fi
# Which part failed: 141 is SIGPIPE, the echo of a later part stopping.
if [ "${st[0]}" -eq 124 ]; then
  fail dump 1 "the dump did not finish within ${BACKUP_DUMP_TIMEOUT}s (BACKUP_DUMP_TIMEOUT) and was stopped: nothing uploaded. Check that the database answers and no long lock blocks pg_dump, or raise BACKUP_DUMP_TIMEOUT"
fi
if [ "${st[2]}" -ne 0 ] && [ "${st[2]}" -ne 141 ]; then
  fail dump 1 "writing $DUMP failed (tee exit ${st[2]}; disk full?): nothing uploaded"
fi
if [ "${st[1]}" -ne 0 ] && [ "${st[1]}" -ne 141 ]; then
  fail dump 1 "the compressor ${GZ##*/} exited ${st[1]}: nothing uploaded"
fi
# (A hasher that died makes tee stop, which truncates what the decompressor sees: name it first.)
[ "$hash_rc" -eq 0 ] || fail hash 1 "hashing the dump failed (sha256sum/md5sum exit $hash_rc)"
if [ "${st[3]}" -ne 0 ]; then
  fail verify 1 "gzip integrity test failed (${GUNZIP##*/} -d exit ${st[3]}): the compressed dump is corrupt"
fi
for i in 0 1 2 4; do
  [ "${st[$i]}" -eq 0 ] || fail dump 1 "the dump pipeline failed (exit statuses ${st[*]}: pg_dump, ${GZ##*/}, tee, ${GUNZIP##*/} -d, tail): nothing uploaded"
done

# ---- counts: database, server version, newest migration and row counts, from the same snapshot -----
STAGE=counts
meta=""
rc=0
read -r -t "$BACKUP_DUMP_TIMEOUT" -u 8 meta || rc=$?
# read: >128 when the timeout expired, 1 at end of file (psql ended).
if [ "$rc" -gt 128 ]; then snap_failed timeout; elif [ "$rc" -ne 0 ]; then snap_failed eof; fi
[[ "$meta" == '{'*'}' ]] || fail counts 1 "unexpected answer to the row count query: ${meta:0:80}"
# End the transaction (EOF on psql's stdin) and check that the session ended cleanly.
exec 7>&-
rc=0
wait "$SNAP_PID" || rc=$?
SNAP_PID=""
exec 8<&-
[ "$rc" -eq 0 ] || fail counts 1 "the snapshot session exited $rc: $(tail -n 3 "$TMP_DIR/psql.err" | tr '\n' ' ')"

# ---- verify: the completeness trailer (read in the dump's pass), the size floor --------------------
STAGE=verify
# A plain dump ends with `-- PostgreSQL database dump complete` then `--` (PG 15.14+ adds
# `\unrestrict KEY` after it). A dump cut off mid-COPY lacks it.
last=$(grep -v -e '^[[:space:]]*$' -e '^\\unrestrict ' "$TMP_DIR/tail.sql" | tail -n 2 | tr '\n' '|' || true)
[ "$last" = "-- PostgreSQL database dump complete|--|" ] ||
  fail verify 1 "the dump does not end with '-- PostgreSQL database dump complete': it is truncated"
size=$(wc -c <"$DUMP" | tr -d ' ')
[ "$size" -ge "$BACKUP_MIN_BYTES" ] ||
  fail verify 1 "the compressed dump is $size bytes, below the floor of $BACKUP_MIN_BYTES bytes"
say "dump ok: $size bytes compressed in $((SECONDS - start))s, trailer present"

# ---- hash: sha256 of the .sql.gz for the manifest, md5 for the remote check (both from the pass) ---
STAGE='hash'
sha256=$(cut -d' ' -f1 <"$TMP_DIR/dump.sha256")
dump_md5=$(cut -d' ' -f1 <"$TMP_DIR/dump.md5")
[[ "$sha256" =~ ^[0-9a-f]{64}$ && "$dump_md5" =~ ^[0-9a-f]{32}$ ]] || fail hash 1 "sha256sum/md5sum gave no digest"

# upload_verified STAGE LOCAL OBJECT [MD5]: copy without ever overwriting, then prove the remote object
# has the local file's size and hash (MD5: the local file's md5 when already known). Sets hash_type and
# local_hash.
hash_type="" local_hash=""
upload_verified() {
  local stage=$1 src=$2 dst=$3 known_md5=${4:-} ht json remote_hash="" remote_size="" lsize
  STAGE=$stage
  say "upload to $dst"
  rc=0
  # --ignore-checksum: rclone's own after-copy hash check would hash both sides once more; the
  # remote check below compares the remote object's hash with ours anyway.
  "$RCLONE" copyto --ignore-existing --ignore-checksum "${rclone_flags[@]}" "$src" "$dst" 2>"$TMP_DIR/rclone.err" || rc=$?
  [ "$rc" -eq 0 ] || fail "$stage" 1 "rclone copyto exited $rc: $(rclone_err)"
  if [ "$stage" = upload ]; then STAGE=remote-verify; fi
  hash_type=""
  for ht in md5 sha1; do
    rc=0
    json=$(remote_stat "$dst" "$ht") || rc=$?
    [ "$rc" -ne 10 ] || fail "$STAGE" 1 "$dst is not on the remote after the upload"
    [ "$rc" -eq 0 ] || fail "$STAGE" 1 "cannot stat $dst (rclone exit $rc): $(rclone_err)"
    remote_size=$(printf '%s' "$json" | json_num Size)
    remote_hash=$(printf '%s' "$json" | json_hash "$ht")
    if [ -n "$remote_hash" ]; then
      hash_type=$ht
      break
    fi
  done
  lsize=$(wc -c <"$src" | tr -d ' ')
  [ "$remote_size" = "$lsize" ] || fail "$STAGE" 1 "remote size of $dst ${remote_size:-?} != local size $lsize"
  [ -n "$hash_type" ] || fail "$STAGE" 1 "the remote reports neither an md5 nor a sha1 hash for $dst"
  if [ "$hash_type" = md5 ] && [ -n "$known_md5" ]; then
    local_hash=$known_md5
  else
    local_hash=$("${hash_type}sum" "$src" | cut -d' ' -f1)
  fi
  [ "$remote_hash" = "$local_hash" ] ||
    fail "$STAGE" 1 "remote $hash_type $remote_hash != local $local_hash of $dst (was the object written by someone else?)"
}

# ---- upload + remote-verify: never overwrite; bounded retries and timeouts -------------------------
upload_verified upload "$DUMP" "$OBJECT" "$dump_md5"
dump_hash_type=$hash_type dump_hash=$local_hash
say "verified: $OBJECT ($size bytes, $hash_type $local_hash)"

# ---- manifest: beside the dump, only now that the dump is verified remotely ----------------------
STAGE=manifest
git_json=null
[ -z "$BACKUP_GIT_SHA" ] || git_json="\"$BACKUP_GIT_SHA\""
# Every value spliced here is validated above (file name and label charset, hex, digits, timestamp);
# the database's own values come JSON-encoded from PostgreSQL (`meta`).
printf '{"schema": "backup-manifest/1", "file": "%s", "sha256": "%s", "size": %s, "label": "%s", "git_sha": %s, "created_at": "%s", %s\n' \
  "$FILE" "$sha256" "$size" "$LABEL" "$git_json" "$CREATED_AT" "${meta#\{}" >"$TMP_DIR/$FILE.json"
upload_verified manifest "$TMP_DIR/$FILE.json" "$MANIFEST"
say "manifest verified: $MANIFEST"

STAGE=finished
printf 'BACKUP_OK path=%s size=%s hash_type=%s hash=%s sha256=%s manifest=%s\n' \
  "$OBJECT" "$size" "$dump_hash_type" "$dump_hash" "$sha256" "$MANIFEST"
