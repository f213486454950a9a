#!/usr/bin/env bash
# The folder graph, checked: every #include of one of our folders (or of the generated protos,
# "phimoe/v1/...") must be one the table below allows. The build enforces the same graph through
# per-folder include roots (cmake/PhimoeHelpers.cmake); this check names the offending file and
# line, and keeps the table in one readable place. Usage: check_layering.sh REPO_ROOT
set -euo pipefail
root="${1:?usage: check_layering.sh REPO_ROOT}"
cd "$root"

# folder -> folders (and "protos") its files may include, besides itself. Listed bottom-up.
declare -A allowed=(
  [common]=""
  [kernels]="common"
  [router]="common kernels protos"
  [expert_node]="common kernels router protos"  # router: the payload codec only
  [attention_node]="common kernels router protos"
  [runtime]="common kernels router expert_node attention_node"
  [tokenizer]="common"
  [gateway]="common tokenizer protos"
  [sdk]="common protos"
  [tools]="common kernels router expert_node attention_node runtime tokenizer gateway sdk protos"
)
ours=" common kernels router expert_node attention_node runtime tokenizer gateway sdk tools tests "

bad=0
checked=0
for folder in "${!allowed[@]}"; do
  [ -d "$folder" ] || { echo "missing folder $folder"; bad=1; continue; }
  ok=" $folder ${allowed[$folder]} "
  while IFS= read -r hit; do
    file="${hit%%:*}"; rest="${hit#*:}"; line="${rest%%:*}"; inc="${rest#*:}"
    target="$(sed -E 's/.*#include "([^"/]+)\/.*/\1/' <<<"$inc")"
    [ "$target" = "phimoe" ] && target="protos"
    checked=$((checked + 1))
    if [[ "$ours protos " == *" $target "* && "$ok" != *" $target "* ]]; then
      echo "$file:$line: $folder/ may not include $target/ ($(tr -d '\r' <<<"$inc"))"
      bad=1
    fi
  done < <(grep -rnE '^#include "[^"/]+/' "$folder" --include='*.h' --include='*.cc' \
             --include='*.cu' --include='*.cuh' || true)
done
if [ "$checked" -eq 0 ]; then
  echo "no includes found under $root: wrong folder?"
  exit 1
fi
if [ "$bad" -ne 0 ]; then
  echo "layering: violations above (the allowed graph is at the top of $0)"
  exit 1
fi
echo "layering: $checked includes checked, all allowed"
