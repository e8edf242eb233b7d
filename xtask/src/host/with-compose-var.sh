# shellcheck shell=sh
# After compose-cli.sh: export `$1=<the Compose CLI words>` (the one decision), then run `$2...`.
set -eu
xtask_var=$1
shift
xtask_cli=$(xtask_compose_cli) || exit 3
if [ "$xtask_cli" = plugin ]; then
  xtask_words="docker compose"
else
  xtask_words=docker-compose
fi
export "$xtask_var=$xtask_words"
exec "$@"
