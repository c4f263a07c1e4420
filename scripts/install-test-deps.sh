#!/usr/bin/env bash
# Installs the real clients the acceptance tests drive: Debian's chromium
# (tests/test_browser.py, through the playwright Python package of the dev
# extras), nginx (tests/test_nginx.py; nginx-light where the release has it)
# and the pinned npm packages of tests/js (tests/test_vercel_ai.py: `npm ci`).
# Idempotent: installs only what is missing. Needs root (or sudo) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Runs a command quietly; shows its output only if it fails.
quiet() { "$@" >"$log" 2>&1 || { cat "$log" >&2; return 1; }; }

has_nginx() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
available() { [ -n "$(apt-cache madison "$1" 2>/dev/null)" ]; }

need=()
command -v chromium >/dev/null || need+=(chromium)
has_nginx || need+=(nginx)
command -v npm >/dev/null || need+=(nodejs npm)

if [ ${#need[@]} -gt 0 ]; then
    quiet $sudo apt-get update -qq
    packages=()
    for name in "${need[@]}"; do
        if [ "$name" = nginx ] && available nginx-light; then
            name=nginx-light
        fi
        packages+=("$name")
    done
    quiet $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
    # The package may start a system nginx on port 80; the tests start their own.
    if [[ " ${need[*]} " == *" nginx "* ]]; then
        $sudo service nginx stop >/dev/null 2>&1 || true
    fi
fi

# The `ai` package pinned by tests/js/package-lock.json; again only when the lockfile changed.
cd tests/js
if [ ! -e node_modules/.package-lock.json ] ||
    [ package-lock.json -nt node_modules/.package-lock.json ] ||
    [ package.json -nt node_modules/.package-lock.json ]; then
    quiet npm ci --no-audit --no-fund --loglevel=error
fi
