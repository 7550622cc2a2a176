#!/usr/bin/env bash
# Every shell command in README.md and docs/*.md, as written: run when cheap, parsed when long,
# listed with its reason when not run at all; a block the checker does not know fails
# (scripts/check-docs.py says how each block is checked; docs/testing.md, "The docs' commands").
# Uses the debug build of the test suite (the same feature set, so nothing is rebuilt after
# `cargo nextest run --workspace`); needs python3, unshare (util-linux), nft and curl, and user
# namespaces (the walkthrough runs in a network namespace of its own: it needs no root).
# Usage: scripts/check-docs.sh [--list] [--only hosting|cluster|shims] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in python3 unshare nft curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check-docs: $tool is missing (Debian: python3, util-linux, nftables, curl)" >&2
    exit 1
  fi
done
if [[ " $* " != *" --list "* ]]; then
  # The binaries and examples the docs call, built as the test suite builds them.
  cargo nextest run --workspace --locked --no-run --cargo-quiet
fi
exec python3 scripts/check-docs.py "$@"
