#!/usr/bin/env bash
# Regenerates the pictures of the dashboards (docs/dashboards/*.png): runs the end-to-end test
# of the observability pack (five meshkitd, the probe agent, Prometheus, Alertmanager; about two
# minutes), which draws every dashboard with that run's data (dashboards/tools/dashboards.py
# render: SVG panels, screenshotted by headless Chromium). Needs root for apt-get when a tool is
# missing: Debian's prometheus, prometheus-alertmanager, python3 and chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
fi
MESHKIT_DASHBOARD_PICTURES="$PWD/docs/dashboards" cargo nextest run -p meshkit-tests -p meshkit-cli -p meshkit-probe --locked \
  --run-ignored only -E 'test(=alerts_reach_alertmanager_and_every_panel_has_data)' --no-capture
