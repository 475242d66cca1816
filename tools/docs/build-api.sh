#!/usr/bin/env bash
# The API reference of the packed libraries (Engine, Engine.Kernels, Engine.Onnx) from their XML docs, with the README
# and the docs/ pages, as a static site in artifacts/docs (git-ignored; the API pages' sources go to docs/api, also
# git-ignored). Open artifacts/docs/index.html, or serve it: dotnet docfx serve artifacts/docs
# Fails when docfx finds a broken link or reference (a file link, a bookmark, a cross-reference); other warnings (the
# kernels' XML comments with formulas docfx cannot read, CS1570 in Engine.Kernels.csproj) are listed and let pass.
set -uo pipefail
cd "$(dirname "$0")/../.."
dotnet tool restore >/dev/null || { echo "build-api: dotnet tool restore failed" >&2; exit 1; }
rm -rf artifacts/docs docs/api
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! dotnet docfx docfx.json >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-api: docfx failed" >&2
  exit 1
fi
broken='warning:? (InvalidFileLink|InvalidBookmark|UnresolvedXref|InvalidCref|InvalidTocInclude|InvalidTocLink)'
grep -E 'warning:? [A-Z][A-Za-z]+:' "$log" | sed -E 's/: <!-- Badly formed XML comment ignored for member "([^"(]*).*/: \1/'
count=$(grep -cE "$broken" "$log")
if [ "$count" -gt 0 ]; then
  echo "build-api: $count broken link(s) or reference(s)" >&2
  exit 1
fi
echo "API reference: $(pwd)/artifacts/docs/index.html"
