#!/usr/bin/env bash
# The packages as a user gets them: pack everything packable into a local feed, build a new console app on Engine,
# Engine.Onnx and ONNX Runtime from it and run Program.cs (GLA against the recurrence, an ONNX model with and
# without the hand-over, every source file inside the symbol packages' PDBs), then install the engine tool from the
# feed and run it. Exits non-zero on any failure.
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/../.."
root=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'echo "pack-check: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR
feed="$work/feed"

# A version of its own, so no NuGet cache can hand back an earlier pack.
suffix="packcheck.$(date +%s)"
echo "pack-check: dotnet pack -c Release -o $feed --version-suffix $suffix"
dotnet pack -c Release -o "$feed" --version-suffix "$suffix" -nologo -v quiet
cli=$(cd "$feed" && ls Engine.Cli.*.nupkg)
version=${cli#Engine.Cli.}
version=${version%.nupkg}
for package in Engine.Kernels Engine Engine.Onnx Engine.Cli; do
  [ -f "$feed/$package.$version.nupkg" ] && [ -f "$feed/$package.$version.snupkg" ] \
    || { echo "pack-check: $package $version and its symbols were not packed" >&2; exit 1; }
done
unexpected=$(cd "$feed" && ls | grep -vE "^Engine(\.Kernels|\.Onnx|\.Cli)?\.$version\.s?nupkg$" || true)
[ -z "$unexpected" ] || { echo "pack-check: packed what must not be packed: $unexpected" >&2; exit 1; }
(cd "$feed" && stat -c '%s %n' ./*.nupkg | awk '{printf "pack-check: %8.2f MB %s\n", $1 / 1e6, substr($2, 3)}')

# What the app and the tool restore goes to a folder of this check's own (nothing is left in the machine's
# package folder); the dependencies the repository restored are read from the machine's folder in place.
global=$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')
export NUGET_PACKAGES="$work/packages"

app="$work/app"
dotnet new console -o "$app" -n PackCheck --no-restore >/dev/null
cat > "$app/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="engine-packed" value="$feed" />
  </packageSources>
  <fallbackPackageFolders>
    <add key="machine" value="$global" />
  </fallbackPackageFolders>
</configuration>
CONFIG
ort=$(sed -n 's/.*PackageVersion Include="Microsoft.ML.OnnxRuntime" Version="\([^"]*\)".*/\1/p' Directory.Packages.props)
dotnet add "$app" package Engine --version "$version" --no-restore >/dev/null
dotnet add "$app" package Engine.Onnx --version "$version" --no-restore >/dev/null
dotnet add "$app" package Microsoft.ML.OnnxRuntime --version "$ort" --no-restore >/dev/null
cp tools/pack-check/Program.cs "$app/Program.cs"
echo "pack-check: a new console app on Engine, Engine.Onnx $version and Microsoft.ML.OnnxRuntime $ort"
dotnet run --project "$app" -c Release -- "$root/samples/models/gla_block.onnx" "$feed"

# Without ORT's native package, opening a model fails saying which package to add.
dotnet remove "$app" package Microsoft.ML.OnnxRuntime >/dev/null
rm -rf "$app/bin" "$app/obj"
if printed=$(dotnet run --project "$app" -c Release -- "$root/samples/models/gla_block.onnx" "$feed" 2>&1); then
  echo "pack-check: the app ran without ONNX Runtime's native package" >&2; exit 1
fi
grep -q "add the package Microsoft.ML.OnnxRuntime" <<<"$printed" \
  || { echo "pack-check: without ONNX Runtime's native package the app printed: $printed" >&2; exit 1; }
echo "pack-check: without ONNX Runtime's native package, the error names it"

echo "pack-check: dotnet tool install Engine.Cli --version $version"
dotnet tool install Engine.Cli --version "$version" --tool-path "$work/tools" --add-source "$feed" >/dev/null
printed=$("$work/tools/engine" --version)
case "$printed" in
  "$version"|"$version+"*) echo "pack-check: engine --version: $printed" ;;
  *) echo "pack-check: engine --version printed '$printed', expected $version" >&2; exit 1 ;;
esac
"$work/tools/engine" bench-model "$root/samples/models/gla_block.onnx" --dim B=1 --dim T=64 --repeats 1 >/dev/null
echo "pack-check: engine bench-model ran a model in ONNX Runtime with the hand-over"
echo "pack-check: OK in ${SECONDS} s"
