#!/usr/bin/env bash
# Install the Debian packages the test suite uses as independent oracles, if missing.
#   ipfs-cid  — `ipfs_cid FILE` prints Kubo's default CIDs ({"CIDv0": "Qm...", "CIDv1": "bafy..."})
#   chromium  — headless browser that screenshots the dashboard (tests/test_dashboard.py)
#   docker-compose — `docker-compose config` validates docker-compose.yml (tests/test_compose.py);
#                    installed without its Recommends (docker.io, containerd): no engine runs here
# Add a package by appending it to PACKAGES (one line, with why it is needed above); LEAN ones
# are installed with --no-install-recommends.
# Non-interactive; a no-op when everything is present; without root it only reports.
set -euo pipefail

PACKAGES=(ipfs-cid chromium docker-compose)
LEAN=(docker-compose)

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
full=() lean=()
for pkg in "${missing[@]}"; do
  if [[ " ${LEAN[*]} " == *" $pkg "* ]]; then lean+=("$pkg"); else full+=("$pkg"); fi
done
[ ${#full[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${full[@]}"
[ ${#lean[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}"
