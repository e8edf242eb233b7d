#!/usr/bin/env bash
# Benchmark: `cargo xtask verify-redis --url` (the built binary) against `redis-cli INFO persistence`,
# same local redis-server (AOF on), same hyperfine run. Prints both medians and the ratio (target <= 2x).
# Then a primary with two replicas: three nodes (`--replicas discover`, asked in parallel) against the
# primary alone, with and without `--samples 3 --interval 200` (target: three nodes <= 1.5x one).
#
#   bench/verify_redis.sh                 # release build (default)
#   PROFILE=dev bench/verify_redis.sh     # the dev profile `cargo xtask` uses
#   RUNS=500 bench/verify_redis.sh
set -Eeuo pipefail
cd "$(dirname "$0")/.."

for tool in hyperfine redis-server redis-cli jq; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run infra/scripts/install-deps.sh" >&2; exit 3; }
done

profile=${PROFILE:-release}
runs=${RUNS:-300}
cargo build --quiet --profile "$profile" -p xtask
case "$profile" in
  dev) bin=target/debug/xtask ;;
  *) bin=target/$profile/xtask ;;
esac

dir=$(mktemp -d)
cleanup() {
  for pidfile in "$dir"/*.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  rm -rf "$dir"
}
trap cleanup EXIT

# A free loopback port above $1: the first one nothing answers on.
free_port() {
  for p in $(seq "$1" $(($1 + 100))); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port in $1-$(($1 + 100))" >&2; exit 3
}
port=$(free_port 26379)

redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync everysec \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done

# Sanity: the verifier says ok on this server.
"$bin" verify-redis --url "redis://127.0.0.1:$port" >/dev/null

hyperfine -N --warmup 20 --runs "$runs" --export-json "$dir/bench.json" \
  -n "redis-cli INFO persistence" "redis-cli -p $port INFO persistence" \
  -n "verify-redis --url ($profile)" "$bin verify-redis --url redis://127.0.0.1:$port"

jq -r '
  .results as $r
  | ($r[0].median * 1000) as $cli | ($r[1].median * 1000) as $ours
  | "median: redis-cli \($cli * 1000 | round / 1000) ms, verify-redis \($ours * 1000 | round / 1000) ms, ratio \(($ours / $cli) * 100 | round / 100)x (target <= 2x)"
' "$dir/bench.json"

# Three nodes: the same server as primary, two AOF replicas.
replicas=()
next=$((port + 1))
for name in r1 r2; do
  rport=$(free_port "$next"); next=$((rport + 1))
  mkdir -p "$dir/$name"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir/$name" --appendonly yes --appendfsync everysec \
    --replicaof 127.0.0.1 "$port" --daemonize yes --pidfile "$dir/$name.pid" --logfile "$dir/$name.log"
  replicas+=("$rport")
done
for _ in $(seq 200); do
  [ "$(redis-cli -p "$port" INFO replication | grep -c state=online)" = 2 ] && break; sleep 0.05
done
for r in "${replicas[@]}"; do
  for _ in $(seq 200); do
    redis-cli -p "$r" INFO persistence | grep -q aof_rewrite_in_progress:0 && break; sleep 0.05
  done
done
"$bin" verify-redis --url "redis://127.0.0.1:$port" --replicas discover >/dev/null

url="redis://127.0.0.1:$port"
sampled="--samples 3 --interval 200"
hyperfine -N --warmup 5 --runs "${SET_RUNS:-30}" --export-json "$dir/set.json" \
  -n "one node" "$bin verify-redis --url $url" \
  -n "three nodes" "$bin verify-redis --url $url --replicas discover" \
  -n "one node, 3 samples" "$bin verify-redis --url $url $sampled" \
  -n "three nodes, 3 samples" "$bin verify-redis --url $url --replicas discover $sampled"

jq -r '
  .results as $r
  | [$r[] | .median * 1000] as $m
  | "median: one node \($m[0] * 100 | round / 100) ms, three nodes \($m[1] * 100 | round / 100) ms, ratio \(($m[1] / $m[0]) * 100 | round / 100)x (target <= 1.5x)",
    "median with 3 samples 200 ms apart: one node \($m[2] | round) ms, three nodes \($m[3] | round) ms, ratio \(($m[3] / $m[2]) * 100 | round / 100)x (target <= 1.5x; asked one after the other it would be 3x)"
' "$dir/set.json"
