#!/usr/bin/env bash
# Breaks a three-node compose cluster on the real Docker engine and checks
# that signing survives (run by .ci/run; skipped, with a line saying so, when
# no Docker engine answers). Each step prints what it broke and what it saw:
#   1. docker kill of one node: signing through the others goes on;
#   2. one node's network disconnected: the client gets a signature from the
#      other two (or a clear error) in bounded time; reconnected, the node
#      signs again;
#   3. every container restarted: the key persists and signs;
#   4. one node's volume removed and the node started empty: keys repair
#      gives it its share back and it signs again.
# Its own project name, network, run directory and image tag; everything it
# made is removed on exit, also on failure.
#
# Environment: THRESIG_BIN (host binary; default: the release build, built
# here), THRESIG_IMAGE (an existing image to use instead of building one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if ! docker info >/dev/null 2>&1; then
  echo "compose test: SKIPPED (no Docker engine answers: docker info failed)"
  exit 0
fi
if command -v docker-compose >/dev/null 2>&1; then
  dc=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  dc=(docker compose)
else
  echo "compose test: SKIPPED (neither docker-compose nor the docker compose plugin is installed)"
  exit 0
fi

export COMPOSE_PROJECT_NAME="thresigtest$$"
export THRESIG_SUBNET="10.213.$((100 + RANDOM % 100))"
export THRESIG_RUN_DIR="$(mktemp -d)"
built_image=""
if [ -z "${THRESIG_IMAGE:-}" ]; then
  export THRESIG_IMAGE="thresig:compose-test-$$"
  built_image="$THRESIG_IMAGE"
fi
compose() { "${dc[@]}" -f "$here/docker-compose.yml" "$@"; }
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "compose test: FAILED; the nodes' last log lines:" >&2
    compose logs --tail 15 >&2 2>&1 || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  [ -n "$built_image" ] && docker image rm -f "$built_image" >/dev/null 2>&1 || true
  rm -rf "$THRESIG_RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT

started=$(date +%s.%N)
"$here/up.sh" >"$THRESIG_RUN_DIR/up.log" 2>&1 || { cat "$THRESIG_RUN_DIR/up.log" >&2; echo "compose test: up.sh failed" >&2; exit 1; }
# shellcheck disable=SC1091
. "$THRESIG_RUN_DIR/env"
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
echo "compose test: image built, cluster up, key created, first signature: $(secs "$started")"

port() { compose port "$1" 7401 | sed 's/.*://'; }
container() { compose ps -q "$1"; }
digest() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# sign NODE [FAILOVER]: signs through NODE (failing over as given); prints the signers.
sign() {
  local n="$1" failover="${2:-}"
  local args=(sign --key demo --digest "$(digest)" --identity validator --json
    --server "$n" --endpoint "127.0.0.1:$(port "$n")")
  [ -n "$failover" ] && args+=(--failover "$failover")
  timeout 60 "$THRESIG_BIN" "${args[@]}" | sed -n 's/.*"participants": *\[\([^]]*\)\].*/\1/p' | tr -d ' "\n'
}
others() { # the failover list of every node but $1
  local out="" n
  for n in a b c; do [ "$n" = "$1" ] || out="$out${out:+,}$n@127.0.0.1:$(port "$n")"; done
  echo "$out"
}
wait_serving() { # NODE: until it answers an admin read (60 s)
  local n="$1" i
  for i in $(seq 1 200); do
    if "$THRESIG_BIN" keys list --identity ops --server "$n" --endpoint "127.0.0.1:$(port "$n")" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.3
  done
  echo "compose test: node $n did not come back" >&2
  return 1
}
pk() { "$THRESIG_BIN" keys show demo --identity ops --server "$1" --endpoint "127.0.0.1:$(port "$1")" | awk '/^public key/ {print $3}'; }
pk0="$(pk a)"

echo "== 1. docker kill c"
fo="$(others a)"
t=$(date +%s.%N)
docker kill "$(container c)" >/dev/null
signers="$(sign a "$fo")"
echo "   signed through a after the kill, signers $signers ($(secs "$t"))"
[ -n "$signers" ]
compose start c >/dev/null 2>&1 && wait_serving c
echo "   c started again and serves"

echo "== 2. b's network disconnected"
net="${COMPOSE_PROJECT_NAME}_signers"
# The failover list from the ports the containers have now (c was restarted in
# step 1 and may have a new one; the env file has the ports from up.sh), taken
# before b's port mapping goes with its network.
fo="$(others a)"
docker network disconnect "$net" "$(container b)"
t=$(date +%s.%N)
set +e
out="$(timeout 30 "$THRESIG_BIN" sign --key demo --digest "$(digest)" --identity validator --server a \
  --endpoint "127.0.0.1:$(port a)" --failover "$fo" 2>&1)"
rc=$?
set -e
if [ "$rc" = 0 ]; then
  echo "   through a while b is cut off: signed by $(echo "$out" | awk '/^signers/ {print $2 $3}') ($(secs "$t"))"
elif [ "$rc" = 124 ]; then
  echo "   through a while b is cut off: no answer within 30 s" >&2
  exit 1
else
  echo "   through a while b is cut off: error in $(secs "$t"): $out"
  echo "   node a's last log lines:"
  compose logs --tail 6 a 2>&1 | sed 's/^/     /'
fi
docker network connect --ip "$THRESIG_SUBNET.12" "$net" "$(container b)"
t=$(date +%s.%N)
signers=""
for _ in $(seq 1 60); do
  signers="$(sign b 2>/dev/null || true)"
  case "$signers" in *b*) break ;; esac
  sleep 1
done
echo "   b reconnected; it coordinated a signature again, signers $signers ($(secs "$t"))"
case "$signers" in *b*) ;; *) echo "compose test: b never signed again" >&2; exit 1 ;; esac

echo "== 3. every container restarted"
t=$(date +%s.%N)
compose restart >/dev/null 2>&1
for n in a b c; do wait_serving "$n"; done
signers="$(sign a "$(others a)")"
[ "$(pk b)" = "$pk0" ] || { echo "compose test: the key's public key changed across the restart" >&2; exit 1; }
echo "   restarted, key demo unchanged, signed by $signers ($(secs "$t"))"

echo "== 4. c's volume removed; c started empty, then repaired"
t=$(date +%s.%N)
compose stop c >/dev/null 2>&1
compose rm -f c >/dev/null 2>&1
docker volume rm "${COMPOSE_PROJECT_NAME}_c-data" >/dev/null
compose up -d c >/dev/null 2>&1
wait_serving c
if "$THRESIG_BIN" keys show demo --identity ops --server c --endpoint "127.0.0.1:$(port c)" >/dev/null 2>&1; then
  echo "compose test: c still knows key demo after its volume was removed" >&2
  exit 1
fi
"$THRESIG_BIN" keys repair demo --node c --identity ops --server a --endpoint "127.0.0.1:$(port a)" >/dev/null 2>&1
signers="$(sign c)"
case "$signers" in *c*) ;; *) echo "compose test: c did not sign after the repair ($signers)" >&2; exit 1 ;; esac
echo "   repaired; c coordinated a signature, signers $signers ($(secs "$t"))"
echo "compose test: passed in $(secs "$started")"
