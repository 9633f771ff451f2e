#!/usr/bin/env bash
# Listing N patients with `clinic patient list` through SoftHSM2 (CLINIC_KEK=pkcs11) against
# environment keys, whole process, release build (BENCHMARKS.md, "Keys through a KEK provider").
# Builds the clinic, fills two SQLite databases in a temporary directory with N patients each
# (`patient add`), then times the two listings RUNS times each, interleaved (env, pkcs11, env,
# ...), and prints the median wall time of each and their ratio.
#
#   scripts/bench_kek_listing.sh [N=1000] [RUNS=15]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
runs=${2:-15}
module=$(bash scripts/softhsm2.sh)
cargo build --quiet --release -p example-app
clinic=$PWD/target/release/clinic
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fresh environment keys (the env database's, and the throwaway pair `keys generate` prints).
eval "$($clinic keys generate | grep '^ENCRYPTED' | sed 's/^/export /')"

populate() { # dir; the caller's environment selects the keys
  local url="sqlite://$1/clinic.db?mode=rwc"
  mkdir -p "$1"
  $clinic --database-url "$url" init >/dev/null
  if [ "${CLINIC_KEK:-env}" = pkcs11 ]; then $clinic --database-url "$url" keys init >/dev/null; fi
  for i in $(seq 1 "$n"); do
    $clinic --database-url "$url" patient add --first-name "P$i" --last-name Doe \
      --email "p$i@example.org" --dob 1980-05-06 >/dev/null
  done
}

populate "$work/env"
mkdir -p "$work/hsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work/hsm/tokens" > "$work/hsm/softhsm2.conf"
SOFTHSM2_CONF=$work/hsm/softhsm2.conf softhsm2-util --init-token --free --label clinic \
  --so-pin so-pin-1234 --pin user-pin-5678 >/dev/null
hsm_env=(SOFTHSM2_CONF="$work/hsm/softhsm2.conf" CLINIC_KEK=pkcs11 CLINIC_PKCS11_MODULE="$module"
  CLINIC_PKCS11_TOKEN=clinic CLINIC_PKCS11_PIN=user-pin-5678 CLINIC_PKCS11_KEY=kek)
env "${hsm_env[@]}" bash -c "$(declare -f populate); clinic=$clinic n=$n; populate $work/hsm"

list() { # dir, then env assignments
  local dir=$1; shift
  env "$@" "$clinic" --database-url "sqlite://$dir/clinic.db?mode=rwc" patient list \
    --limit "$n" --json >/dev/null
}
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }

list "$work/env" TZ=UTC; list "$work/hsm" "${hsm_env[@]}" # warm-up: page cache, module load
env_times=() hsm_times=()
for _ in $(seq 1 "$runs"); do
  t=$(date +%s%N); list "$work/env" TZ=UTC; env_times+=("$(ms "$t")")
  t=$(date +%s%N); list "$work/hsm" "${hsm_env[@]}"; hsm_times+=("$(ms "$t")")
done
env_ms=$(printf '%s\n' "${env_times[@]}" | median)
hsm_ms=$(printf '%s\n' "${hsm_times[@]}" | median)
echo "patient list --limit $n, median of $runs runs each (load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "environment keys   ${env_ms} ms"
echo "pkcs11 (SoftHSM2)  ${hsm_ms} ms"
awk -v a="$hsm_ms" -v b="$env_ms" 'BEGIN { printf "ratio              %.2f\n", a / b }'
