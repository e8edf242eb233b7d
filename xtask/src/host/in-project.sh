# shellcheck shell=sh
# A fixed command (the environment's migration command) in the environment's directory with its
# Compose settings exported, so a `docker compose ...` inside it addresses the project.
# $1 directory, $2 COMPOSE_FILE (`a.yml:b.yml`), $3 COMPOSE_PROJECT_NAME, $4 COMPOSE_ENV_FILES ('' =
# none), $5 STATION_TAG, then the command's words.
set -eu
cd "$1"
COMPOSE_FILE=$2
COMPOSE_PROJECT_NAME=$3
STATION_TAG=$5
export COMPOSE_FILE COMPOSE_PROJECT_NAME STATION_TAG
if [ -n "$4" ]; then
  COMPOSE_ENV_FILES=$4
  export COMPOSE_ENV_FILES
fi
shift 5
exec "$@"
