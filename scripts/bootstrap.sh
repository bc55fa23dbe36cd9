#!/usr/bin/env bash
# Make a fresh Debian/Ubuntu machine ready to run (and test) mailgate:
# system packages, PostgreSQL and RabbitMQ up, the Python environment, the schema.
#   scripts/bootstrap.sh            # for `make run`
#   scripts/bootstrap.sh --test     # also the real peers the tests talk to
#   scripts/bootstrap.sh --bench    # and the load generators of `make bench`
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var

WANT_TEST=0
WANT_BENCH=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1
[[ "${1:-}" == "--bench" ]] && WANT_TEST=1 && WANT_BENCH=1

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[bootstrap]\033[0m %s\n' "$*" >&2; exit 1; }

# --- system packages --------------------------------------------------------
packages=(postgresql rabbitmq-server openssl)
if (( WANT_TEST )); then
  # dovecot: the IMAP server tests sync against; postfix: smtp-sink/smtp-source;
  # swaks + libnet-ssleay-perl: a real SMTP client with STARTTLS.
  packages+=(dovecot-imapd dovecot-lmtpd postfix swaks libnet-ssleay-perl)
fi
(( WANT_BENCH )) && packages+=(wrk)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages; run: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  log "installing ${missing[*]}"
  # Keep package scripts from starting daemons on shared ports (25, 143, ...);
  # mailgate starts only what it needs, on its own terms.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL and RabbitMQ ------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not running on 127.0.0.1:5432; start it (pg_ctlcluster <version> main start)"
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 50); do port_open 5432 && break; sleep 0.2; done
fi
if ! port_open 5672; then
  [[ $(id -u) -eq 0 ]] || die "RabbitMQ is not running on 127.0.0.1:5672; start it (rabbitmq-server -detached)"
  log "starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 120); do port_open 5672 && break; sleep 0.5; done
  port_open 5672 || die "RabbitMQ did not start; see /var/log/rabbitmq"
fi

# --- Python environment -----------------------------------------------------
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install -q "uv==0.13.9" 2>/dev/null || python3 -m pip install -q --user "uv==0.13.9"
  export PATH="$HOME/.local/bin:$PATH"
fi
# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as on CI
# machines) every process would otherwise compile every module it imports at
# each start, seconds of CPU per service.
uv sync --frozen --quiet --compile-bytecode
uv run --frozen python -m compileall -q libs services >/dev/null

# --- database ---------------------------------------------------------------
ENV_FILE=var/mailgate.env
# It holds secrets (the database password, MAILGATE_SECRET): never readable by others.
(umask 077 && touch "$ENV_FILE")
chmod 600 "$ENV_FILE"
# shellcheck disable=SC1090
set -a; source "$ENV_FILE"; set +a
if [[ -z "${MAILGATE_DATABASE_URL:-}" ]]; then
  if psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    url="postgresql+asyncpg://postgres@127.0.0.1:5432/mailgate"
    psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='mailgate'" | grep -q 1 \
      || psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database mailgate'
  elif [[ $(id -u) -eq 0 ]]; then
    # Stock PostgreSQL wants a password over TCP: make a role for mailgate.
    pw=$(openssl rand -hex 16)
    su postgres -c "psql -qc \"do \\\$\\\$ begin create role mailgate login password '$pw'; exception when duplicate_object then alter role mailgate password '$pw'; end \\\$\\\$\""
    su postgres -c "psql -tAc \"select 1 from pg_database where datname='mailgate'\"" | grep -q 1 \
      || su postgres -c "createdb -O mailgate mailgate"
    url="postgresql+asyncpg://mailgate:$pw@127.0.0.1:5432/mailgate"
  else
    die "cannot reach PostgreSQL as postgres; set MAILGATE_DATABASE_URL in $ENV_FILE"
  fi
  echo "MAILGATE_DATABASE_URL=$url" >>"$ENV_FILE"
  export MAILGATE_DATABASE_URL=$url
fi
uv run --frozen mailgate migrate

# --- the key that seals account passwords -------------------------------------
# The services refuse the public default key; a developer's machine gets its own.
OLD_DEFAULT=mailgate-development-secret-change-me
if [[ -z "${MAILGATE_SECRET:-}" ]]; then
  log "generating MAILGATE_SECRET into $ENV_FILE"
  echo "MAILGATE_SECRET=$(openssl rand -hex 32)" >>"$ENV_FILE"
  # Credentials an earlier `make run` sealed with the old default key are re-sealed below.
  echo "MAILGATE_SECRET_PREVIOUS=$OLD_DEFAULT" >>"$ENV_FILE"
  set -a; source "$ENV_FILE"; set +a
fi
if [[ "${MAILGATE_SECRET_PREVIOUS:-}" == "$OLD_DEFAULT" ]]; then
  if uv run --frozen mailgate secret rotate >/dev/null; then
    sed -i "/^MAILGATE_SECRET_PREVIOUS=$OLD_DEFAULT\$/d" "$ENV_FILE"
    unset MAILGATE_SECRET_PREVIOUS
  else
    log "some credentials open with neither key; they stay readable with the old one until re-entered"
  fi
fi
log "ready"
