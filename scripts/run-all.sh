#!/usr/bin/env bash
# Start every mailgate service in the foreground with prefixed logs; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a
# shellcheck disable=SC1091
[[ -f var/mailgate.env ]] && source var/mailgate.env
set +a
# STARTTLS on the SMTP door with a self-signed certificate, unless one is configured.
if [[ -z "${MAILGATE_SMTP_TLS_CERT:-}" ]]; then
  set -a; eval "$(scripts/gen-dev-cert.sh)"; set +a
fi
# Local development: let a webhook receiver on localhost work out of the box.
export MAILGATE_WEBHOOKS_ALLOW_PRIVATE=${MAILGATE_WEBHOOKS_ALLOW_PRIVATE:-true}
# The MX door (inbound routes) on loopback, so the README's swaks walkthrough works locally.
export MAILGATE_MX_HOST=${MAILGATE_MX_HOST:-127.0.0.1}
export MAILGATE_MX_PORT=${MAILGATE_MX_PORT:-2526}

services=(api smtp-ingress sender webhooks imap-sync)
colors=(32 36 33 35 34)
pids=()

stop() {
  trap - INT TERM
  echo "stopping mailgate..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM

for i in "${!services[@]}"; do
  name=${services[$i]}
  color=${colors[$i]}
  (
    exec > >(while IFS= read -r line; do printf '\033[%sm%-13s|\033[0m %s\n' "$color" "$name" "$line"; done) 2>&1
    exec .venv/bin/mailgate-"$name"
  ) &
  pids+=($!)
done
sleep 2
echo
echo "mailgate is running: API http://${MAILGATE_API_HOST:-127.0.0.1}:${MAILGATE_API_PORT:-3000} (docs at /docs), SMTP ${MAILGATE_SMTP_HOST:-127.0.0.1}:${MAILGATE_SMTP_PORT:-2525}, MX door ${MAILGATE_MX_HOST}:${MAILGATE_MX_PORT}. Ctrl-C stops."
wait -n "${pids[@]}" || true
stop
