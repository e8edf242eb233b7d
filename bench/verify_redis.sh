#!/usr/bin/env bash
# Benchmark: `cargo xtask verify-redis --url` (the built binary) against `redis-cli INFO persistence`,
# same local redis-server (AOF on), same hyperfine run. Prints both medians and the ratio (target <= 2x).
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
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# A free loopback port: the first one nothing answers on.
port=
for p in $(seq 26379 26479); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port in 26379-26479" >&2; exit 3; }

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
