#!/usr/bin/env bash
# Brings up a three-node thresig cluster on the local Docker engine and signs
# once from the host:
#   1. builds the image (deploy/docker/build.sh; skipped when THRESIG_IMAGE
#      names an image that exists),
#   2. makes certificates, a config and a passphrase per node and a policy in
#      deploy/compose/run/ (kept across runs; delete run/ to start over),
#   3. starts nodes a, b and c (docker-compose up), waits until each serves,
#   4. creates key "demo" (2-of-3) unless it exists, and signs a digest.
# Then sign with deploy/compose/cli.sh (it points the host's thresig at the
# cluster):
#   deploy/compose/cli.sh sign --key demo --digest "$(printf hello | sha256sum | cut -c1-64)"
#
# Environment: THRESIG_BIN (host binary; default: the release build),
# THRESIG_IMAGE (default thresig:latest), COMPOSE_PROJECT_NAME (default
# thresig), THRESIG_SUBNET (first three octets, default 10.213.37).
# Stop with: docker-compose -f deploy/compose/docker-compose.yml down (-v also
# deletes the nodes' data, and with it the key).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-thresig}"
export THRESIG_SUBNET="${THRESIG_SUBNET:-10.213.37}"
export THRESIG_IMAGE="${THRESIG_IMAGE:-thresig:latest}"
say() { echo "== $*" >&2; }

docker info >/dev/null 2>&1 || { echo "up.sh: no Docker engine answers (docker info failed)" >&2; exit 1; }
if command -v docker-compose >/dev/null 2>&1; then
  dc=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  dc=(docker compose)
else
  echo "up.sh: neither docker-compose nor the docker compose plugin is installed" >&2
  exit 1
fi
compose() { "${dc[@]}" -f "$here/docker-compose.yml" "$@"; }

bin="${THRESIG_BIN:-}"
if [ -z "$bin" ]; then
  say "cargo build --release"
  (cd "$repo" && cargo build --release --quiet)
  bin="$repo/target/release/thresig"
fi
if ! docker image inspect "$THRESIG_IMAGE" >/dev/null 2>&1; then
  say "building image $THRESIG_IMAGE"
  "$repo/deploy/docker/build.sh" --binary "$bin" --tag "$THRESIG_IMAGE" >&2
fi

run="${THRESIG_RUN_DIR:-$here/run}"
export THRESIG_RUN_DIR="$run"
if [ ! -d "$run/certs" ]; then
  say "certificates, configs, policy and passphrases in $run"
  mkdir -p "$run" && chmod 0700 "$run"
  "$bin" certs init --trust-domain thresig.local --nodes a,b,c --clients validator \
    --admins ops --out "$run/certs" >/dev/null
  cat > "$run/policy.toml" <<'TOML'
[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]
[[admin]]
name = "ops"
operations = ["*"]
TOML
  declare -A ips=([a]="$THRESIG_SUBNET.11" [b]="$THRESIG_SUBNET.12" [c]="$THRESIG_SUBNET.13")
  for n in a b c; do
    d="$run/$n/etc"
    mkdir -p "$d/tls"
    cp "$run/certs/ca.pem" "$d/tls/ca.pem"
    cp "$run/certs/nodes/$n.pem" "$d/tls/node.pem"
    cp "$run/certs/nodes/$n.key" "$d/tls/node.key"
    cp "$run/policy.toml" "$d/policy.toml"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run/$n/passphrase"
    {
      printf '[node]\nname = "%s"\ntrust_domain = "thresig.local"\n' "$n"
      printf 'data_dir = "/var/lib/thresig"\npolicy = "policy.toml"\n\n'
      printf '[listen]\npeer = "0.0.0.0:7400"\nclient = "0.0.0.0:7401"\nops = "0.0.0.0:7402"\n\n'
      printf '[tls]\nca = "tls/ca.pem"\ncert = "tls/node.pem"\nkey = "tls/node.key"\n\n'
      printf '[store]\npassphrase_file = "/run/secrets/passphrase"\n'
      for p in a b c; do
        printf '\n[[peers]]\nname = "%s"\npeer_addr = "%s:7400"\nclient_addr = "%s:7401"\n' \
          "$p" "${ips[$p]}" "${ips[$p]}"
      done
    } > "$d/node.toml"
    # The node runs as uid 65532: it must read its own files. run/ itself
    # stays 0700, so nobody else on this host can.
    if [ "$(id -u)" = 0 ]; then
      chown -R 65532:65532 "$run/$n"
    else
      chmod -R a+rX "$run/$n"
    fi
  done
fi

say "docker-compose up (project $COMPOSE_PROJECT_NAME, network $THRESIG_SUBNET.0/24)"
compose up -d >&2

# The host side: the client plane of each node, published on 127.0.0.1.
port() { compose port "$1" 7401 | sed 's/.*://'; }
{
  echo "export THRESIG_BIN='$bin'"
  echo "export THRESIG_CERTS='$run/certs'"
  echo "export THRESIG_TRUST_DOMAIN=thresig.local"
  echo "export THRESIG_SERVER=a THRESIG_ENDPOINT=127.0.0.1:$(port a)"
  echo "export THRESIG_FAILOVER=b@127.0.0.1:$(port b),c@127.0.0.1:$(port c)"
  echo "export THRESIG_PORT_A=$(port a) THRESIG_PORT_B=$(port b) THRESIG_PORT_C=$(port c)"
} > "$run/env"
# shellcheck disable=SC1091
. "$run/env"

for n in a b c; do
  p="THRESIG_PORT_${n^^}"
  for _ in $(seq 1 100); do
    if "$bin" keys list --identity ops --server "$n" --endpoint "127.0.0.1:${!p}" >/dev/null 2>&1; then
      break
    fi
    sleep 0.3
  done
  "$bin" keys list --identity ops --server "$n" --endpoint "127.0.0.1:${!p}" >/dev/null ||
    { compose logs --tail 30 "$n" >&2; echo "up.sh: node $n does not answer" >&2; exit 1; }
done
say "nodes a, b and c serve"

if ! "$bin" keys show demo --identity ops >/dev/null 2>&1; then
  say "keys create demo (2-of-3, distributed key generation)"
  "$bin" keys create --name demo --threshold 2 --identity ops
fi
digest="$(printf 'hello from the host' | sha256sum | cut -c1-64)"
say "sign $digest with key demo"
"$bin" sign --key demo --digest "$digest" --identity validator
echo
echo "cluster up. Sign again with:"
echo "  $here/cli.sh sign --key demo --digest $digest"
