# shellcheck shell=sh
# The host side of `cargo xtask backup schedule` and of `backup status`'s schedule line:
#   schedule.sh ACTION ENV JOBDIR [ARGS...]
#   probe                   via=systemd|cron (systemd when it runs as PID 1), dir=<absolute JOBDIR>
#   put FILE MODE           stdin -> JOBDIR/FILE atomically, only when different: "written|unchanged <path>"
#   install-systemd         JOBDIR's station-backup-ENV.{service,timer} -> the unit directory (system
#                           units as root, user units otherwise), daemon-reload when changed, timer enabled
#   install-cron LINE       the crontab line tagged "# station-backup:ENV" replaced (others untouched)
#   remove                  timer, units, crontab line and the job's files removed (the log is kept)
#   status                  via=..., next=/line=, and the last run (last.result=, last.stage=, ...)
set -eu
action=$1
env=$2
dir=$3
shift 3
unit="station-backup-$env"
marker="# station-backup:$env"
if [ "$(id -u)" = 0 ]; then
  unitdir=/etc/systemd/system
  sc() { systemctl "$@"; }
else
  unitdir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  sc() { systemctl --user "$@"; }
fi
has_cron_line() { command -v crontab >/dev/null 2>&1 && crontab -l 2>/dev/null | grep -qF -- "$marker"; }
cron_rest() { crontab -l 2>/dev/null | grep -vF -- "$marker" || true; }

case $action in
probe)
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo via=systemd; else echo via=cron; fi
  case $dir in
    /*) echo "dir=$dir" ;;
    *) echo "dir=$HOME/$dir" ;;
  esac
  ;;
put)
  umask 077
  mkdir -p "$dir"
  f="$dir/$1"
  tmp="$dir/.$1.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then
    echo "unchanged $f"
  else
    mv -f "$tmp" "$f"
    echo "written $f"
  fi
  ;;
install-systemd)
  mkdir -p "$unitdir"
  changed=0
  for u in "$unit.service" "$unit.timer"; do
    if ! cmp -s "$dir/$u" "$unitdir/$u" 2>/dev/null; then
      cp "$dir/$u" "$unitdir/.$u.tmp.$$"
      mv -f "$unitdir/.$u.tmp.$$" "$unitdir/$u"
      changed=1
      echo "written $unitdir/$u"
    fi
  done
  [ "$changed" = 0 ] || sc daemon-reload
  if sc is-enabled --quiet "$unit.timer" 2>/dev/null && sc is-active --quiet "$unit.timer"; then
    [ "$changed" = 1 ] || echo "unchanged $unit.timer (enabled)"
  else
    sc enable --now "$unit.timer"
    echo "enabled $unit.timer"
  fi
  ;;
install-cron)
  command -v crontab >/dev/null 2>&1 || { echo "crontab is not installed (Debian package: cron)" >&2; exit 3; }
  cur=$(crontab -l 2>/dev/null) || cur=""
  rest=$(cron_rest)
  if [ -n "$rest" ]; then new="$rest
$1"; else new=$1; fi
  if [ "$cur" = "$new" ]; then
    echo "unchanged crontab line"
  else
    printf '%s\n' "$new" | crontab -
    echo "written crontab line"
  fi
  ;;
remove)
  if [ -f "$unitdir/$unit.timer" ] || [ -f "$unitdir/$unit.service" ]; then
    sc disable --now "$unit.timer" 2>/dev/null || true
    rm -f "$unitdir/$unit.timer" "$unitdir/$unit.service"
    sc daemon-reload 2>/dev/null || true
    echo "removed $unit.timer and $unit.service"
  fi
  if has_cron_line; then
    rest=$(cron_rest)
    if [ -n "$rest" ]; then printf '%s\n' "$rest" | crontab -; else crontab -r; fi
    echo "removed crontab line"
  fi
  for f in nightly.sh nightly.env "$unit.service" "$unit.timer"; do
    if [ -e "$dir/$f" ]; then rm -f "$dir/$f" && echo "removed $dir/$f"; fi
  done
  ;;
status)
  if [ -f "$unitdir/$unit.timer" ]; then
    echo via=systemd
    echo "next=$(sc show -p NextElapseUSecRealtime --value "$unit.timer" 2>/dev/null || true)"
  elif has_cron_line; then
    echo via=cron
    echo "line=$(crontab -l 2>/dev/null | grep -F -- "$marker" | tail -n 1)"
  else
    echo via=none
  fi
  [ ! -f "$dir/nightly.last" ] || sed 's/^/last./' "$dir/nightly.last"
  ;;
*)
  echo "schedule.sh: unknown action $action" >&2
  exit 2
  ;;
esac
