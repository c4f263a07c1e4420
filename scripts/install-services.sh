#!/usr/bin/env bash
# Installs the servers the tests start themselves: PostgreSQL and Redis (Debian packages).
# Idempotent; installs only what is missing. Needs root (or sudo) on a fresh machine.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start their own services; the tests start private instances instead.
$sudo service postgresql stop >/dev/null 2>&1 || true
$sudo service redis-server stop >/dev/null 2>&1 || true
