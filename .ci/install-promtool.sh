#!/usr/bin/env bash
# Installs promtool (Debian's prometheus package), which the metrics tests use to check the
# exposition format. Idempotent: does nothing when promtool is there. The package's service is
# kept from starting (there is no init system in CI, and the tests need no Prometheus server).
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    echo "promtool already installed: $(promtool --version 2>&1 | head -1)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
promtool --version 2>&1 | head -1
