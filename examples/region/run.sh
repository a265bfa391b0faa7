#!/usr/bin/env bash
# A regional shared care record on one machine: Northshire's and Southborough's own
# gateways (each over its own three demo vendor databases, its own identity index,
# consent registry and audit log) and Hive Gateway over both, on loopback.
#
#   examples/region/run.sh            # Ctrl-C stops all three
#
# Router: http://127.0.0.1:4100/graphql   councils: 4101 (Northshire), 4102 (Southborough)
# One HS256 key (data/region/jwt-hs256.key) stands in for the region's identity
# provider; run.sh prints a token. Example queries: examples/region/queries/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/region"
work="$repo/data/region"
mkdir -p "$work"
cd "$repo"

cargo build -q --bin escr
escr="$repo/target/debug/escr"
(cd tests/federation && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; })

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# Each council's config: its own sources, index, registry and audit; the shared key.
council_config() {
  local name=$1 port=$2 dir=$3 people=$4 prefix=$5 movers=${6:-}
  local c="$work/$name"
  mkdir -p "$c"
  sed -e "s|^hs256_key_file = .*|hs256_key_file = \"$work/jwt-hs256.key\"|" \
      -e "s|^registry = .*|registry = \"$c/consent.db\"|" \
      -e "s|^audit = .*|audit = \"$c/audit.db\"|" \
      -e "s|^file = \"../data/demo/national_opt_out.txt\"|file = \"$repo/$dir/national_opt_out.txt\"|" \
      config/policy.toml >"$c/policy.toml"
  cat >"$c/escr.toml" <<TOML
policy = "policy.toml"
reports = "$repo/config/reports.toml"

[server]
listen = "127.0.0.1:$port"
introspection = true

[index]
path = "$c/index.db"
refresh_secs = 60
linkage = "$repo/config/linkage.toml"

[demo]
generate_if_missing = true
dir = "$repo/$dir"
people = $people
seed = 42
council = "$name"
$movers

[documents]
id_key_file = "$repo/data/document-id.key"
generate_key_if_missing = true
TOML
  for v in casetrak opencare ssis; do
    cat >>"$c/escr.toml" <<TOML

[[sources]]
name = "$prefix$v"
authority = "$name"
profile = "$repo/config/vendors/$v.toml"
sqlite = { path = "$repo/$dir/$v.db" }
TOML
  done
  echo "$c/escr.toml"
}

north=$(council_config Northshire 4101 data/demo 2000 "")
# Southborough's first 300 people moved there from Northshire (the same seed): one
# NHS number, two councils' records (examples/region/queries/moved-person.graphql).
south=$(council_config Southborough 4102 data/region/demo-southborough 1200 "sb-" \
  $'movers_from = "Northshire"\nmovers = 300')
"$escr" --config "$north" serve >"$work/Northshire/serve.log" 2>&1 & pids+=($!)
"$escr" --config "$south" serve >"$work/Southborough/serve.log" 2>&1 & pids+=($!)

token=$("$escr" --config "$north" token --role safeguarding_lead --user lead@region --minutes 480)
wait_for() {
  for _ in $(seq 1 1200); do
    curl -sf -o /dev/null -H "authorization: Bearer $token" -H 'x-purpose-of-use: safeguarding' \
      -H 'content-type: application/json' -d '{"query":"{ __typename }"}' "$1" && return 0
    sleep 0.25
  done
  echo "no answer from $1 (see $work/*/serve.log)" >&2
  return 1
}
sdl() {
  curl -sf -H "authorization: Bearer $token" -H 'x-purpose-of-use: safeguarding' \
    -H 'content-type: application/json' -d '{"query":"{ _service { sdl } }"}' "$1" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).data._service.sdl))'
}
wait_for http://127.0.0.1:4101/subgraph
wait_for http://127.0.0.1:4102/subgraph
sdl http://127.0.0.1:4101/subgraph >"$work/northshire.graphql"
sdl http://127.0.0.1:4102/subgraph >"$work/southborough.graphql"

# The subgraphs of examples/region/supergraph.yaml, composed with both composers.
(cd tests/federation && node compose.mjs \
  "northshire=$work/northshire.graphql=http://127.0.0.1:4101/subgraph" \
  "southborough=$work/southborough.graphql=http://127.0.0.1:4102/subgraph" \
  --supergraph "$work/supergraph.graphql") | tee "$work/composition.json"

(cd tests/federation && node node_modules/@graphql-hive/gateway/dist/bin.js supergraph \
  "$work/supergraph.graphql" --config-path gateway.config.mjs --host 127.0.0.1 --port 4100) \
  >"$work/router.log" 2>&1 & pids+=($!)

# Someone known to both councils (the NHS numbers both demos' truth files hold).
mover=$(node -e '
  const fs = require("fs");
  const nhs = (f) => JSON.parse(fs.readFileSync(f, "utf8")).people.map((p) => p.nhs_number);
  const south = new Set(nhs(process.argv[2]));
  console.log(nhs(process.argv[1]).find((n) => south.has(n)) ?? "");
' "$repo/data/demo/truth.json" "$repo/data/region/demo-southborough/truth.json")

cat <<TEXT

Router:  http://127.0.0.1:4100/graphql (GraphiQL in a browser)
Moved:   NHS number $mover is known to both councils (queries/moved-person.graphql)
Token:   $token
Try:     curl -s http://127.0.0.1:4100/graphql -H "authorization: Bearer \$TOKEN" \\
           -H 'x-purpose-of-use: safeguarding' -H 'content-type: application/json' \\
           -d "{\"query\": \"\$(tr '\\n' ' ' < examples/region/queries/search.graphql)\"}"
Logs:    $work/*/serve.log, $work/router.log       Ctrl-C stops all.
TEXT
wait
