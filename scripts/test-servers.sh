# shellcheck shell=bash
# Real database servers for the integration tests, on loopback, with data in a temp dir.
#
#   source scripts/test-servers.sh
#   trap stop_test_servers EXIT
#   start_test_servers
#
# start_test_servers installs (apt) only the packages that are missing, starts MariaDB and
# PostgreSQL on free loopback ports, creates a test database and a user with a random
# password on each, writes an ODBCSYSINI dir naming the ODBC drivers and exports:
#   ESCR_TEST_MYSQL_URL           mysql://user:pass@127.0.0.1:port/db
#   ESCR_TEST_MARIADB_ODBC        ODBC connection string to the MariaDB server
#   ESCR_TEST_PG_ODBC             ODBC connection string to the PostgreSQL server
#   ESCR_TEST_PG_URL              postgres://user:pass@127.0.0.1:port/db (native clients)
#   ESCR_TEST_SQLITE_ODBC_DRIVER  the SQLite3 ODBC driver's name in odbcinst.ini
#   ESCR_TEST_MYSQL_CTL           `$ESCR_TEST_MYSQL_CTL stop|start` restarts MariaDB mid-test
#   ESCR_TEST_MYSQL_TLS_CA        PEM of the test CA that signed MariaDB's certificate (TLS is
#                                 offered, not required)
#   ODBCSYSINI                    the project's own odbcinst.ini dir
# Sourced by scripts/test-all.sh under `set -euo pipefail`: every function returns
# instead of exiting and tolerates that shell option set.

# chromium: the browser checks of tests/browser (GraphiQL, examples/portal; node and npm
# come with the machine); python3-venv: the reporting example's pinned pip packages.
ESCR_TEST_PACKAGES="mariadb-server-core mariadb-client-core postgresql unixodbc odbc-mariadb odbc-postgresql libsqliteodbc freetds-bin openssl chromium python3-venv haproxy"

_escr_log() { echo "test-servers: $*" >&2; }

# Packages not yet installed.
_escr_missing_packages() {
  local p missing=""
  local status
  for p in $ESCR_TEST_PACKAGES; do
    # Captured, not piped into `grep -q`: under pipefail an early-exiting grep can fail
    # the pipeline.
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
      missing="$missing $p"
    fi
  done
  echo "$missing"
}

install_test_packages() {
  local missing
  missing=$(_escr_missing_packages)
  [ -z "${missing// /}" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    _escr_log "missing packages:$missing (run as root to install them)"
    return 1
  fi
  _escr_log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    # A fresh machine has no package lists yet: update once, then try again.
    apt-get update -qq >/dev/null || return 1
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || return 1
  fi
}

# playwright-core for the browser checks, from tests/browser's lockfile (no browser
# download: they drive /usr/bin/chromium).
install_browser_checks() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
  [ -d "$dir/node_modules/playwright-core" ] && return 0
  if ! command -v npm >/dev/null; then
    _escr_log "npm not found: the browser checks need node (20 or later) and npm"
    return 1
  fi
  _escr_log "installing tests/browser's npm packages"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null) || return 1
}

# The reporting example's virtualenv with its pinned requirements (examples/reporting).
install_reporting_venv() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/examples/reporting"
  if [ -x "$dir/.venv/bin/python" ] &&
    cmp -s "$dir/requirements.txt" "$dir/.venv/requirements.installed"; then
    return 0
  fi
  _escr_log "installing examples/reporting's pip packages"
  rm -rf "$dir/.venv"
  python3 -m venv "$dir/.venv" || return 1
  "$dir/.venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt" || return 1
  cp "$dir/requirements.txt" "$dir/.venv/requirements.installed"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
_escr_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A loopback port nobody listens on (a small race with other starters is acceptable here).
_escr_free_port() {
  local port i
  for i in $(seq 1 200); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! _escr_port_open "$port"; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Wait until port $1 accepts connections, at most $2 seconds; $3 names the server for errors.
_escr_wait_port() {
  local port=$1 limit=$2 name=$3 i
  for i in $(seq 1 $((limit * 20))); do
    _escr_port_open "$port" && return 0
    sleep 0.05
  done
  _escr_log "$name did not open port $port within ${limit}s"
  return 1
}

_escr_wait_port_closed() {
  local port=$1 limit=$2 i
  for i in $(seq 1 $((limit * 20))); do
    _escr_port_open "$port" || return 0
    sleep 0.05
  done
  return 1
}

_escr_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -x "$dir/initdb" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# The driver library a package installs, found by name pattern in `dpkg -L`.
_escr_driver_so() {
  dpkg -L "$1" 2>/dev/null | grep -m 1 -E "/$2\$" || true
}

# A throwaway CA and a server certificate for 127.0.0.1 (IP SAN, as rustls checks it).
_escr_make_tls() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.pem -days 3 -subj /CN=escr-test-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj /CN=127.0.0.1 &&
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 \
        -extfile server.ext -out server.pem
  ) >"$dir/openssl.log" 2>&1 || {
    _escr_log "creating the test certificates failed (see $dir/openssl.log)"
    return 1
  }
}

