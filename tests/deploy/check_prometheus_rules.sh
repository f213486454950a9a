#!/usr/bin/env bash
# promtool check rules + promtool test rules on deploy/prometheus. Usage: check_prometheus_rules.sh ROOT
# Exit 77 (skipped) when promtool is missing (scripts/setup.sh installs Debian's prometheus).
set -euo pipefail
root="$1"
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIP: promtool not found (apt-get install prometheus, or run scripts/setup.sh)"
  exit 77
fi
cd "$root/deploy/prometheus"
promtool check rules rules.yaml
promtool test rules rules_test.yaml
