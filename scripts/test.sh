#!/usr/bin/env bash
# Runs Sluice's whole test suite on a fresh machine: installs RabbitMQ from Debian's packages
# when it is missing (the fault tests start nodes of their own), starts it when nothing listens
# on 127.0.0.1:5672, does the same for PostgreSQL on 127.0.0.1:5432 (scripts/postgres.sh: a
# role and database for the tests, SLUICE_TEST_POSTGRES), installs the
# official provider SDKs that tests/suite/sdk.rs runs against the simulator into a virtualenv,
# installs Debian's chromium and chromium-driver for the dashboard's browser tests
# (tests/suite/ui.rs) when missing, then `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

# Listening is not enough: a wedged node accepts TCP and never answers. Send the AMQP 0-9-1
# protocol header and wait for the broker's first byte.
broker_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 >/dev/null' 2>/dev/null
}

if broker_up && ! broker_answers; then
  echo "test.sh: RabbitMQ accepts connections but does not answer; restarting it" >&2
  pkill -9 -f 'beam.smp.*rabbit' || true
  sleep 2
fi

# Needed even when a broker already listens: tests/suite/faults.rs starts RabbitMQ nodes of its
# own to restart and to raise alarms on.
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "test.sh: installing rabbitmq-server from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rabbitmq-server >/dev/null
fi

if ! broker_up; then
  echo "test.sh: starting RabbitMQ" >&2
  rabbitmq-server -detached
  for _ in $(seq 1 120); do
    broker_up && break
    sleep 1
  done
  broker_up || { echo "test.sh: RabbitMQ did not start listening on 127.0.0.1:5672 within 120 s" >&2; exit 1; }
fi
for _ in $(seq 1 60); do
  broker_answers && break
  sleep 1
done
broker_answers || { echo "test.sh: RabbitMQ on 127.0.0.1:5672 does not answer the AMQP handshake" >&2; exit 1; }
echo "test.sh: RabbitMQ is listening on 127.0.0.1:5672" >&2

# Headless Chromium and its WebDriver for the dashboard's browser tests (tests/suite/ui.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test.sh: installing chromium and chromium-driver from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# PostgreSQL for the store tests that run on both store backends.
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
ensure_postgres

# The official OpenAI, Anthropic and Gemini SDKs for tests/suite/sdk.rs, in a virtualenv kept
# under the target directory and rebuilt only when tests/sdk/requirements.txt changes.
sdk_requirements=tests/sdk/requirements.txt
sdk_venv="${CARGO_TARGET_DIR:-target}/sdk-venv"
if ! cmp -s "$sdk_requirements" "$sdk_venv/requirements.txt" 2>/dev/null; then
  echo "test.sh: installing the provider SDKs into $sdk_venv" >&2
  command -v python3 >/dev/null 2>&1 || { echo "test.sh: python3 is needed for tests/suite/sdk.rs" >&2; exit 1; }
  if ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$sdk_venv"
  python3 -m venv "$sdk_venv"
  "$sdk_venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdk_requirements"
  cp "$sdk_requirements" "$sdk_venv/requirements.txt"
fi
SLUICE_SDK_PYTHON="$(cd "$sdk_venv" && pwd)/bin/python"
export SLUICE_SDK_PYTHON

cargo test --locked "$@"
