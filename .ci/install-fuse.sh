#!/usr/bin/env bash
# Installs fuse3 (Debian's package: fusermount3 and the kernel module's /dev/fuse setup), which
# the `cairn mount` tests use to mount on real FUSE. Idempotent: does nothing when fusermount3
# is there. cairn itself needs no libfuse (fuser mounts by mount(2) as root, else through
# fusermount3).
set -euo pipefail
if command -v fusermount3 >/dev/null 2>&1; then
    echo "fuse3 already installed: $(fusermount3 --version 2>&1 | head -1)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
fusermount3 --version 2>&1 | head -1
