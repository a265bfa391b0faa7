#!/usr/bin/env bash
# Two stateless gateway replicas over the embedded demo, their state (consent registry,
# audit log, published identity index) in one PostgreSQL, behind haproxy, on loopback.
#
#   examples/replicas/run.sh          # Ctrl-C stops all four
#
# Balancer: http://127.0.0.1:4200/graphql   replicas: 4201 (a), 4202 (b)
# PostgreSQL: a fresh cluster in a temp folder on 127.0.0.1:5499 (ESCR_REPLICAS_PG_PORT);
# the schema is migrated by its owner role, the replicas serve as escr_app
# (examples/replicas/grants.sql: no UPDATE or DELETE on the audit).
# Needs Debian's postgresql and haproxy packages (scripts/test-servers.sh installs them).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/replicas"
work="$repo/data/replicas"
pg_port=${ESCR_REPLICAS_PG_PORT:-5499}
cd "$repo"

cargo build -q --bin escr
escr="$repo/target/debug/escr"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV | head -1)
[ -x "$bin/pg_ctl" ] || { echo "no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "no haproxy (apt-get install haproxy)" >&2; exit 1; }

pgdir=$(mktemp -d /tmp/escr-replicas-pg.XXXXXX)
chmod 755 "$pgdir"
as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres "$pgdir"; runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$bin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap stop EXIT INT TERM

# Random passwords, never on a command line: the URLs reach escr through the environment.
super_pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
owner_pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
app_pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
echo "$super_pw" >"$pgdir/pw"
as_pg "$bin/initdb" -D "$pgdir/data" -U postgres -E UTF8 --locale=C --auth-local=trust \
  --auth-host=scram-sha-256 --pwfile="$pgdir/pw" >"$pgdir/initdb.log"
as_pg "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pgdir" >/dev/null
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
PGPASSWORD=$super_pw psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres <<SQL
CREATE ROLE escr_owner LOGIN PASSWORD '$owner_pw';
CREATE ROLE escr_app LOGIN PASSWORD '$app_pw';
CREATE DATABASE escr OWNER escr_owner;
SQL
owner_url="postgres://escr_owner:$owner_pw@127.0.0.1:$pg_port/escr"
app_url="postgres://escr_app:$app_pw@127.0.0.1:$pg_port/escr"

# The shipped config, twice: a local index file each, the state in PostgreSQL.
rm -rf "$work/config"
mkdir -p "$work"
cp -r "$repo/config" "$work/config"
for r in a b; do
  sed -e "s|^path = \"../data/index.db\"|path = \"../data/index-$r.db\"|" \
    "$work/config/escr.toml" >"$work/config/escr-$r.toml"
  cat >>"$work/config/escr-$r.toml" <<TOML

[cursors]
key_env = "ESCR_CURSOR_KEY"

[state]
backend = "postgres"
replica = "$r"

[state.postgres]
url_env = "ESCR_STATE_URL"
pool_size = 8
TOML
done
# One cursor key for both replicas, so that a page given out by one resumes on the
# other (the document-id key is the shipped config's file, which both share).
ESCR_CURSOR_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ESCR_CURSOR_KEY
ESCR_STATE_URL=$owner_url "$escr" --config "$work/config/escr-a.toml" migrate-state
PGPASSWORD=$owner_pw psql -h 127.0.0.1 -p "$pg_port" -U escr_owner -d escr -f "$here/grants.sql"

# A first: it generates the demo both read and publishes the index B installs.
ESCR_STATE_URL=$app_url "$escr" --config "$work/config/escr-a.toml" serve --listen 127.0.0.1:4201 &
pids+=($!)
until curl -fs http://127.0.0.1:4201/healthz >/dev/null; do sleep 0.5; done
ESCR_STATE_URL=$app_url "$escr" --config "$work/config/escr-b.toml" serve --listen 127.0.0.1:4202 &
pids+=($!)
until curl -fs http://127.0.0.1:4202/healthz >/dev/null; do sleep 0.5; done

cat >"$work/haproxy.cfg" <<CFG
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend gateway
  bind 127.0.0.1:4200
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  default-server inter 1s fall 2 rise 2
  server a 127.0.0.1:4201 check
  server b 127.0.0.1:4202 check
CFG
haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
until curl -fs http://127.0.0.1:4200/healthz >/dev/null; do sleep 0.2; done

(umask 077; echo "$app_url" >"$work/state-url")
token=$("$escr" --config "$work/config/escr-a.toml" token --role safeguarding_lead --purpose safeguarding)
cat <<TXT

balancer   http://127.0.0.1:4200/graphql   (GraphiQL in the browser)
replica a  http://127.0.0.1:4201/graphql   /readyz shows the state store
replica b  http://127.0.0.1:4202/graphql
token (safeguarding_lead, X-Purpose-Of-Use: safeguarding):
$token
audit of every replica:
  ESCR_STATE_URL=\$(cat $work/state-url) $escr --config $work/config/escr-a.toml verify-audit
Ctrl-C stops all.
TXT
wait
