#!/usr/bin/env bash
# Synthetic check of the observability pack against a live Prometheus, e.g. after a deploy:
# every panel query of every dashboard and every rule of dashboards/rules must return data
# over the window, and evaluate without error. Exit 1 names the queries that did not.
#
#   scripts/check-dashboards.sh --prometheus http://prometheus:9090 [--window 1h] \
#     [--scrape-interval 15s] [--var cluster=prod-eu] [--allow-empty PATTERN] [--strict] [--json]
#
# All options: python3 dashboards/tools/dashboards.py check --help (dashboards/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 dashboards/tools/dashboards.py check "$@"