# Writes $ESCR_TEST_SERVERS_DIR/mariadb-ctl.sh: start|stop for the test MariaDB. The tests
# call it to stop and restart the server mid-test, so it must stand on its own.
_escr_write_mariadb_ctl() {
  local base=$1 port=$2
  cat >"$base/mariadb-ctl.sh" <<EOF
#!/usr/bin/env bash
# Start or stop the test MariaDB (written by scripts/test-servers.sh).
set -u
DATA=$base/mariadb
PORT=$port
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/\$PORT") 2>/dev/null; }
case "\${1:-}" in
  start)
    port_open && exit 0
    # setsid: the server outlives the shell or test that started it.
    setsid mariadbd --no-defaults --datadir="\$DATA" --socket="\$DATA/s.sock" \\
      --pid-file="\$DATA/mariadbd.pid" --log-error="$base/mariadb.log" \\
      --bind-address=127.0.0.1 --port="\$PORT" --user=root --skip-name-resolve \\
      --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \\
      --innodb-buffer-pool-size=64M --max-connections=200 \\
      --ssl-ca="$base/tls/ca.pem" --ssl-cert="$base/tls/server.pem" --ssl-key="$base/tls/server.key" \\
      </dev/null >/dev/null 2>&1 &
    for _ in \$(seq 1 600); do port_open && exit 0; sleep 0.05; done
    echo "mariadb-ctl: MariaDB did not open port \$PORT (see $base/mariadb.log)" >&2
    exit 1
    ;;
  stop)
    port_open || exit 0
    mariadb --no-defaults --socket="\$DATA/s.sock" -uroot -e SHUTDOWN >/dev/null 2>&1 || true
    for _ in \$(seq 1 600); do port_open || exit 0; sleep 0.05; done
    echo "mariadb-ctl: MariaDB still listening on \$PORT" >&2
    exit 1
    ;;
  *)
    echo "usage: \$0 start|stop" >&2
    exit 2
    ;;
esac
EOF
  chmod 755 "$base/mariadb-ctl.sh"
}

_escr_start_mariadb() {
  local base=$1 port=$2 password=$3 started
  started=$(date +%s%3N)
  mkdir -p "$base/mariadb"
  if ! mariadb-install-db --no-defaults --datadir="$base/mariadb" --user=root \
    --auth-root-authentication-method=normal --skip-test-db >"$base/mariadb-install.log" 2>&1; then
    _escr_log "mariadb-install-db failed (see $base/mariadb-install.log)"
    return 1
  fi
  _escr_make_tls "$base/tls" || return 1
  _escr_write_mariadb_ctl "$base" "$port"
  "$base/mariadb-ctl.sh" start || return 1
  mariadb --no-defaults --socket="$base/mariadb/s.sock" -uroot <<EOF || return 1
CREATE DATABASE escr_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'escr'@'%' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON escr_test.* TO 'escr'@'%';
CREATE DATABASE escr_opencare CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
GRANT ALL PRIVILEGES ON escr_opencare.* TO 'escr'@'%';
FLUSH PRIVILEGES;
EOF
  _escr_log "MariaDB on 127.0.0.1:$port ready in $(($(date +%s%3N) - started)) ms"
}

_escr_start_postgres() {
  local base=$1 port=$2 password=$3 bin started i
  started=$(date +%s%3N)
  bin=$(_escr_pg_bin) || {
    _escr_log "no PostgreSQL binaries under /usr/lib/postgresql"
    return 1
  }
  # PostgreSQL refuses to run as root: its data dir belongs to postgres.
  mkdir -p "$base/pg"
  chown postgres:postgres "$base/pg"
  if ! runuser -u postgres -- "$bin/initdb" -D "$base/pg/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$base/pg-initdb.log" 2>&1; then
    _escr_log "initdb failed (see $base/pg-initdb.log)"
    return 1
  fi
  runuser -u postgres -- setsid "$bin/postgres" -D "$base/pg/data" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$base/pg" \
    -c fsync=off -c full_page_writes=off -c max_connections=100 \
    </dev/null >"$base/pg/postgres.log" 2>&1 &
  _escr_wait_port "$port" 30 PostgreSQL || return 1
  # The port opens before recovery ends: retry until it accepts a session.
  for i in $(seq 1 100); do
    runuser -u postgres -- psql -h "$base/pg" -p "$port" -U postgres -d postgres -qAt \
      -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  runuser -u postgres -- psql -h "$base/pg" -p "$port" -U postgres -d postgres -q \
    -v ON_ERROR_STOP=1 >/dev/null <<EOF || return 1
CREATE ROLE escr LOGIN PASSWORD '$password';
CREATE DATABASE escr_test OWNER escr ENCODING 'UTF8';
EOF
  _escr_log "PostgreSQL on 127.0.0.1:$port ready in $(($(date +%s%3N) - started)) ms"
}

