#!/usr/bin/env bash
# Benchmark: `cargo xtask backup` (dump + verify + upload + remote verification) against the plain
# alternatives in the same run, on a generated database of a few hundred MB:
#   floor  pg_dump > file
#   naive  pg_dump | gzip > file         (what most backup scripts do)
#   pigz   pg_dump | pigz > file         (the compressor alone, for reference)
#   xtask  target/debug/xtask backup     (what `cargo xtask backup` runs, without cargo's start-up)
# and the xtask process's own peak memory (VmHWM from /proc) at two database sizes, to show it stays
# flat as the database grows (the dump streams through pg_dump | pigz > file; xtask only reads lines).
#
# Usage: bench/backup.sh [ROWS]        (default 4000000 rows, ~400 MB plain dump)
# Needs: PostgreSQL server binaries, pg_dump, pigz, gzip, rclone, hyperfine, jq; root (the cluster
# runs as the `postgres` user) or the postgres user itself.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-4000000}
RUNS=${BENCH_RUNS:-3}
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
for t in hyperfine jq pg_dump pigz gzip rclone psql; do
  command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 3; }
done

PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
[ -x "$PGBIN/initdb" ] || { echo "bench: no /usr/lib/postgresql/*/bin/initdb" >&2; exit 3; }
WORK=$(mktemp -d /tmp/xtask-bench.XXXXXX)
chmod 711 "$WORK"
PORT=$((20000 + RANDOM % 20000))
PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building xtask"
cargo build -q -p xtask --bin xtask
XTASK=$ROOT/target/debug/xtask

echo "== cluster on 127.0.0.1:$PORT in $WORK"
mkdir -p "$WORK/pg" "$WORK/state" "$WORK/out"
printf '%s' "$PASSWORD" >"$WORK/pg/pw"
[ "$(id -u)" != 0 ] || chown -R postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U station --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/pw" --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
rm -f "$WORK/pg/pw"
printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$PORT" "$WORK/pg" \
  >>"$WORK/pg/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=station PGPASSWORD=$PASSWORD PGDATABASE=station
psql -X -q -d postgres -c "CREATE DATABASE station"

cat >"$WORK/environments.toml" <<EOF
[environments.bench]
transport = "local"
description = "benchmark"
compose_file = "docker-compose.prod.yml"
compose_project = "station-bench"
state_dir = "$WORK/state"
database = "station"
db_user = "station"
migrations_dir = "infra/migrations"
migration_command = "builtin:sql-migrations"
[environments.bench.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"
[environments.bench.backup]
remote = "b2"
bucket = "bench"
prefix = "postgres"
EOF
printf '{"pg_port": %s, "pg_password": "%s", "redis_port": 0, "redis_password": ""}' "$PORT" "$PASSWORD" \
  >"$WORK/state/state.json"
chmod 600 "$WORK/state/state.json"
export XTASK_ENVIRONMENTS=$WORK/environments.toml XTASK_ROOT=$ROOT

# generate ROWS: rows of ~100 bytes in the plain dump (ids, hex strings, timestamps: gzip ~2.3x).
generate() {
  psql -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS events" -c "CREATE TABLE events (
      id bigint PRIMARY KEY, account int, kind text, payload text, at timestamptz)" \
    -c "INSERT INTO events SELECT g, g % 9973, 'kind-' || (g % 17), md5(g::text) || md5((g * 7)::text),
        '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, $1) g"
}

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

echo "== hyperfine ($RUNS runs each)"
hyperfine --runs "$RUNS" --export-json "$WORK/out/h.json" \
  --prepare "rm -rf '$WORK/state/objects' '$WORK/out/dump.sql' '$WORK/out/dump.sql.gz'" \
  -n floor "pg_dump > '$WORK/out/dump.sql'" \
  -n naive "pg_dump | gzip > '$WORK/out/dump.sql.gz'" \
  -n pigz "pg_dump | pigz > '$WORK/out/dump.sql.gz'" \
  -n xtask "'$XTASK' backup --env bench --label bench >/dev/null 2>&1"

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$WORK/out/h.json"; }
floor=$(mean floor) naive=$(mean naive) pigz=$(mean pigz) xt=$(mean xtask)
echo
echo "== results (${dump_mb} MB plain dump, $ROWS rows, $(nproc) cores, mean of $RUNS)"
awk -v f="$floor" -v n="$naive" -v p="$pigz" -v x="$xt" 'BEGIN {
  printf "  pg_dump > file          %6.2f s\n", f
  printf "  pg_dump | gzip > file   %6.2f s\n", n
  printf "  pg_dump | pigz > file   %6.2f s\n", p
  printf "  xtask backup            %6.2f s  (dump + verify + upload + remote hash check)\n", x
  printf "  xtask / naive  = %.2fx  (target < 1: faster than the naive pipeline)\n", x / n
  printf "  xtask / floor  = %.2fx  (target <= 1.5)\n", x / f
  printf "  naive / xtask  = %.2fx speed-up\n", n / x
}'
echo "  xtask peak RSS (VmHWM of the xtask process): ${peak_small} kB at $small rows, ${peak_big} kB at $ROWS rows"
echo "  whole process tree peak (/usr/bin/time -v, includes pg_dump/pigz/rclone): ${tree_peak} kB"
