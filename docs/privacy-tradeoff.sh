#!/usr/bin/env bash
# The privacy/quality trade-off, measured (issue 5, section 3).
#
# For each schema: encode the three synthetic agency exports, link them, measure linkage F1
# against truth.csv, and run the re-identification risk check on health.csv. Prints a Markdown
# table. Everything runs on fictitious data written by `bloomlink synth`.
#
# Usage: docs/privacy-tradeoff.sh BLOOMLINK SYNTH_DIR [SCHEMA.toml ...]
#   BLOOMLINK  a release build of bloomlink (target/release/bloomlink)
#   SYNTH_DIR  output of `bloomlink synth --children N --seed S -o SYNTH_DIR`
#   SCHEMA     schema files [default: testdata/schemas/*.toml]; the one named none.toml is the
#              baseline for ΔF1
# Needs: bash, python3 (JSON parsing), /usr/bin/time is not required.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
bin=$(realpath "$1")
pop=$(realpath "$2")
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ]; then
    schemas=("$@")
else
    schemas=("$here"/testdata/schemas/*.toml)
fi
for f in "$bin" "$pop/health.csv" "$pop/police.csv" "$pop/education.csv" "$pop/truth.csv"; do
    [ -e "$f" ] || { echo "error: $f not found" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
key="$work/demo.key"
cp "$here/keys/demo.key" "$key"
chmod 600 "$key"
export BLOOMLINK_AUDIT_LOG="$work/audit.jsonl"

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$@"; }
now() { date +%s.%N; }

declare -A f1 rows
order=()
for schema in "${schemas[@]}"; do
    name=$(basename "$schema" .toml)
    order+=("$name")
    out="$work/$name"
    mkdir -p "$out"
    t0=$(now)
    for agency in health police education; do
        "$bin" encode --quiet --key "$key" --schema "$schema" --columns "$pop/$agency.toml" \
            "$pop/$agency.csv" -o "$out/$agency.clk" --json > "$out/$agency.encode.json" 2>/dev/null
    done
    t1=$(now)
    "$bin" match "$out/health.clk" "$out/police.clk" "$out/education.clk" -o "$out/links" > /dev/null
    "$bin" evaluate --truth "$pop/truth.csv" "$out/links/links.csv" --json > "$out/eval.json"
    t2=$(now)
    "$bin" risk --key "$key" --schema "$schema" --columns "$pop/health.toml" "$pop/health.csv" \
        --json > "$out/risk.json"
    t3=$(now)
    f1[$name]=$(json "$out/eval.json" "d['overall']['f1']")
    row=$(json "$out/risk.json" "' | '.join('%.3f %%' % (100*a['share_reidentified']) for a in d['attacks']) + ' | ' + '%.2f %%' % max([100*f['share_of_records'] for f in d['attacks'][-1]['fields']] + [0]) + ' | ' + d['verdict']")
    rows[$name]="$row | $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s | $(printf '%.1f' "$(echo "$t3 - $t2" | bc)") s"
done

base=${f1[none]:-}
echo "| schema | F1 | ΔF1 vs none (points) | records re-identified: frequency | pattern mining | all attacks | field values re-identified (worst field) | verdict | encode time (3 agencies) | risk time |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for name in "${order[@]}"; do
    f=${f1[$name]}
    if [ -n "$base" ]; then
        d=$(python3 -c "print('%+.2f' % (100*($f-$base)))")
    else
        d="–"
    fi
    printf '| %s | %.4f | %s | %s |\n' "$name" "$f" "$d" "${rows[$name]}"
done
