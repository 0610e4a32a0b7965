#!/usr/bin/env bash
# The int8 kernels' tests on aarch64 (NEON), cross-built and run under qemu-aarch64: the NEON
# path must give the integer reference's bytes, as every x86-64 path does. Skipped, saying so,
# where the cross linker or qemu is missing (.ci/run installs gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross and qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "test-arm64: skipped: no aarch64-linux-gnu-gcc or qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
  exit 0
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
  cargo test -p ferroconv-kernels --target aarch64-unknown-linux-gnu --release --test quant
