# shellcheck shell=sh
# redis-cli inside the Redis container with the container's own password: REDISCLI_AUTH is set
# from the container's REDIS_PASSWORD (so it is on no command line, ours or the container's), and
# `$xtask_rcli` is redis-cli, or valkey-cli where redis-cli is absent.
if [ -n "${REDIS_PASSWORD:-}" ] && [ -z "${REDISCLI_AUTH:-}" ]; then
  REDISCLI_AUTH=$REDIS_PASSWORD
  export REDISCLI_AUTH
fi
# shellcheck disable=SC2034 # used by the script this snippet is prepended to
xtask_rcli=$(command -v redis-cli || command -v valkey-cli || echo redis-cli)
