#!/usr/bin/env bash
# Benchmark (issue 15, "Performance"): restoring a backup of a generated database (default 4 M rows,
# ~400 MB plain dump), three ways, in RUNS interleaved rounds:
#   floor      gunzip | psql -1 into a fresh database (created in --prepare, not timed)
#   reference  the reference app's way: drop the database, recreate it, replay the dump (plain psql)
#   xtask      `xtask restore --env bench OBJECT --yes` end to end (the object streamed from the bucket
#              into the restore beside the live database, committed once its sha256 and size matched
#              the manifest; counts checked against the manifest; swap), when this build has
#              the restore command; skipped (said so) otherwise
# and prints the ratios (goal: xtask <= 1.15x the floor) and, when `restore --json` reports it, the
# app's downtime (goal <= 5 s whatever the size). Every leg's result is checked against the backup's
# manifest (row count) so a fast wrong restore cannot look good.
#
# Usage: bench/restore.sh [ROWS]       (default 4000000; BENCH_RUNS=3; BENCH_RECORD=1 records the
# figures in infra/docs/restore-bench.json for the generated docs; BENCH_XTASK_ENV='VAR=value ...' runs
# the xtask leg with those variables, e.g. TMPDIR=/dev/shm)
# Needs what bench/backup.sh needs (PostgreSQL server binaries, rclone, hyperfine, jq, gzip, root or
# the postgres user). The machine's load average is printed: on a shared machine, repeat when quiet.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-4000000}
RUNS=${BENCH_RUNS:-3}
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_RUNS must be a positive number" >&2; exit 2; }
for t in hyperfine jq pg_dump gunzip rclone psql; do
  command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 3; }
done

# shellcheck source=bench/pg-bench.sh
source "$ROOT/bench/pg-bench.sh"

echo "== generating $ROWS rows"
generate "$ROWS"
echo "== backup (xtask: dump + manifest)"
"$XTASK" backup --env bench --label restore-bench --json >"$WORK/out/backup.json" 2>"$WORK/out/backup.err"
object=$(jq -r .path "$WORK/out/backup.json")
file="$WORK/state/objects/${object#b2:}"
rows=$(jq '[.tables[]] | add' "$file.json")
[ "$rows" -eq "$ROWS" ] || { echo "bench: the manifest counts $rows rows, expected $ROWS" >&2; exit 1; }
echo "   $object: $(wc -c <"$file") bytes compressed, $rows rows in the manifest"

sql() { psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
# The reference leg drops a full database each time: give it one to drop before the first run.
sql -c "CREATE DATABASE refapp"
gunzip -c "$file" | psql -X -q -d refapp >/dev/null

# The floor and the reference replay over the Unix socket, as xtask's replay role does (it logs in
# there): the same transport for all three legs.
sock="PGHOST='$WORK/pg'"
legs=(
  --prepare "psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS fresh' -c 'CREATE DATABASE fresh' -c CHECKPOINT"
  -n floor "gunzip -c '$file' | $sock psql -X -q -1 -v ON_ERROR_STOP=1 -d fresh >/dev/null"
  --prepare "psql -X -q -d postgres -c CHECKPOINT"
  -n reference "$sock psql -X -q -d postgres -c 'DROP DATABASE refapp' -c 'CREATE DATABASE refapp' && gunzip -c '$file' | $sock psql -X -q -d refapp >/dev/null"
)
have_restore=0
if "$XTASK" restore --help >/dev/null 2>&1; then
  have_restore=1
  # Each run keeps the database it replaced; drop those (only names of that shape) before the next.
  drop_kept="psql -X -q -A -t -d postgres -c \"SELECT datname FROM pg_database WHERE datname LIKE 'station\\_before\\_restore\\_%'\" | while read -r d; do psql -X -q -d postgres -c \"DROP DATABASE \\\"\$d\\\" WITH (FORCE)\"; done"
  legs+=(
    --prepare "$drop_kept; psql -X -q -d postgres -c CHECKPOINT"
    -n xtask "${BENCH_XTASK_ENV:-} '$XTASK' restore --env bench '$object' --yes --json >>'$WORK/out/restore.jsonl' 2>>'$WORK/out/restore.err'"
  )
else
  echo "   (this build has no \`xtask restore\`: its leg is skipped)"
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Interleaved (floor, reference, xtask; floor, ...) and each leg after a CHECKPOINT: run back to back,
# a leg would pay the checkpoints and the drift of the legs before it.
echo "== hyperfine ($RUNS rounds of the legs in turn; load average $load_before)"
for i in $(seq "$RUNS"); do
  hyperfine --runs 1 --export-json "$WORK/out/h$i.json" "${legs[@]}"
done
jq -s '{results: ([.[].results[]] | group_by(.command)
        | map({command: .[0].command, mean: (map(.mean) | add / length),
               min: (map(.mean) | min), max: (map(.mean) | max)}))}' "$WORK"/out/h[0-9]*.json \
  >"$WORK/out/h.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Every leg restored the whole backup.
