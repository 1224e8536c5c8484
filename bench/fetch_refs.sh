#!/usr/bin/env bash
# Fetch the original implementations the benchmark compares against into .bench_refs/ (git-ignored through
# .git/info/exclude; never committed). Needs git and network. The commits are the ones the results were made with.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench_refs
grep -qx '/.bench_refs/' .git/info/exclude 2>/dev/null || echo '/.bench_refs/' >> .git/info/exclude
fetch() {  # name url commit
  local dir=".bench_refs/$1"
  if [ -d "$dir" ]; then echo "$dir: present"; return; fi
  git clone --quiet "$2" "$dir"
  git -C "$dir" checkout --quiet "$3"
  rm -rf "$dir/.git"
  echo "$dir: $3"
}
fetch stylegan2-pytorch     https://github.com/rosinality/stylegan2-pytorch   bef283a
fetch encoder4editing       https://github.com/omertov/encoder4editing       99ea505
fetch stylegan2-ada-pytorch https://github.com/NVlabs/stylegan2-ada-pytorch  d72cc7d
fetch PTI                   https://github.com/danielroich/PTI               da94d59  # recipe constants only
du -sh .bench_refs
