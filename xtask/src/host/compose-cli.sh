# shellcheck shell=sh
# Which Compose CLI runs here: the one decision, used on this machine (`ComposeCli::detect` runs
# `xtask_compose_cli`) and prepended to every script that calls `compose` on a server.
#   1. the `docker compose` plugin (any version: the plugin is v2+);
#   2. else a standalone `docker-compose` of version 2 or later;
#   3. Compose 1.x (the Python tool) or no Compose at all: a message and exit status 3.
# `XTASK_COMPOSE=plugin|standalone` restricts the choice to one form.

# Prints `plugin` or `standalone`; status 3 (with the reason on stderr) when neither is usable.
xtask_compose_cli() {
  if [ "${XTASK_COMPOSE:-}" != standalone ] && docker compose version >/dev/null 2>&1; then
    echo plugin
    return 0
  fi
  if [ "${XTASK_COMPOSE:-}" != plugin ] && command -v docker-compose >/dev/null 2>&1; then
    xtask_v=$(docker-compose version --short 2>/dev/null) || xtask_v=
    case $xtask_v in
      '')
        echo "docker-compose does not run (\`docker-compose version --short\` failed): install the Compose plugin (apt-get install docker-compose-plugin)" >&2
        return 3
        ;;
      1.*)
        echo "docker-compose $xtask_v is Compose 1.x, which is not supported: install the Compose plugin (apt-get install docker-compose-plugin) or a standalone docker-compose v2+" >&2
        return 3
        ;;
    esac
    echo standalone
    return 0
  fi
  echo "no Compose CLI: install the Compose plugin (apt-get install docker-compose-plugin) or a standalone docker-compose v2+" >&2
  return 3
}

xtask_compose=
# `compose ARGS...`: the chosen CLI with ARGS (decided on first use; exit 3 when there is none).
compose() {
  if [ -z "$xtask_compose" ]; then
    xtask_compose=$(xtask_compose_cli) || exit 3
  fi
  if [ "$xtask_compose" = plugin ]; then
    docker compose "$@"
  else
    docker-compose "$@"
  fi
}
