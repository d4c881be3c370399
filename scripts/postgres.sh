#!/usr/bin/env bash
# PostgreSQL for the tests: `ensure_postgres` makes a server answer on 127.0.0.1:5432 (installing
# Debian's `postgresql` package and starting its cluster when nothing answers there), makes sure
# the role `sluice` (password `sluice`, allowed to create databases: each test makes its own) and
# its database exist, and exports SLUICE_TEST_POSTGRES. A SLUICE_TEST_POSTGRES already set is
# kept as it is. scripts/test.sh sources this file; run it alone to set up PostgreSQL and print
# the URL.
#
# Debian's packaging: installing `postgresql` creates the cluster <version>/main, its
# configuration in /etc/postgresql/<version>/main, owned by the system user `postgres`;
# `pg_ctlcluster <version> main start` starts it (as root it runs the server as `postgres`),
# with no init system needed. Its pg_hba.conf lets `postgres` in over the Unix socket by peer
# authentication, and TCP clients from 127.0.0.1 by password (scram-sha-256).

postgres_answers() {
  pg_isready -q -h 127.0.0.1 -p 5432 -t 5 2>/dev/null
}

# Runs psql as the database superuser: `postgres` over the Unix socket (Debian's peer
# authentication) when that system user exists, else as user postgres over TCP (a server
# started by other means, trusting local connections or given PGPASSWORD).
# Whether the role sluice logs in at $1 and may create the tests' databases.
sluice_role_ready() {
  [ "$(psql -X -qtA "$1" -c 'SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" = t ]
}

postgres_superuser_psql() {
  if id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@")
  else
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres "$@"
  fi
}

ensure_postgres() {
  if [ -n "${SLUICE_TEST_POSTGRES:-}" ]; then
    echo "postgres: using SLUICE_TEST_POSTGRES as set" >&2
    return 0
  fi
  if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1 \
    || { ! postgres_answers && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }; then
    echo "postgres: installing postgresql from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  if ! postgres_answers; then
    # The newest installed version; its cluster `main` (the package creates it; made here
    # when it was dropped).
    local version
    version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$version" ] || { echo "postgres: no PostgreSQL server is installed in /usr/lib/postgresql" >&2; return 1; }
    if [ ! -d "/etc/postgresql/$version/main" ]; then
      echo "postgres: creating the cluster $version/main" >&2
      pg_createcluster "$version" main --port 5432 >/dev/null
    fi
    echo "postgres: starting the cluster $version/main" >&2
    pg_ctlcluster "$version" main start
    for _ in $(seq 1 60); do
      postgres_answers && break
      sleep 1
    done
    postgres_answers || {
      echo "postgres: PostgreSQL $version did not answer on 127.0.0.1:5432 within 60 s (see /var/log/postgresql/postgresql-$version-main.log)" >&2
      return 1
    }
  fi
  local url="postgres://sluice:sluice@127.0.0.1:5432/sluice"
  if ! sluice_role_ready "$url"; then
    echo "postgres: creating the role and database sluice" >&2
    postgres_superuser_psql <<'SQL' || { echo "postgres: cannot create the role sluice (no superuser access)" >&2; return 1; }
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice') THEN
    ALTER ROLE sluice LOGIN CREATEDB PASSWORD 'sluice';
  ELSE
    CREATE ROLE sluice LOGIN CREATEDB PASSWORD 'sluice';
  END IF;
END
$$;
SELECT 'CREATE DATABASE sluice OWNER sluice'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sluice')
\gexec
SQL
    sluice_role_ready "$url" || {
      echo "postgres: the role sluice cannot connect to $url (see pg_hba.conf)" >&2
      return 1
    }
  fi
  SLUICE_TEST_POSTGRES="$url"
  export SLUICE_TEST_POSTGRES
  echo "postgres: PostgreSQL answers at postgres://sluice:***@127.0.0.1:5432/sluice" >&2
}

# Run alone: set up, then print the URL to export.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_postgres
  echo "SLUICE_TEST_POSTGRES=$SLUICE_TEST_POSTGRES"
fi
