#!/usr/bin/env bash
# The auth decision alone (credential string -> allow/deny), at 1 and 1,000,000 keys:
# runs the criterion benchmark crates/auth/benches/auth_decision.rs with a short
# measurement time and prints a markdown table (case, keys, median ns, mean ns) to stdout.
# Build output and criterion's own report go to stderr. Under 90 s on 2 cores once built.
#
# Environment knobs: AUTH_BENCH_WARMUP (s, default 0.3), AUTH_BENCH_MEASURE (s, 1),
# AUTH_BENCH_KEYS (comma-separated snapshot sizes, default 1,1000000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(scripts/setup.sh)"

export AUTH_BENCH_WARMUP="${AUTH_BENCH_WARMUP:-0.3}"
export AUTH_BENCH_MEASURE="${AUTH_BENCH_MEASURE:-1}"
export AUTH_BENCH_KEYS="${AUTH_BENCH_KEYS:-1,1000000}"
CRITERION_DIR="$CARGO_TARGET_DIR/criterion/auth_decision"

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

echo "auth.sh: building the benchmark" >&2
cargo bench -p keyplane-auth --bench auth_decision --no-run >&2
# Results of an earlier run must not pass for this one's.
rm -rf "$CRITERION_DIR"
echo "auth.sh: measuring (warm-up ${AUTH_BENCH_WARMUP} s, ${AUTH_BENCH_MEASURE} s per case)" >&2
T0=$(date +%s)
if ! cargo bench -p keyplane-auth --bench auth_decision 2>&1 | tee "$LOG" >&2; then
  echo "auth.sh: the benchmark failed" >&2
  exit 1
fi
ELAPSED=$(($(date +%s) - T0))

python3 - "$CRITERION_DIR" "$LOG" "$ELAPSED" <<'PY'
import json, os, re, sys

root, log, elapsed = sys.argv[1], sys.argv[2], sys.argv[3]
order = ["allow_restricted", "allow_unrestricted", "deny_unknown_key", "deny_invalid_key",
         "part_lookup_hash", "part_check_key", "part_restrictions"]
rows = []
for case in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    case_dir = os.path.join(root, case)
    for keys in os.listdir(case_dir):
        est = os.path.join(case_dir, keys, "new", "estimates.json")
        if not keys.isdigit() or not os.path.isfile(est):
            continue
        e = json.load(open(est))
        rows.append((case, int(keys), e["median"]["point_estimate"], e["mean"]["point_estimate"]))
if not rows:
    sys.exit("auth.sh: criterion wrote no estimates under " + root)
rank = {c: i for i, c in enumerate(order)}
rows.sort(key=lambda r: (r[1], rank.get(r[0], len(order)), r[0]))

def ns(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"

print("## Auth decision (criterion, crates/auth/benches/auth_decision.rs)")
print()
print("| case | keys | median ns | mean ns |")
print("| --- | ---: | ---: | ---: |")
for case, keys, median, mean in rows:
    print(f"| {case} | {keys:,} | {ns(median)} | {ns(mean)} |")
print()
big = max(r[1] for r in rows)
allowed = [r for r in rows if r[1] == big and r[0].startswith("allow_")]
if allowed:
    worst = max(allowed, key=lambda r: r[2])
    verdict = "met" if worst[2] <= 1000 else "missed"
    print(f"Target (median at most 1,000 ns at 1,000,000 keys): {verdict}; "
          f"slowest allowed case {worst[0]} at {big:,} keys: {ns(worst[2])} ns.")
for line in open(log):
    m = re.match(r"snapshot: (.*)", line.strip())
    if m:
        print(f"Snapshot memory: {m.group(1)}.")
print("Cases: allow_* and deny_unknown_key spread requests over 1,000 keys; part_* are the "
      "allowed decision's steps alone. The allowed cases end with the quota step (the clock "
      "read and the call counted in its project and model's window, part_quota alone).")
print(f"Measured in {elapsed} s (warm-up {os.environ['AUTH_BENCH_WARMUP']} s, "
      f"{os.environ['AUTH_BENCH_MEASURE']} s per case).")
PY