_escr_write_odbcinst() {
  local dir=$1 maria pgw pga sqlite3
  maria=$(_escr_driver_so odbc-mariadb 'libmaodbc\.so')
  pgw=$(_escr_driver_so odbc-postgresql 'psqlodbcw\.so')
  pga=$(_escr_driver_so odbc-postgresql 'psqlodbca\.so')
  sqlite3=$(_escr_driver_so libsqliteodbc 'libsqlite3odbc\.so')
  if [ -z "$maria" ] || [ -z "$pgw" ] || [ -z "$sqlite3" ]; then
    _escr_log "ODBC driver libraries not found (odbc-mariadb, odbc-postgresql, libsqliteodbc)"
    return 1
  fi
  mkdir -p "$dir"
  # No Debug/CommLog: the system psqlODBC entry writes log files into /tmp.
  cat >"$dir/odbcinst.ini" <<EOF
[MariaDB]
Description=MariaDB Connector/ODBC
Driver=$maria

[PostgreSQL Unicode]
Description=PostgreSQL ODBC driver (Unicode)
Driver=$pgw
Debug=0
CommLog=0

[PostgreSQL ANSI]
Description=PostgreSQL ODBC driver (ANSI)
Driver=$pga
Debug=0
CommLog=0

[SQLite3]
Description=SQLite3 ODBC driver
Driver=$sqlite3
EOF
  : >"$dir/odbc.ini"
}

start_test_servers() {
  # Idempotent: a second call in the same shell keeps the running servers.
  if [ -n "${ESCR_TEST_SERVERS_DIR:-}" ] && [ -d "$ESCR_TEST_SERVERS_DIR" ] &&
    _escr_port_open "${ESCR_TEST_MYSQL_PORT:-0}" && _escr_port_open "${ESCR_TEST_PG_PORT:-0}"; then
    return 0
  fi
  local started base my_port pg_port my_pass pg_pass
  started=$(date +%s%3N)
  install_test_packages || return 1
  install_browser_checks || return 1
  install_reporting_venv || return 1
  base=$(mktemp -d /tmp/escr-test-servers.XXXXXX) || return 1
  # The postgres user must reach its data dir below this one.
  chmod 755 "$base"
  export ESCR_TEST_SERVERS_DIR=$base
  # Random hex passwords: nothing to escape in URLs, connection strings or SQL.
  my_pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  pg_pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  my_port=$(_escr_free_port) || return 1
  _escr_start_mariadb "$base" "$my_port" "$my_pass" || return 1
  export ESCR_TEST_MYSQL_PORT=$my_port
  pg_port=$(_escr_free_port) || return 1
  _escr_start_postgres "$base" "$pg_port" "$pg_pass" || return 1
  export ESCR_TEST_PG_PORT=$pg_port
  _escr_write_odbcinst "$base/odbc" || return 1

  export ODBCSYSINI="$base/odbc"
  export ESCR_TEST_MYSQL_URL="mysql://escr:$my_pass@127.0.0.1:$my_port/escr_test"
  export ESCR_TEST_MYSQL_CTL="$base/mariadb-ctl.sh"
  export ESCR_TEST_MYSQL_TLS_CA="$base/tls/ca.pem"
  export ESCR_TEST_MARIADB_ODBC="Driver={MariaDB};Server=127.0.0.1;Port=$my_port;Database=escr_test;Uid=escr;Pwd=$my_pass;"
  export ESCR_TEST_PG_ODBC="Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=$pg_port;Database=escr_test;Uid=escr;Pwd=$pg_pass;"
  export ESCR_TEST_PG_URL="postgres://escr:$pg_pass@127.0.0.1:$pg_port/escr_test"
  export ESCR_TEST_SQLITE_ODBC_DRIVER="SQLite3"
  _escr_log "servers ready in $(($(date +%s%3N) - started)) ms (data in $base)"
}

stop_test_servers() {
  local base=${ESCR_TEST_SERVERS_DIR:-} bin
  [ -n "$base" ] && [ -d "$base" ] || return 0
  if [ -x "$base/mariadb-ctl.sh" ]; then
    "$base/mariadb-ctl.sh" stop || true
  fi
  if [ -d "$base/pg/data" ] && bin=$(_escr_pg_bin); then
    runuser -u postgres -- "$bin/pg_ctl" stop -D "$base/pg/data" -m fast -w -t 30 >/dev/null 2>&1 || true
  fi
  rm -rf "$base"
  unset ESCR_TEST_SERVERS_DIR ESCR_TEST_MYSQL_PORT ESCR_TEST_PG_PORT ESCR_TEST_MYSQL_URL \
    ESCR_TEST_MYSQL_CTL ESCR_TEST_MYSQL_TLS_CA ESCR_TEST_MARIADB_ODBC ESCR_TEST_PG_ODBC ESCR_TEST_PG_URL ESCR_TEST_SQLITE_ODBC_DRIVER \
    ODBCSYSINI
  return 0
}
