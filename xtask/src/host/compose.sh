# shellcheck shell=sh
# A Compose command in the environment's directory (after compose-cli.sh, which defines `compose`).
# $1 the directory, $2 the release tag for STATION_TAG ('' leaves it as the env file says), then the
# Compose arguments (`-p P -f F... [--env-file E] SUBCOMMAND...`).
set -eu
cd "$1"
if [ -n "$2" ]; then
  STATION_TAG=$2
  export STATION_TAG
fi
shift 2
compose "$@"
