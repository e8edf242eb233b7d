# Shared by bench/backup.sh and bench/restore.sh (sourced, with ROOT set to the repository root):
# builds xtask, starts a throwaway PostgreSQL cluster on a random loopback port (as `postgres` when
# root) with database `station`, writes an environments file with the `local`-transport environment
# `bench` (rclone remote `b2` = a directory under $WORK/state), exports libpq's variables, and defines
# `as_pg`, `generate ROWS` and the EXIT trap that stops the cluster and removes $WORK.
# shellcheck shell=bash
PGBIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
[ -x "$PGBIN/initdb" ] || { echo "bench: no /usr/lib/postgresql/*/bin/initdb" >&2; exit 3; }
WORK=$(mktemp -d /tmp/xtask-bench.XXXXXX)
chmod 711 "$WORK"
PORT=$((20000 + RANDOM % 20000))
PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building xtask"
cargo build -q -p xtask --bin xtask
export XTASK=$ROOT/target/debug/xtask

echo "== cluster on 127.0.0.1:$PORT in $WORK"
# Its Unix socket also where xtask looks for a `local` environment's (`<state_dir>/postgres/run`):
# restore's replay role logs in there.
mkdir -p "$WORK/pg" "$WORK/state/postgres/run" "$WORK/out"
printf '%s' "$PASSWORD" >"$WORK/pg/pw"
[ "$(id -u)" != 0 ] || chown -R postgres "$WORK/pg" "$WORK/state/postgres"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U station --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/pw" --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
rm -f "$WORK/pg/pw"
printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s, %s'\n" "$PORT" "$WORK/pg" "$WORK/state/postgres/run" \
  >>"$WORK/pg/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=station PGPASSWORD=$PASSWORD PGDATABASE=station
psql -X -q -d postgres -c "CREATE DATABASE station"

cat >"$WORK/environments.toml" <<EOF
[environments.bench]
transport = "local"
description = "benchmark"
compose_file = "docker-compose.prod.yml"
compose_project = "station-bench"
state_dir = "$WORK/state"
database = "station"
db_user = "station"
migrations_dir = "infra/migrations"
migration_command = "builtin:sql-migrations"
[environments.bench.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"
[environments.bench.backup]
remote = "b2"
bucket = "bench"
prefix = "postgres"
EOF
printf '{"pg_port": %s, "pg_password": "%s", "redis_port": 0, "redis_password": ""}' "$PORT" "$PASSWORD" \
  >"$WORK/state/state.json"
chmod 600 "$WORK/state/state.json"
export XTASK_ENVIRONMENTS=$WORK/environments.toml XTASK_ROOT=$ROOT

# generate ROWS: rows of ~100 bytes in the plain dump (ids, hex strings, timestamps: gzip ~2.3x).
generate() {
  psql -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS events" -c "CREATE TABLE events (
      id bigint PRIMARY KEY, account int, kind text, payload text, at timestamptz)" \
    -c "INSERT INTO events SELECT g, g % 9973, 'kind-' || (g % 17), md5(g::text) || md5((g * 7)::text),
        '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, $1) g"
}

