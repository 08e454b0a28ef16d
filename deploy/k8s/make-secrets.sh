#!/usr/bin/env bash
# Makes the Secret "thresig-<node>" in namespace thresig for each node: the CA
# bundle, the node's certificate and key, and its store passphrase, under the
# names the StatefulSets mount (ca.pem, node.pem, node.key, passphrase).
#
#   thresig certs init --trust-domain thresig.local --nodes a,b,c \
#     --clients validator --admins ops --out certs
#   deploy/k8s/make-secrets.sh certs passphrases      # then: kubectl apply -k deploy/k8s
#
# CERTS_DIR is what `thresig certs init` wrote. PASS_DIR holds one passphrase
# file per node (PASS_DIR/a, ...); a missing one is made (32 random bytes, hex,
# mode 0600). Keep PASS_DIR offline and backed up: a node's store cannot be
# opened without its passphrase. Nothing is printed that holds a secret.
# Set KUBECTL to use another kubectl; DRY_RUN=1 prints the Secrets as YAML
# instead of applying them.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CERTS_DIR PASS_DIR [NODE...]   (nodes default to a b c)" >&2
  exit 2
fi
certs="$1" pass="$2"
shift 2
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=(a b c)
kubectl="${KUBECTL:-kubectl}"
mkdir -p "$pass" && chmod 0700 "$pass"
for n in "${nodes[@]}"; do
  for f in "$certs/ca.pem" "$certs/nodes/$n.pem" "$certs/nodes/$n.key"; do
    [ -f "$f" ] || { echo "$0: $f is missing (made by thresig certs init --nodes ...)" >&2; exit 1; }
  done
  if [ ! -f "$pass/$n" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pass/$n")
  fi
  args=(create secret generic "thresig-$n" --namespace thresig
    --from-file=ca.pem="$certs/ca.pem"
    --from-file=node.pem="$certs/nodes/$n.pem"
    --from-file=node.key="$certs/nodes/$n.key"
    --from-file=passphrase="$pass/$n"
    --dry-run=client -o yaml)
  if [ "${DRY_RUN:-0}" = 1 ]; then
    "$kubectl" "${args[@]}"
    echo "---"
  else
    "$kubectl" "${args[@]}" | "$kubectl" apply -f -
  fi
done
