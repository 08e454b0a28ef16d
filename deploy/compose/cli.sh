#!/usr/bin/env bash
# Runs the host's thresig against the compose cluster that up.sh started: the
# client identity "validator" (or THRESIG_IDENTITY, e.g. ops for keys and
# status), node a first, failing over to b and c.
#   deploy/compose/cli.sh sign --key demo --digest <64 hex>
#   THRESIG_IDENTITY=ops deploy/compose/cli.sh status
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ -f "${THRESIG_RUN_DIR:-$here/run}/env" ] || { echo "cli.sh: run deploy/compose/up.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "${THRESIG_RUN_DIR:-$here/run}/env"
export THRESIG_IDENTITY="${THRESIG_IDENTITY:-validator}"
exec "$THRESIG_BIN" "$@"
