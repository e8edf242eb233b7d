# shellcheck shell=sh
# Preflight on the server (after compose-cli.sh): docker, the one Compose CLI decision, the env
# file, free disk. $1 remote dir, $2 env file ('' = none), $3 KiB needed.
# Exit 3 missing tool, 2 missing env file, 1 not enough disk.
set -eu
dir=$1
envfile=$2
min_kb=$3
command -v docker >/dev/null 2>&1 || {
  echo "docker is not installed on the server (apt-get install docker.io)" >&2
  exit 3
}
cli=$(xtask_compose_cli) || exit 3
mkdir -p "$dir"
if [ -n "$envfile" ] && [ ! -r "$dir/$envfile" ]; then
  echo "$dir/$envfile is missing on the server: copy it there (mode 0600)" >&2
  exit 2
fi
avail=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
if [ "$avail" -lt "$min_kb" ]; then
  echo "only ${avail} KiB free in $dir (need ${min_kb})" >&2
  exit 1
fi
echo "server ok: docker, compose, env file, ${avail} KiB free (Compose CLI: $cli)"
