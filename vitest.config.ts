import { defineConfig } from 'vitest/config';

// Native code runs in forked processes: a fault in one suite cannot take down the runner, and
// each file gets a fresh addon state (thread count, SIMD level).
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    // A leftover `.only` would silently skip every other test: fail the run instead.
    allowOnly: false,
  },
});
