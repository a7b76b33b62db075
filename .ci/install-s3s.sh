#!/usr/bin/env bash
# Installs the S3 server the tests run against (s3s-fs 0.14.1: later versions need a newer
# Rust), unless it is already installed. Idempotent; called by .ci/run.
set -euo pipefail
want="0.14.1"
bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
if command -v s3s-fs >/dev/null 2>&1; then bin=$(command -v s3s-fs); fi
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$want"; then
    echo "s3s-fs $want: already installed ($bin)"
    exit 0
fi
cargo install "s3s-fs@$want" --features binary --locked
