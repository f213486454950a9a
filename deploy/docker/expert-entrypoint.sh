#!/bin/sh
# Entrypoint of the expert-node StatefulSet: the pod's ordinal (the number ending its name,
# phimoe-expert-3 -> 3) picks the key `expert-<ordinal>` of the placement ConfigMap mounted at
# $PHIMOE_PLACEMENT_DIR, whose value is the --experts SPEC this replica hosts. Every other
# argument goes to phimoe-expert-node unchanged. Exits 2, before loading anything, when the
# ordinal has no placement (the ConfigMap needs one key per replica).
set -eu
name="${POD_NAME:-$(hostname)}"
ordinal="${name##*-}"
case "$ordinal" in
  '' | *[!0-9]*)
    echo "phimoe-expert-entrypoint: no ordinal at the end of pod name '$name'" >&2
    exit 2 ;;
esac
dir="${PHIMOE_PLACEMENT_DIR:-/etc/phimoe/placement}"
file="$dir/expert-$ordinal"
if [ ! -r "$file" ]; then
  echo "phimoe-expert-entrypoint: no placement for ordinal $ordinal ($file missing):" \
       "the placement ConfigMap needs a key expert-N for every replica" >&2
  exit 2
fi
spec="$(tr -d ' \t\r\n' < "$file")"
if [ -z "$spec" ]; then
  echo "phimoe-expert-entrypoint: $file is empty" >&2
  exit 2
fi
echo "phimoe-expert-entrypoint: $name hosts experts $spec" >&2
exec "${PHIMOE_EXPERT_NODE_BIN:-phimoe-expert-node}" --experts "$spec" --node-name "$name" "$@"
