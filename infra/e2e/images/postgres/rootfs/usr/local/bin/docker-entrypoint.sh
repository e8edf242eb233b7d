#!/bin/sh
# Entrypoint of station-e2e/postgres:test (busybox sh, runs as the non-root user postgres).
# On an empty PGDATA: initdb with POSTGRES_USER as superuser and POSTGRES_PASSWORD read from a 0600
# file (never on a command line), create POSTGRES_DB, accept scram-sha-256 logins from any address
# (trust on the local socket, as the official image does); then exec postgres on all interfaces.
set -eu

if [ "$#" -eq 0 ] || [ "$1" = postgres ]; then
    [ "$#" -gt 0 ] && shift
    : "${PGDATA:=/var/lib/postgresql/data}"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
        user="${POSTGRES_USER:-postgres}"
        db="${POSTGRES_DB:-$user}"
        for name in "$user" "$db"; do
            case "$name" in
                '' | *[!a-z0-9_]* | [0-9]*)
                    echo "entrypoint: POSTGRES_USER/POSTGRES_DB must match [a-z_][a-z0-9_]*" >&2
                    exit 2
                    ;;
            esac
        done
        mkdir -p "$PGDATA"
        chmod 700 "$PGDATA"
        pwfile="$(mktemp)" # 0600; printf is a shell builtin: the password is on no argv
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >/dev/null
        rm -f "$pwfile"
        printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
        if [ "$db" != postgres ]; then
            # The temporary server listens on a private socket only: a healthcheck
            # (pg_isready on the default socket) must not see it and call the container ready.
            initsock="$(mktemp -d)"
            pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$initsock" \
                -w -t 60 start >/dev/null
            psql -X -q -v ON_ERROR_STOP=1 -h "$initsock" -U "$user" -d postgres \
                -c "CREATE DATABASE \"$db\""
            pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
            rmdir "$initsock"
        fi
        echo "entrypoint: initialized $PGDATA (database $db, owner $user)"
    fi
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
