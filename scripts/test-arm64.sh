#!/usr/bin/env bash
# The int8 kernels', the linear layer's and the concatenation-reading conv's tests on aarch64
# (NEON), cross-built and run under qemu-aarch64: the NEON paths must give the integer
# reference's bytes (int8) and the f64 references' values, as the x86-64 paths do. Skipped, saying so,
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
  cargo test -p ferroconv-kernels --target aarch64-unknown-linux-gnu --release --test quant --test linear --test conv_cat
