#!/usr/bin/env bash
# Install the Debian packages the test suite uses as independent oracles, if missing.
#   ipfs-cid  — `ipfs_cid FILE` prints Kubo's default CIDs ({"CIDv0": "Qm...", "CIDv1": "bafy..."})
#   chromium  — headless browser that screenshots the dashboard (tests/test_dashboard.py)
# Add a package by appending it to PACKAGES (one line, with why it is needed above).
# Non-interactive; a no-op when everything is present; without root it only reports.
set -euo pipefail

PACKAGES=(ipfs-cid chromium)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
  command -v sudo >/dev/null || { echo "ensure-apt: missing ${missing[*]} (run as root to install)"; exit 0; }
else
  SUDO=
fi
echo "ensure-apt: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
