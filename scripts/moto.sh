#!/usr/bin/env bash
# Installs moto's server (PyPI `moto[server]`) for the `python3` on PATH if it is missing, then
# prints the absolute path of its `moto_server` executable. Used by .ci/run for the
# `kek_aws_kms` tests (TEST_MOTO_SERVER). Exits non-zero, printing why on stderr, if moto
# cannot be installed or its executable is absent.
set -euo pipefail

command -v python3 >/dev/null 2>&1 || { echo "moto: FAIL: python3 not found" >&2; exit 1; }

# `moto_server` needs the server extra (flask, werkzeug) as well as moto itself.
if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  echo "moto: moto[server] missing; installing it from PyPI" >&2
  # Into python3's own environment (a virtualenv or pyenv), else the user's site-packages;
  # Debian's system Python refuses both without --break-system-packages.
  if ! python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' >&2; then
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages 'moto[server]>=5,<6' >&2 \
      || { echo "moto: FAIL: pip could not install moto[server]" >&2; exit 1; }
  fi
fi

# The console script sits next to python3's scripts (or the user's, after --user).
for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
           "$(python3 -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))')"; do
  if [ -x "$dir/moto_server" ]; then
    echo "$dir/moto_server"
    exit 0
  fi
done
echo "moto: FAIL: moto_server not found next to python3's scripts" >&2
exit 1
