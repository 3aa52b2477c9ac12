#!/usr/bin/env bash
# Profile-guided build of bloomlink (README, "Performance"): the same code, laid out by the
# compiler for how it actually runs. It trains on synthetic data the tool generates itself,
# never on an agency's export, so the build is reproducible and holds no personal data.
#
#   benches/pgo-build.sh            # builds target/pgo/release/bloomlink
#   CHILDREN=50000 benches/pgo-build.sh
#
# Needs an llvm-profdata of rustc's LLVM version: the toolchain's (`rustup component add
# llvm-tools`, added here if missing), or LLVM_PROFDATA=PATH; exits 3 when there is none to be
# had. Output is identical to the plain release build's; only speed differs.
set -euo pipefail
cd "$(dirname "$0")/.."

children=${CHILDREN:-200000}
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=${LLVM_PROFDATA:-$sysroot/lib/rustlib/$host/bin/llvm-profdata}
if [ ! -x "$profdata" ]; then
  echo "== installing llvm-tools (for llvm-profdata)"
  if [ -n "${LLVM_PROFDATA:-}" ] || ! rustup component add llvm-tools; then
    echo "error: no llvm-profdata at $profdata; install the llvm-tools of rustc's LLVM" \
      "($(rustc -vV | sed -n 's/^LLVM version: //p')) and set LLVM_PROFDATA=PATH" >&2
    exit 3
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base_flags=${RUSTFLAGS:-}

echo "== instrumented build"
RUSTFLAGS="$base_flags -Cprofile-generate=$work/profiles" \
  cargo build --release --locked --target-dir target/pgo-gen
gen=target/pgo-gen/release/bloomlink

echo "== training on $children synthetic children"
export BLOOMLINK_AUDIT_LOG="$work/audit.jsonl"
"$gen" synth --children "$children" --seed 20261207 -o "$work/data" >/dev/null
install -m 600 keys/demo.key "$work/demo.key"
for agency in health education police; do
  "$gen" encode --key "$work/demo.key" --columns "$work/data/$agency.toml" \
    "$work/data/$agency.csv" -o "$work/$agency.clk" >/dev/null
done
"$gen" match "$work/health.clk" "$work/education.clk" "$work/police.clk" \
  -o "$work/links" >/dev/null

echo "== optimised build"
"$profdata" merge -o "$work/merged.profdata" "$work/profiles"
RUSTFLAGS="$base_flags -Cprofile-use=$work/merged.profdata" \
  cargo build --release --locked --target-dir target/pgo
echo "== built target/pgo/release/bloomlink"
