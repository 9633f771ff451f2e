#!/usr/bin/env bash
# Installs SoftHSM2 (Debian package `softhsm2`) if `softhsm2-util` is missing, then prints the
# path of its PKCS#11 module. Used by .ci/run for the `kek_pkcs11` tests (TEST_SOFTHSM2_MODULE).
# Exits non-zero, printing why on stderr, if SoftHSM2 cannot be installed or its module is absent.
set -euo pipefail

if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "softhsm2: softhsm2-util missing; installing Debian's softhsm2" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -qq softhsm2 >&2; then
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq softhsm2 >&2
  fi
fi
command -v softhsm2-util >/dev/null 2>&1 || { echo "softhsm2: FAIL: softhsm2-util still missing" >&2; exit 1; }

for module in /usr/lib/softhsm/libsofthsm2.so "/usr/lib/$(uname -m)-linux-gnu/softhsm/libsofthsm2.so"; do
  if [ -f "$module" ]; then
    echo "$module"
    exit 0
  fi
done
echo "softhsm2: FAIL: libsofthsm2.so not found" >&2
exit 1
