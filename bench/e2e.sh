#!/usr/bin/env bash
# Benchmark `cargo xtask e2e`: the content-hash image cache against the plain alternative of
# building the test images on every run (`--remove-images` removes them at the end, so each run
# of that command builds both images from scratch). Needs a Docker engine; prints the ratio.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
cargo build --quiet --package xtask
xtask=target/debug/xtask
if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers: nothing to benchmark" >&2
  exit 3
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# One untimed run builds the images if needed; hyperfine runs all of the first command's runs
# before the second command's, so the cached runs find them.
"$xtask" e2e >/dev/null
hyperfine --runs "$runs" --export-json "$out" \
  --command-name "e2e, images cached by content hash" \
  "$xtask e2e" \
  --command-name "e2e, images rebuilt every run" \
  --prepare "docker image rm -f station-e2e/redis:test station-e2e/postgres:test >/dev/null 2>&1 || true" \
  "$xtask e2e --remove-images"
jq -r '.results as $r | "ratio (rebuilt / cached): \(($r[1].mean / $r[0].mean) * 100 | round / 100)x; cached \($r[0].mean * 10 | round / 10)s, rebuilt \($r[1].mean * 10 | round / 10)s"' "$out"
