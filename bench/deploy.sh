#!/usr/bin/env bash
# Benchmark: a local deploy's per-step timings and xtask's own overhead.
#
# Runs RUNS full deploys (default 5) of the local environment in a throwaway state directory (real
# PostgreSQL, redis-server, rclone remote; each run backs up, verifies, migrates, checks health and
# Redis) and prints, per step, the mean wall time and the share spent in child processes. xtask's
# overhead is everything that is not a child process: pipeline wall time minus the time spent in the
# tools it runs (measured around every spawn, `process::child_wall_time`). The same run also reports it
# against the whole `xtask` process as timed from outside (process start, argument parsing, loading
# the environments file included). Target: < 5 %.
#
#   bench/deploy.sh            # 5 runs
#   RUNS=10 bench/deploy.sh
set -Eeuo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
command -v jq >/dev/null || { echo "bench: jq is needed (apt-get install jq)" >&2; exit 3; }

cargo build -q -p xtask --bin xtask
XTASK=$PWD/target/debug/xtask

work=$(mktemp -d /tmp/xtask-bench-XXXXXX)
chmod 711 "$work"
envs="$work/environments.toml"
cleanup() {
  XTASK_ENVIRONMENTS="$envs" XTASK_ROOT="$PWD" "$XTASK" local down --purge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/migrations"
cp infra/migrations/*.sql "$work/migrations/"
cat > "$envs" <<TOML
[environments.local]
transport = "local"
description = "benchmark"
compose_file = "docker-compose.prod.yml"
compose_project = "station-bench"
state_dir = "$work/state"
database = "station"
db_user = "station"
migrations_dir = "$work/migrations"
migration_command = "builtin:sql-migrations"
[environments.local.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"
[environments.local.backup]
remote = "b2"
bucket = "station-backups"
prefix = "postgres"
TOML
export XTASK_ENVIRONMENTS="$envs" XTASK_ROOT="$PWD"
unset GITHUB_ACTIONS
for v in $(env | grep -o '^RCLONE_CONFIG_[A-Z0-9_]*' || true); do unset "$v"; done

# The first `local up` (initdb) is setup, not deploy: do it before measuring.
"$XTASK" local up >/dev/null

reports="$work/reports.jsonl"
: > "$reports"
for i in $(seq 1 "$RUNS"); do
  sha=$(printf '%07x%09x' "$i" "$RANDOM")
  # A new migration each run, so every deploy really migrates.
  printf 'CREATE TABLE bench_run_%s (id bigserial PRIMARY KEY, v text);\n' "$i" > "$work/migrations/$(printf '%04d' $((100 + i)))_bench_run_$i.sql"
  start=$(date +%s%N)
  out=$("$XTASK" deploy --sha "$sha" --json 2>"$work/stderr.$i") || { cat "$work/stderr.$i" >&2; exit 1; }
  end=$(date +%s%N)
  # The report is the last (pretty-printed) JSON document on stdout.
  printf '%s\n' "$out" | sed -n '/^{$/,$p' | jq -c --argjson wall_ms "$(( (end - start) / 1000000 ))" '. + {process_ms: $wall_ms}' >> "$reports"
done

echo "local deploy, $RUNS runs (mean per step)"
jq -rs '
  def mean(f): (map(f) | add) / length;
  (.[0].steps | map(.step)) as $steps
  | ["step", "wall ms", "in children ms", "xtask ms"],
    ($steps[] as $s
      | [ $s,
          (mean(.steps[] | select(.step == $s) | .duration_ms) | floor),
          (mean(.steps[] | select(.step == $s) | .child_ms) | floor),
          (mean(.steps[] | select(.step == $s) | .duration_ms - .child_ms) | floor) ])
  | @tsv' "$reports" | awk -F'\t' '{ printf "%-15s %9s %16s %10s\n", $1, $2, $3, $4 }'
echo
jq -rs '
  def mean(f): (map(f) | add) / length;
  (mean(.duration_ms)) as $wall
  | (mean([.steps[].child_ms] | add)) as $child
  | (mean(.process_ms)) as $proc
  | "pipeline wall     \($wall | floor) ms (mean)",
    "in child tools    \($child | floor) ms",
    "xtask overhead    \(($wall - $child) | floor) ms = \((100 * ($wall - $child) / $wall) * 100 | round / 100) % of the pipeline (target < 5 %)",
    "whole process     \($proc | floor) ms timed from outside; overhead incl. startup \(($proc - $child) | floor) ms = \((100 * ($proc - $child) / $proc) * 100 | round / 100) %"' "$reports"
