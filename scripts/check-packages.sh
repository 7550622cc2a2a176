#!/usr/bin/env bash
# Are the crates ready to publish? Checks every workspace crate that may be published (all but
# those with `publish = false`) without uploading anything:
#
#   1. its manifest metadata is complete: description, license, repository, readme (a file that
#      exists), 1-5 keywords and 1-5 categories in crates.io's forms;
#   2. `cargo package --workspace --no-verify` packs them all: the manifests rewrite, each path
#      dependency has a version and is itself publishable, and each package's README is in it
#      (cargo >= 1.83 resolves the unpublished workspace crates from the packages it just made);
#   3. with --verify, `cargo package --workspace` also builds each package from its own files
#      alone (a release of every crate: many minutes); with --docs, each crate's docs build on
#      their own, with its default features as docs.rs would, warnings as errors.
#
#   scripts/check-packages.sh              1 and 2: a few seconds with the index cached (CI)
#   scripts/check-packages.sh --verify     and build each package from its files
#   scripts/check-packages.sh --docs       and `cargo doc --no-deps -p CRATE` of each, alone
#
# The crates not to publish (`publish = false`) are listed by name below, so a new crate must
# either carry complete metadata or be named here.
set -euo pipefail
cd "$(dirname "$0")/.."

not_published=(meshkit-tests meshkit-benches meshkit-testkit meshkit-sample-jobs)

verify=0
docs=0
for arg in "$@"; do
    case "$arg" in
        --verify) verify=1 ;;
        --docs) docs=1 ;;
        *)
            echo "unknown argument $arg: expected --verify or --docs" >&2
            exit 2
            ;;
    esac
done

echo "==> manifest metadata"
published="$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c '
import json, os, re, sys

# crates.io category slugs this check accepts (https://crates.io/category_slugs; add one from
# there when a crate needs it).
CATEGORIES = {
    "algorithms", "api-bindings", "asynchronous", "command-line-utilities", "concurrency",
    "cryptography", "data-structures", "database", "development-tools",
    "development-tools::testing", "encoding", "network-programming", "parser-implementations",
    "simulation", "web-programming", "web-programming::http-client",
    "web-programming::http-server",
}
not_published = set(sys.argv[1:])
meta = json.load(sys.stdin)
faults, published = [], []
for p in sorted(meta["packages"], key=lambda p: p["name"]):
    name = p["name"]
    if p["publish"] == []:
        if name not in not_published:
            faults.append(f"{name}: publish = false, but not listed as unpublished in scripts/check-packages.sh")
        continue
    if name in not_published:
        faults.append(f"{name}: listed as unpublished but publishable: set publish = false")
        continue
    published.append(name)
    where = os.path.dirname(p["manifest_path"])
    for key in ("description", "license", "repository", "readme"):
        if not p.get(key):
            faults.append(f"{name}: no {key} in {where}/Cargo.toml")
    readme = p.get("readme")
    if readme and not os.path.isfile(os.path.join(where, readme)):
        faults.append(f"{name}: readme {readme} does not exist in {where}")
    keywords = p.get("keywords") or []
    if not 1 <= len(keywords) <= 5:
        faults.append(f"{name}: {len(keywords)} keywords: crates.io takes 1-5")
    for k in keywords:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,19}", k):
            faults.append(f"{name}: keyword {k!r}: crates.io takes 1-20 ASCII letters, digits, _ + -, starting alphanumeric")
    categories = p.get("categories") or []
    if not 1 <= len(categories) <= 5:
        faults.append(f"{name}: {len(categories)} categories: crates.io takes 1-5")
    for c in categories:
        if c not in CATEGORIES:
            faults.append(f"{name}: category {c!r} is not one of the crates.io slugs known to scripts/check-packages.sh")
for f in faults:
    print(f"FAULT {f}", file=sys.stderr)
if faults:
    sys.exit(1)
print(" ".join(published))
' "${not_published[@]}")"
echo "publishable: $published"

exclude=()
for name in "${not_published[@]}"; do
    exclude+=(--exclude "$name")
done

echo "==> cargo package --workspace --no-verify"
# Offline first: after any build the index entries it needs are cached (as in CI, after the
# test build); online when they are not.
if ! cargo package --workspace --no-verify --locked --offline --quiet "${exclude[@]}" 2>/tmp/check-packages.$$; then
    echo "(offline packing failed, trying online: $(tail -1 /tmp/check-packages.$$))"
    cargo package --workspace --no-verify --locked --quiet "${exclude[@]}"
fi
rm -f /tmp/check-packages.$$

target="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
version="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')"
for name in $published; do
    crate="$target/package/$name-$version.crate"
    files="$(tar -tzf "$crate")"
    if ! grep -qx "$name-$version/README.md" <<<"$files"; then
        echo "FAULT $name: $crate has no README.md" >&2
        exit 1
    fi
    printf '%-16s %3d files, %s\n' "$name" "$(wc -l <<<"$files")" "$(du -h "$crate" | cut -f1)"
done

if [ "$verify" = 1 ]; then
    echo "==> cargo package --workspace (each package built from its own files)"
    cargo package --workspace --locked "${exclude[@]}"
fi

if [ "$docs" = 1 ]; then
    for name in $published; do
        echo "==> cargo doc --no-deps -p $name (alone, default features, warnings are errors)"
        RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet -p "$name"
    done
fi
echo "check-packages: ${published// /, } ready to publish"
