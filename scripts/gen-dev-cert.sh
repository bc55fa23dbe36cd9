#!/usr/bin/env bash
# Self-signed certificate for local STARTTLS on the SMTP ingress (development only).
# Writes var/dev-cert.pem and var/dev-key.pem unless they already exist, and
# prints the two MAILGATE_SMTP_TLS_* variables that point the service at them.
#   usage: scripts/gen-dev-cert.sh [output-dir]   (default: var)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-var}
cert="$dir/dev-cert.pem"
key="$dir/dev-key.pem"
mkdir -p "$dir"
if [[ ! -s "$cert" || ! -s "$key" ]]; then
  command -v openssl >/dev/null || { echo "gen-dev-cert: openssl is required" >&2; exit 1; }
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -keyout "$key" -out "$cert" 2>/dev/null
  chmod 600 "$key"
  echo "gen-dev-cert: wrote $cert and $key" >&2
fi
echo "MAILGATE_SMTP_TLS_CERT=$(cd "$dir" && pwd)/dev-cert.pem"
echo "MAILGATE_SMTP_TLS_KEY=$(cd "$dir" && pwd)/dev-key.pem"
