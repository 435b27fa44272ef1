#!/usr/bin/env bash
# Software Vulkan for tests and CI: Mesa 25 lavapipe from Debian's bookworm-backports and the Vulkan
# loader (libvulkan1), downloaded with apt-get into a private apt state and extracted with dpkg-deb
# into .cache/vulkan/ (git-ignored); nothing is installed system-wide and no root is needed.
# Debian 12's own lavapipe (Mesa 22.3) is rejected by Dawn (it lacks
# shaderUniformBufferArrayDynamicIndexing), Mesa 25.0 from backports is accepted.
# runtime/backend.ts finds the result by itself (.cache/vulkan/icd.json); a second run only checks it.
# Usage: npm run setup:vulkan [-- --force]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.cache/vulkan"
if [[ "${1:-}" != --force && -f "$root/icd.json" ]]; then
  echo "[setup:vulkan] ready: $root/icd.json"
  exit 0
fi
rm -rf "$root"
apt="$root/apt"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$root/debs" "$root/sysroot"
cat >"$apt/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SOURCES
opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$apt/lists"
  -o "Dir::Cache=$apt/cache" -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Architecture=amd64"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
echo "[setup:vulkan] apt-get update (bookworm, bookworm-backports; private lists in $apt)"
apt-get "${opts[@]}" -qq update
# lavapipe, the libdrm it needs (newer than Debian 12's), the loader, and whichever of lavapipe's
# other dependencies this system lacks
packages=(mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports libvulkan1/bookworm)
for dep in $(apt-cache "${opts[@]}" depends mesa-vulkan-drivers/bookworm-backports | awk '/Depends:/ && $2 !~ /^</ {print $2}'); do
  [[ " ${packages[*]} " == *" $dep/"* ]] && continue
  dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed' || packages+=("$dep/bookworm")
done
echo "[setup:vulkan] downloading ${packages[*]}"
(cd "$root/debs" && apt-get "${opts[@]}" -qq download "${packages[@]}")
for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root/sysroot"; done
lib="$root/sysroot/usr/lib/x86_64-linux-gnu"
lvp="$lib/libvulkan_lvp.so"
[[ -f "$lvp" && -f "$lib/libvulkan.so.1" ]] || { echo "[setup:vulkan] lavapipe or the loader is missing after extraction" >&2; exit 1; }
missing=$(LD_LIBRARY_PATH="$lib" ldd "$lvp" | awk '/not found/ {print $1}')
[[ -z "$missing" ]] || { echo "[setup:vulkan] libvulkan_lvp.so needs libraries this system lacks: $missing" >&2; exit 1; }
# the other drivers of the package (intel, radeon, ...) and its layers are not used
find "$lib" -maxdepth 1 \( -name 'libvulkan_*.so' ! -name 'libvulkan_lvp.so' -o -name 'libVkLayer_*' \) -delete
cat >"$root/icd.json" <<JSON
{ "file_format_version": "1.0.1", "ICD": { "library_path": "$lvp", "api_version": "1.4.0" } }
JSON
rm -rf "$apt" "$root/debs"
echo "[setup:vulkan] lavapipe ready: $root/icd.json ($(du -sh "$root" | cut -f1))"
