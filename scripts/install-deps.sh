#!/usr/bin/env bash
# Installs every Debian package eventsink needs to build, test and run its demo.
# Idempotent: packages already present are skipped without touching apt.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang-format
  librdkafka-dev liblua5.4-dev lua5.4 lua-cjson libmicrohttpd-dev libpq-dev libssl-dev
  libcurl4-openssl-dev
  postgresql postgresql-client
  libcmocka-dev
  kcat curl jq python3 python3-venv openssl wrk tzdata iproute2 procps
  clang libclang-rt-14-dev valgrind
  prometheus chromium
  default-jre-headless maven
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or install them) first" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
