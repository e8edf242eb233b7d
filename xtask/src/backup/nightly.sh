#!/usr/bin/env bash
# shellcheck shell=bash
# The nightly job `cargo xtask backup schedule` installs (systemd timer or crontab line):
#   nightly.sh WORKDIR JOBDIR [PING_URL]
# Runs WORKDIR/infra/scripts/backup-db.sh with the variables of JOBDIR/nightly.env (KEY=VALUE lines,
# exported as they are, never evaluated; LABEL=nightly), appends everything to JOBDIR/nightly.log and
# writes the outcome to JOBDIR/nightly.last (result=, stage=, rc=, at=). With PING_URL it reports to a
# dead-man's-switch endpoint the healthchecks.io way: PING_URL/start, PING_URL on success,
# PING_URL/fail (body: the failed stage) on failure; each ping is bounded by BACKUP_PING_TIMEOUT seconds
# (default 10) and its failure is logged, never the job's: a dead monitor does not fail a backup.
# Exit status: backup-db.sh's.
set -uo pipefail
umask 077

work=$1
dir=$2
url=${3:-}
log="$dir/nightly.log"
exec >>"$log" 2>&1

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
say() { printf 'backup-nightly: %s %s\n' "$(now)" "$*"; }

ping_monitor() { # ping_monitor SUFFIX [BODY]
  [ -n "$url" ] || return 0
  local t=${BACKUP_PING_TIMEOUT:-10} target="$url$1"
  if command -v curl >/dev/null 2>&1; then
    if curl -fsS -o /dev/null -m "$t" --retry 1 --data-raw "${2:-}" -- "$target"; then return 0; fi
  elif command -v wget >/dev/null 2>&1; then
    if wget -q -O /dev/null -T "$t" -t 2 --post-data="${2:-}" -- "$target"; then return 0; fi
  else
    say "ping skipped: neither curl nor wget is installed"
    return 0
  fi
  say "ping ${1:-success} to the monitor failed (the backup is not affected)"
  return 0
}

say "start"
ping_monitor /start

while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    '' | '#'*) ;;
    [A-Za-z_]*=*) export "${line?}" ;;
    *) say "ignoring a malformed line of $dir/nightly.env" ;;
  esac
done <"$dir/nightly.env"

err=$(mktemp)
trap 'rm -f "$err"' EXIT
cd "$work" && bash infra/scripts/backup-db.sh 2> >(tee "$err" >&2)
rc=$?
wait
stage=$(sed -n 's/.*FAILED stage=\([A-Za-z0-9_-]*\).*/\1/p' "$err" | tail -n 1)
[ "$rc" -eq 0 ] || [ -n "$stage" ] || stage=unknown

tmp="$dir/.nightly.last.$$"
if [ "$rc" -eq 0 ]; then
  printf 'result=ok\nrc=0\nat=%s\n' "$(now)" >"$tmp"
  say "ok"
  ping_monitor ""
else
  printf 'result=failed\nrc=%s\nstage=%s\nat=%s\n' "$rc" "$stage" "$(now)" >"$tmp"
  say "FAILED (exit $rc, stage $stage)"
  ping_monitor /fail "stage=$stage"
fi
mv -f "$tmp" "$dir/nightly.last"
exit "$rc"
