#!/usr/bin/env bash
# Print the admin API token `make run` starts mailgate with (stdout: the token only).
# MAILGATE_ADMIN_TOKEN from the environment or var/mailgate.env wins; otherwise one
# is generated once and kept in var/admin-token (mode 600) for the next runs.
#   make run does:  token=$(scripts/admin-token.sh) && MAILGATE_ADMIN_TOKEN=$token scripts/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${MAILGATE_ADMIN_TOKEN:-}" && -f var/mailgate.env ]]; then
  # shellcheck disable=SC1091
  MAILGATE_ADMIN_TOKEN=$(set -a; source var/mailgate.env; printf '%s' "${MAILGATE_ADMIN_TOKEN:-}")
fi
if [[ -n "${MAILGATE_ADMIN_TOKEN:-}" ]]; then
  echo "admin token: MAILGATE_ADMIN_TOKEN as configured" >&2
  printf '%s\n' "$MAILGATE_ADMIN_TOKEN"
  exit 0
fi
file=var/admin-token
mkdir -p var
if [[ ! -s $file ]]; then
  # umask first: the token is never readable by others, not even for an instant.
  (umask 077 && openssl rand -hex 32 >"$file.tmp" && mv "$file.tmp" "$file")
  echo "generated a new admin token in $file" >&2
fi
chmod 600 "$file"
token=$(tr -d '[:space:]' <"$file")
port=${MAILGATE_API_PORT:-3000}
{
  echo "admin token (kept in $file): $token"
  echo "  try: curl -H \"Authorization: Bearer $token\" http://127.0.0.1:$port/v1/accounts"
} >&2
printf '%s\n' "$token"
