#!/usr/bin/env bash
# Throughput of a cluster against one node, in one run: starts a private Redis, PostgreSQL and
# s3s-fs on loopback, then runs `loadtest jobs` (no-op stages) against
#   1. one node (role all) on those backends, and
#   2. three nodes (one `all` taking the load, two `worker`s) on fresh backends,
# and prints both results and their ratio. Everything it starts is stopped at the end.
#
#   bash loadtest/cluster.sh [COUNT] [CONCURRENCY]      (defaults: 2000 jobs, 8 at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
concurrency=${2:-8}

bash scripts/setup.sh --test >/dev/null
cargo build --release --locked --bin clipmill --bin loadtest 2>&1 | tail -1
tools=${CLIPMILL_TOOLS:-$HOME/.cache/clipmill/tools}
pgbin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1)")
work=$(mktemp -d /tmp/clipmill-cluster.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [[ -f "$work/pg/postmaster.pid" ]] && as_postgres "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_postgres() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start_backends() {  # $1: a name for this round's folders
  local dir="$work/$1"
  mkdir -p "$dir/s3"
  redis_port=$(free_port); pg_port=$(free_port); s3_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" &
  pids+=($!)
  mkdir -p "$work/pg"
  if [[ ! -f "$work/pg/PG_VERSION" ]]; then
    chown postgres "$work/pg" 2>/dev/null || true
    as_postgres "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
  fi
  as_postgres "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  as_postgres "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "clipmill_$1"
  "$tools/bin/s3s-fs" --host 127.0.0.1 --port "$s3_port" --access-key loadtest --secret-key loadtest-secret "$dir/s3" >"$dir/s3s-fs.log" 2>&1 &
  pids+=($!)
  wait_port "$redis_port"; wait_port "$s3_port"
  cat > "$dir/backends.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port"
[postgres]
url = "postgres://postgres@127.0.0.1:$pg_port/clipmill_$1"
[s3]
endpoint = "http://127.0.0.1:$s3_port"
bucket = "clipmill"
access_key = "loadtest"
secret_key = "loadtest-secret"
EOF
}

start_node() {  # $1: round, $2: node name, $3: role; sets node_port
  local dir="$work/$1/$2" port
  port=$(free_port)
  mkdir -p "$dir"
  cat "$work/$1/backends.toml" - > "$dir/clipmill.toml" <<EOF
[scratch]
dir = "$dir/scratch"
[fetch]
allowed_networks = ["127.0.0.1"]
[server]
bind = "127.0.0.1:$port"
data_dir = "$dir/data"
noop = true
noop_stage_ms = 0
max_jobs_in_flight = 100000
signing_secret = "loadtest-cluster-secret"
[server.api_keys]
loadtest-key = "loadtest"
EOF
  CLIPMILL__LOG__FILTER=warn target/release/clipmill --config "$dir/clipmill.toml" serve --role "$3" >"$dir/node.out" 2>"$dir/node.log" &
  pids+=($!)
  wait_port "$port"
  node_port=$port
}

stop_round() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  pids=()
  as_postgres "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null
}

run_round() {  # $1: round name, $2: workers beside the node taking the load
  start_backends "$1"
  start_node "$1" main all
  local port=$node_port
  for i in $(seq "$2"); do start_node "$1" "worker$i" worker; done
  sleep 1
  target/release/loadtest --target "http://127.0.0.1:$port" jobs --count "$count" --concurrency "$concurrency" | tee "$work/$1.out"
  stop_round
}

run_round one 0
run_round three 2
one=$(tail -1 "$work/one.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["e2e_per_s"])')
three=$(tail -1 "$work/three.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["e2e_per_s"])')
python3 -c "print(f'cluster: one node {float(\"$one\"):.1f} jobs/s, three nodes {float(\"$three\"):.1f} jobs/s, ratio {float(\"$three\")/float(\"$one\"):.2f}')"
