# shellcheck shell=sh
# Runs inside the Redis container after redis-cli.sh (busybox `sh`: builtins, redis-cli and
# redis-check-aof only; Valkey's valkey-check-aof where redis-check-aof is absent).
# shellcheck disable=SC2154 # xtask_rcli comes from redis-cli.sh, prepended to this script
# $1 `full` or `sample`; $2 an optional port. Output: `@@xtask-begin NAME` ... `@@xtask-end RC`.
mode=$1
port=${2:-}
cli() {
  if [ -n "$port" ]; then
    "$xtask_rcli" --no-auth-warning -e -p "$port" "$@"
  else
    "$xtask_rcli" --no-auth-warning -e "$@"
  fi
}
part() {
  printf '@@xtask-begin %s\n%s\n@@xtask-end %s\n' "$1" "$2" "$3"
}
val() {
  printf '%s\n' "$2" | {
    while read -r k; do
      read -r v || break
      if [ "$k" = "$1" ]; then printf '%s' "$v"; break; fi
    done
  }
}
out=$(cli INFO persistence 2>&1); part persistence "$out" $?
[ "$mode" = sample ] && exit 0
out=$(cli INFO server 2>&1); part server "$out" $?
append=$(cli CONFIG GET 'append*' 2>&1); part config-append "$append" $?
out=$(cli CONFIG GET no-appendfsync-on-rewrite 2>&1); part config-rewrite "$out" $?
out=$(cli CONFIG GET stop-writes-on-bgsave-error 2>&1); part config-bgsave "$out" $?
dirs=$(cli CONFIG GET dir 2>&1); part config-dir "$dirs" $?
dir=$(val dir "$dirs")
[ -n "$dir" ] || dir=$(cd /proc/1/cwd 2>/dev/null && pwd -P)
adn=$(val appenddirname "$append"); [ -n "$adn" ] || adn=appendonlydir
afn=$(val appendfilename "$append"); [ -n "$afn" ] || afn=appendonly.aof
echo "@@xtask-begin aof"
target=
if [ -z "$dir" ]; then
  echo "unknown-dir"
elif [ -f "$dir/$adn/$afn.manifest" ]; then
  target="$dir/$adn/$afn.manifest"
  n=0
  while read -r w name rest; do
    [ "$w" = file ] || continue
    n=$((n + 1))
    [ -f "$dir/$adn/$name" ] || echo "missing $name"
  done < "$target"
  echo "files $n"
elif [ -f "$dir/$afn" ] && [ ! -d "$dir/$adn" ]; then
  target="$dir/$afn"
  echo "files 1"
else
  echo "absent $dir/$adn/$afn.manifest"
fi
if [ -n "$target" ]; then
  echo "path $target"
  chk=$(command -v redis-check-aof || command -v valkey-check-aof)
  if [ -z "$chk" ]; then
    echo "no-check-tool"
  else
    res=$("$chk" "$target" 2>&1) || res=$("$chk" "$target" 2>&1)
    rc=$?
    if [ "$rc" = 0 ]; then
      echo "check ok"
    else
      echo "check failed $rc"
      printf '%s\n' "$res" | while read -r l; do echo "out $l"; done
    fi
  fi
fi
echo "@@xtask-end 0"
