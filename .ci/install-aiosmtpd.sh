#!/usr/bin/env bash
# Installs aiosmtpd (PyPI), the SMTP server the notification tests start on 127.0.0.1
# (tests/smtp/sink.py), and openssl, which makes their private CA. Idempotent.
set -euo pipefail
if ! command -v openssl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
if python3 -c 'import aiosmtpd' 2>/dev/null; then
    echo "aiosmtpd already installed: $(python3 -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6'
python3 -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'
