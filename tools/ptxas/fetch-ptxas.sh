#!/usr/bin/env bash
# Prints the path of NVIDIA's PTX assembler, ptxas from CUDA 11.8 (sm_50..sm_90, PTX ISA <= 7.8), downloading
# Debian's nvidia-cuda-toolkit package (non-free) once into a cache and unpacking it there. No root needed;
# apt's own configuration and state are not touched (a private source list, lists and cache in a temp folder).
#   ptxas=$(tools/ptxas/fetch-ptxas.sh) && "$ptxas" -arch=sm_90 -v kernel.ptx -o /dev/null
# Cache: $ENGINE_PTXAS_CACHE, else ~/.cache/engine-ptxas. nvdisasm lies beside ptxas.
set -euo pipefail
cache=${ENGINE_PTXAS_CACHE:-$HOME/.cache/engine-ptxas}
ptxas=$cache/usr/bin/ptxas
if [ ! -x "$ptxas" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sources=/etc/apt/sources.list.d/debian.sources
  if [ ! -f "$sources" ]; then echo "fetch-ptxas: $sources not found: this script takes Debian's mirror from it" >&2; exit 1; fi
  mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial"
  # The same mirror and suites as the system's, non-free only.
  sed 's/^Components: .*/Components: non-free/' "$sources" > "$work/sources/non-free.sources"
  apt_private=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources" -o Dir::State::Lists="$work/lists"
               -o Dir::Cache="$work/cache" -o Dir::Cache::Archives="$work/cache/archives" -o APT::Sandbox::User="$(id -un)")
  apt-get -qq "${apt_private[@]}" update >&2
  (cd "$work" && apt-get -qq "${apt_private[@]}" download nvidia-cuda-toolkit >&2)
  mkdir -p "$cache"
  dpkg-deb -x "$work"/nvidia-cuda-toolkit_*.deb "$cache"
fi
"$ptxas" --version > /dev/null
echo "$ptxas"
