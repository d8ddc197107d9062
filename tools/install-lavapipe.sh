#!/usr/bin/env bash
# Installs a software Vulkan driver (Mesa lavapipe) for GPU-less Debian 12 machines.
#
# 1. The system packages `libvulkan1 mesa-vulkan-drivers` (Mesa 22.3; also pulls in libllvm15).
# 2. Mesa 25 lavapipe from bookworm-backports, unpacked privately into $DEST (default .vk/)
#    without replacing the system Mesa: it is 4-8x faster for compute. The mirror is taken from
#    the machine's own apt sources; no registry host name is written here.
#
# Prints nothing on stdout but the `export` lines to use Mesa 25 (eval them), or nothing when
# only the system driver could be installed. Progress goes to stderr.
set -euo pipefail
DEST="${1:-$(pwd)/.vk}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
log() { echo "[install-lavapipe] $*" >&2; }

if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  log "installing libvulkan1 mesa-vulkan-drivers"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >&2
fi

LIB="$DEST/root/usr/lib/x86_64-linux-gnu"
if [ ! -f "$LIB/libvulkan_lvp.so" ]; then
  # Mirror URI from the machine's own sources (deb822 first, then one-line format).
  MIRROR=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
    MIRROR=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  if [ -z "$MIRROR" ]; then
    log "no apt mirror found; staying on the system Mesa"; exit 0
  fi
  mkdir -p "$DEST/apt/lists/partial" "$DEST/apt/cache/archives/partial" "$DEST/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm-backports main" \
    > "$DEST/apt/sources.list"
  APT_OPTS=(-o "Dir::Etc::sourcelist=$DEST/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
            -o "Dir::State::Lists=$DEST/apt/lists" -o "Dir::Cache=$DEST/apt/cache"
            -o APT::Sandbox::User=root)
  log "fetching Mesa 25 lavapipe from bookworm-backports"
  if apt-get "${APT_OPTS[@]}" update -qq >&2 && \
     (cd "$DEST/debs" && apt-get "${APT_OPTS[@]}" download -qq \
        mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports \
        libdrm-amdgpu1/bookworm-backports >&2); then
    for deb in "$DEST"/debs/*.deb; do dpkg -x "$deb" "$DEST/root"; done
  else
    log "bookworm-backports unavailable; staying on the system Mesa"; exit 0
  fi
fi
if [ -f "$LIB/libvulkan_lvp.so" ]; then
  # Our own ICD manifest with an absolute library path, so the loader cannot pick up the
  # system's Mesa 22 lavapipe by name.
  API=$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$DEST"/root/usr/share/vulkan/icd.d/lvp_icd*.json | head -1)
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"%s"}}\n' \
    "$LIB/libvulkan_lvp.so" "${API:-1.3.0}" > "$DEST/lvp_icd.json"
  echo "export VK_ICD_FILENAMES=$DEST/lvp_icd.json"
  echo "export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
