#!/usr/bin/env bash
# Installs the MariaDB server and client tools the MySQL tests run against (tests/common/mysql.rs
# starts a private server on a temporary socket; the system service is never used). Idempotent:
# does nothing when the binaries are already there.
set -euo pipefail
if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
    if command -v mariadb-dump >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1; then
        echo "mariadb already installed: $(/usr/sbin/mariadbd --version 2>/dev/null || mariadbd --version)"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package scripts from starting the system service (there is no init system in CI).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version
