set -e
if [ -f /data/appendonlydir/appendonly.aof.manifest ]; then
  echo "AOF present: nothing to convert"
  exit 0
fi
if [ ! -f /data/dump.rdb ]; then
  echo "no dump.rdb: Redis starts empty"
  exit 0
fi
s=/tmp/carry.sock
wait_for() {
  i=0
  until "$@"; do
    i=$((i + 1))
    [ "$i" -lt 600 ] || exit 1
    sleep 0.1
  done
}
info() { redis-cli -s "$s" info persistence; }
answers() { redis-cli -s "$s" ping 2>/dev/null | grep -q PONG; }
rewritten() {
  info | grep -q aof_rewrite_in_progress:0 &&
    info | grep -q aof_rewrite_scheduled:0 &&
    [ -f /data/appendonlydir/appendonly.aof.manifest ]
}
stopped() { [ ! -S "$s" ]; }
redis-server --port 0 --unixsocket "$s" --dir /data --appendonly no --daemonize yes --logfile /tmp/carry.log
wait_for answers
redis-cli -s "$s" config set appendonly yes | grep -q OK
wait_for rewritten
info | grep -q aof_last_bgrewrite_status:ok
redis-cli -s "$s" shutdown >/dev/null 2>&1 || true
wait_for stopped
redis-check-aof /data/appendonlydir/appendonly.aof.manifest
