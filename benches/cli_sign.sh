#!/usr/bin/env bash
# End-to-end latency of the `thresig sign` command: process start, mTLS
# handshake and a 2-of-3 signing, against three `thresig node run` processes
# on 127.0.0.1. Prints the median and p90 over N runs.
#   BIN=target/release/thresig N=50 benches/cli_sign.sh
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/thresig}")
N=${N:-50}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

"$BIN" certs init --nodes a,b,c --clients validator --admins ops --out "$dir/certs" >/dev/null
cat > "$dir/policy.toml" <<'TOML'
[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]
[[admin]]
name = "ops"
operations = ["*"]
TOML
ports=($(python3 -c 'import socket
s=[socket.socket() for _ in range(6)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))'))
peers=""
i=0
for n in a b c; do
  peers+=$'\n'"[[peers]]"$'\n'"name = \"$n\""$'\n'"peer_addr = \"127.0.0.1:${ports[$i]}\""$'\n'"client_addr = \"127.0.0.1:${ports[$((i+1))]}\""$'\n'
  i=$((i+2))
done
i=0
for n in a b c; do
  mkdir -p "$dir/$n"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/$n/passphrase"
  cat > "$dir/$n/node.toml" <<TOML
[node]
name = "$n"
trust_domain = "thresig.local"
data_dir = "$dir/$n/data"
policy = "$dir/policy.toml"
[listen]
peer = "127.0.0.1:${ports[$i]}"
client = "127.0.0.1:${ports[$((i+1))]}"
[tls]
ca = "$dir/certs/ca.pem"
cert = "$dir/certs/nodes/$n.pem"
key = "$dir/certs/nodes/$n.key"
[store]
passphrase_file = "$dir/$n/passphrase"
$peers
TOML
  RUST_LOG=warn "$BIN" node run --config "$dir/$n/node.toml" 2>"$dir/$n/log" &
  pids+=($!)
  i=$((i+2))
done

export THRESIG_ENDPOINT=127.0.0.1:${ports[1]} THRESIG_SERVER=a THRESIG_CERTS=$dir/certs
for _ in $(seq 50); do "$BIN" keys list --identity ops >/dev/null 2>&1 && break; sleep 0.2; done
"$BIN" keys create --name bench --threshold 2 --identity ops >/dev/null 2>&1
samples=()
for k in $(seq "$N"); do
  d=$(printf '%064x' "$k")
  t0=$(date +%s%N)
  "$BIN" sign --key bench --digest "$d" --identity validator >/dev/null
  t1=$(date +%s%N)
  samples+=($(( (t1 - t0) / 1000 )))
done
printf '%s\n' "${samples[@]}" | sort -n | awk -v n="$N" '{a[NR]=$1} END {printf "thresig sign (CLI, 2-of-3, new process and TLS connection each time) over %d runs: median %.2f ms, p90 %.2f ms\n", n, a[int((n+1)/2)]/1000, a[int(n*0.9)]/1000}'
