#!/usr/bin/env bash
# Install the system packages pgraft's PostgreSQL side needs, when they are missing:
# PostgreSQL 15 (server, client, PGXS headers), PL/Python 3, Debian's Python 3 with venv and
# headers (the interpreter plpython3u embeds, which the installer builds its venv from), and a
# C toolchain. Quiet and non-interactive (CI: root, no stdin). As a non-root user with packages
# missing it fails and says what to run; it never asks for a password.
set -euo pipefail

PACKAGES=(
    postgresql-15
    postgresql-client-15
    postgresql-plpython3-15
    postgresql-server-dev-15
    python3
    python3-venv
    python3-dev
    build-essential
    util-linux
    iproute2
    haproxy
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]}, and this is not a Debian/Ubuntu system with" \
         "apt-get; install PostgreSQL 15 with PL/Python 3 and its server headers by hand" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing packages: ${missing[*]}" >&2
    echo "system-deps: run as root to install them: sudo make system-deps" \
         "(or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -qq --no-install-recommends -o Dpkg::Use-Pty=0
          -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt-get update -qq >/dev/null
if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >/tmp/pgraft-system-deps.log 2>&1; then
    tail -n 40 /tmp/pgraft-system-deps.log >&2
    echo "system-deps: apt-get install failed (full log: /tmp/pgraft-system-deps.log); on a" \
         "release without PostgreSQL 15, add the PGDG apt repository first" >&2
    exit 1
fi
echo "system-deps: installed ${missing[*]}"
