#!/usr/bin/env bash
# Commit subjects since FIRST (the first commit held to this rule) are at most 72 characters
# and say what changed; the why goes in the body. Run by `make lint`.
set -euo pipefail
FIRST=df8e515
if ! git rev-parse --quiet --verify "$FIRST^{commit}" >/dev/null; then
  echo "check-subjects: commit $FIRST is not in this clone's history (shallow?); not checked" >&2
  exit 0
fi
long=$(git log --no-merges --format='%s' "$FIRST^..HEAD" | awk 'length($0) > 72')
if [ -n "$long" ]; then
  echo "Commit subjects over 72 characters (put the why in the body):" >&2
  echo "$long" >&2
  exit 1
fi
