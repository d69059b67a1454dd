#!/usr/bin/env bash
# Rebuild web-demo/dist/ from source and fail if it differs from the committed
# bundle. dist/ is what the plait binary embeds, so it must be the build of the
# committed sources (and lockfile). The build is deterministic: same sources and
# same package-lock.json give byte-identical files.
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --no-audit --no-fund
npm run build

stale=0
git diff --exit-code --stat -- dist/ || stale=1
untracked="$(git ls-files --others --exclude-standard -- dist/)"
if [ -n "$untracked" ]; then
  printf 'not committed:\n%s\n' "$untracked"
  stale=1
fi
if [ "$stale" -ne 0 ]; then
  echo "web-demo/dist/ does not match its sources: run 'npm ci && npm run build' in web-demo/ and commit dist/" >&2
  exit 1
fi
echo "web-demo/dist/ matches the sources"
