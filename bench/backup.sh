#!/usr/bin/env bash
# Benchmark: `cargo xtask backup` (dump + verify + upload + remote verification) against the plain
# alternatives in the same run, on a generated database of a few hundred MB:
#   floor  pg_dump > file
#   naive  pg_dump | gzip > file         (what most backup scripts do)
#   pigz   pg_dump | pigz -1 > file      (the compressors alone, for reference)
#   igzip  pg_dump | igzip -1 -T N > file
#   xtask        target/debug/xtask backup   (what `cargo xtask backup` runs, without cargo's start-up:
#                snapshot + counts, dump, one-pass integrity/trailer check, upload, remote check, manifest)
#                with the default compressor (igzip when installed)
#   xtask-pigz   the same with BACKUP_GZIP=pigz (the previous default), for the ratio side by side
# and the xtask process's own peak memory (VmHWM from /proc) at two database sizes, to show it stays
# flat as the database grows (the dump streams through pg_dump | pigz > file; xtask only reads lines).
#
# Usage: bench/backup.sh [ROWS]        (default 4000000 rows, ~400 MB plain dump)
# Needs: PostgreSQL server binaries, pg_dump, igzip (Debian: isal), pigz, gzip, rclone, hyperfine, jq;
# root (the cluster runs as the `postgres` user) or the postgres user itself. The machine's load average
# is printed before and after: on a shared machine, repeat when it is quiet.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-4000000}
RUNS=${BENCH_RUNS:-3}
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
for t in hyperfine jq pg_dump igzip pigz gzip rclone psql; do
  command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 3; }
done

# shellcheck source=bench/pg-bench.sh
source "$ROOT/bench/pg-bench.sh"

# peak RSS (VmHWM) of the xtask process itself, polled from /proc while it runs.
xtask_peak_kb() {
  rm -rf "$WORK/state/objects"
  "$XTASK" backup --env bench --label "peak-$1" >/dev/null 2>&1 &
  local pid=$! peak=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -z "$v" ] || peak=$v
    sleep 0.05
  done
  wait "$pid"
  echo "$peak"
}

small=$((ROWS / 10))
echo "== generating $small rows"
generate "$small"
peak_small=$(xtask_peak_kb small)

echo "== generating $ROWS rows"
generate "$ROWS"
dump_mb=$(pg_dump | wc -c | awk '{printf "%.0f", $1 / 1048576}')
peak_big=$(xtask_peak_kb big)
rm -rf "$WORK/state/objects"
/usr/bin/time -v -o "$WORK/out/time.txt" "$XTASK" backup --env bench --label tree >/dev/null 2>&1
tree_peak=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/out/time.txt")
echo "   plain dump: ${dump_mb} MB"

size_of() { wc -c <"$1" | awk '{printf "%.1f", $1 / 1048576}'; }
pg_dump | pigz -1 >"$WORK/out/p.gz"
pg_dump | igzip -1 -T "$(nproc)" >"$WORK/out/i.gz"
pigz_mb=$(size_of "$WORK/out/p.gz") igzip_mb=$(size_of "$WORK/out/i.gz")
gzip -t "$WORK/out/i.gz"
rm -f "$WORK/out/p.gz" "$WORK/out/i.gz"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== hyperfine ($RUNS runs each; load average $load_before)"
hyperfine --runs "$RUNS" --export-json "$WORK/out/h.json" \
  --prepare "rm -rf '$WORK/state/objects' '$WORK/out/dump.sql' '$WORK/out/dump.sql.gz'" \
  -n floor "pg_dump > '$WORK/out/dump.sql'" \
  -n naive "pg_dump | gzip > '$WORK/out/dump.sql.gz'" \
  -n pigz "pg_dump | pigz -1 > '$WORK/out/dump.sql.gz'" \
  -n igzip "pg_dump | igzip -1 -T $(nproc) > '$WORK/out/dump.sql.gz'" \
  -n xtask "'$XTASK' backup --env bench --label bench >/dev/null 2>&1" \
  -n xtask-pigz "BACKUP_GZIP=pigz '$XTASK' backup --env bench --label bench >/dev/null 2>&1"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$WORK/out/h.json"; }
floor=$(mean floor) naive=$(mean naive) pigz=$(mean pigz) igzip=$(mean igzip) xt=$(mean xtask)
xtp=$(mean xtask-pigz)
echo
echo "== results (${dump_mb} MB plain dump, $ROWS rows, $(nproc) cores, mean of $RUNS;"
echo "   load average before $load_before, after $load_after)"
awk -v f="$floor" -v n="$naive" -v p="$pigz" -v i="$igzip" -v x="$xt" -v xp="$xtp" \
  -v pm="$pigz_mb" -v im="$igzip_mb" 'BEGIN {
  printf "  pg_dump > file                 %6.2f s\n", f
  printf "  pg_dump | gzip > file          %6.2f s\n", n
  printf "  pg_dump | pigz -1 > file       %6.2f s  %6.2fx floor  (%s MB)\n", p, p / f, pm
  printf "  pg_dump | igzip -1 > file      %6.2f s  %6.2fx floor  (%s MB)\n", i, i / f, im
  printf "  xtask backup (igzip)           %6.2f s  %6.2fx floor  (goal <= 2.0)\n", x, x / f
  printf "  xtask backup (BACKUP_GZIP=pigz)%6.2f s  %6.2fx floor\n", xp, xp / f
  printf "  xtask igzip / xtask pigz = %.2fx;  xtask / naive = %.2fx\n", x / xp, x / n
}'
echo "  xtask peak RSS (VmHWM of the xtask process): ${peak_small} kB at $small rows, ${peak_big} kB at $ROWS rows"
echo "  whole process tree peak (/usr/bin/time -v, includes pg_dump/pigz/rclone): ${tree_peak} kB"
