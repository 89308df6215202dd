#!/usr/bin/env bash
# Validates deploy/prometheus with Prometheus' own promtool: the scrape config (and the rule
# files it names), the alert rules, and the alert unit tests in alerts_test.yml.
#   promtool_check_test.sh REPO_ROOT
# Exit 77 (ctest SKIP_RETURN_CODE) when promtool is not installed (Debian: prometheus).
set -euo pipefail
root="$(cd "${1:?usage: promtool_check_test.sh REPO_ROOT}" && pwd)"
if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool not installed (apt-get install prometheus; scripts/setup.sh does)"
  exit 77
fi
cd "$root/deploy/prometheus"
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
echo "promtool: deploy/prometheus OK"
