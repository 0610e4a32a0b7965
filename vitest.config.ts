import { defineConfig } from 'vitest/config';

// Native code runs in forked processes: a fault in one suite cannot take down the runner, and
// each file gets a fresh addon state (thread count, SIMD level).
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    // Conv 'auto' follows its fixed rules in the suites, so which algorithm a shape runs (and
    // so the last bits of results compared at tight tolerances) does not depend on this run's
    // timings. test/tune.test.ts turns tuning on to test it, and runs a zoo model tuned.
    env: { FERROCONV_DETERMINISTIC: '1' },
    // A leftover `.only` would silently skip every other test: fail the run instead.
    allowOnly: false,
  },
});