for db in fresh refapp $([ "$have_restore" = 0 ] || echo station); do
  n=$(psql -X -q -A -t -d "$db" -c "SELECT count(*) FROM events")
  [ "$n" -eq "$ROWS" ] || { echo "bench: $db has $n rows after the restore, the manifest says $ROWS" >&2; exit 1; }
done

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$WORK/out/h.json"; }
floor=$(mean floor) ref=$(mean reference)
echo
echo "== results ($ROWS rows, $(wc -c <"$file") bytes compressed, $(nproc) cores, mean of $RUNS;"
echo "   load average before $load_before, after $load_after)"
awk -v f="$floor" -v r="$ref" 'BEGIN {
  printf "  floor: gunzip | psql -1 into a fresh db   %7.2f s\n", f
  printf "  reference: drop + recreate + replay        %7.2f s  %5.2fx floor\n", r, r / f
}'
if [ "$have_restore" = 1 ]; then
  xt=$(mean xtask)
  awk -v f="$floor" -v x="$xt" 'BEGIN {
    printf "  xtask restore (end to end)                 %7.2f s  %5.2fx floor  (goal <= 1.15)\n", x, x / f
  }'
  # Downtime as the restore command reports it (any numeric field named like *downtime*; *_ms in ms).
  jq -r '[.. | objects | to_entries[] | select((.key | test("downtime")) and (.value | type == "number"))
         | if (.key | endswith("_ms")) then .value / 1000 else .value end]
         | if length > 0 then "  downtime (writers stopped -> healthy): \(map(. * 100 | round / 100) | join(", ")) s  (goal <= 5)"
           else "  downtime: not in `restore --json` output" end' "$WORK/out/restore.jsonl" | sort -u
fi
jq -r '.results[] | "  \(.command): \(.min * 100 | round / 100)..\(.max * 100 | round / 100) s over the rounds"' "$WORK/out/h.json"
if [ "$have_restore" = 1 ]; then
  # Where the xtask leg's time goes: each step's mean over the runs (from `restore --json`).
  echo "  xtask restore by step (mean):"
  jq -s -r '[.[].steps[]] | group_by(.step) | map({step: .[0].step, ms: (map(.duration_ms) | add / length)})
            | sort_by(-.ms) | .[] | "    \(.step)\t\(.ms / 1000 * 100 | round / 100) s"' "$WORK/out/restore.jsonl"
fi
# BENCH_RECORD=1: record the figures for the generated docs (infra/docs/restore-bench.json; then run
# `cargo xtask docs`), only from a complete run with the restore leg.
if [ "${BENCH_RECORD:-0}" = 1 ] && [ "$have_restore" = 1 ]; then
  jq -n --slurpfile runs "$WORK/out/restore.jsonl" \
    --arg on "$(date -u +%Y-%m-%d)" --argjson rows "$ROWS" --argjson bytes "$(wc -c <"$file")" \
    --argjson cores "$(nproc)" --argjson n "$RUNS" --arg load "$load_before" \
    --arg pg "$(psql -X -q -A -t -d postgres -c 'SHOW server_version' | cut -d' ' -f1)" \
    --argjson floor "$floor" --argjson ref "$ref" --argjson xt "$(mean xtask)" '{
      measured_on: $on, rows: $rows, compressed_bytes: $bytes, cores: $cores, runs: $n,
      load_before: $load, postgres: $pg,
      floor_s: ($floor * 100 | round / 100), reference_s: ($ref * 100 | round / 100),
      xtask_s: ($xt * 100 | round / 100),
      downtime_s: ([$runs[].downtime_ms] | add / length / 10 | round / 100),
      steps: ([$runs[].steps[]] | group_by(.step)
              | map([.[0].step, (map(.duration_ms) | add / length / 10 | round / 100)])
              | sort_by(-.[1]))
    }' >"$ROOT/infra/docs/restore-bench.json.tmp"
  mv "$ROOT/infra/docs/restore-bench.json.tmp" "$ROOT/infra/docs/restore-bench.json"
  echo "== recorded in infra/docs/restore-bench.json: run \`cargo xtask docs\`"
fi
