# shellcheck shell=sh
# Bounded health polling from the server: $1 URL, $2 tries, 2 s apart.
set -u
url=$1
tries=$2
i=0
while [ "$i" -lt "$tries" ]; do
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 5 "$url" && {
      echo "healthy: $url"
      exit 0
    }
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O /dev/null -T 5 "$url" && {
      echo "healthy: $url"
      exit 0
    }
  else
    echo "neither curl nor wget on the server" >&2
    exit 3
  fi
  i=$((i + 1))
  sleep 2
done
echo "no healthy answer from $url after $tries tries" >&2
exit 1
