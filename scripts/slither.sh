#!/usr/bin/env bash
# Static analysis of contracts/ with slither (config: slither.config.json; it compiles through
# `npx hardhat compile`, offline). Fails when a High or Medium finding is left that is not
# explained in the source by a `// slither-disable-next-line <detector> -- <reason>` comment.
set -euo pipefail
cd "$(dirname "$0")/.."

SLITHER="${SLITHER:-.venv/bin/slither}"
PYTHON="${PYTHON:-.venv/bin/python}"
report="$(mktemp -d)/slither.json"
trap 'rm -rf "$(dirname "$report")"' EXIT

# slither exits non-zero whenever it finds anything; the verdict is ours, below.
"$SLITHER" . --json "$report" --fail-none >/dev/null 2>"$report.log" || {
  cat "$report.log" >&2
  echo "slither failed to run" >&2
  exit 2
}

"$PYTHON" - "$report" <<'PY'
import json, sys

data = json.load(open(sys.argv[1]))
if not data.get("success", False):
    sys.exit(f"slither reported an error: {data.get('error')}")
found = data.get("results", {}).get("detectors", [])
counts = {}
for r in found:
    counts[r["impact"]] = counts.get(r["impact"], 0) + 1
blocking = [r for r in found if r["impact"] in ("High", "Medium")]
for r in blocking:
    print(f"{r['impact']:6} {r['check']:24} {r['first_markdown_element']}\n  {r['description'].strip()}\n")
summary = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())) or "no findings"
print(f"slither: {summary}")
if blocking:
    sys.exit(f"{len(blocking)} unexplained high/medium finding(s): fix them or explain them with "
             "`// slither-disable-next-line <detector> -- <reason>`")
PY
