// The machine ceilings the comparison bench divides by: fmaPeakGflops and memoryBandwidthGbs
// return plausible numbers and reject bad arguments with messages naming them.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';

describe('fmaPeakGflops', () => {
  it('measures a positive, finite rate on 1 and 2 threads', () => {
    for (const threads of [1, 2]) {
      const g = native.fmaPeakGflops(threads, 20);
      expect(Number.isFinite(g)).toBe(true);
      expect(g).toBeGreaterThan(0.1);
    }
  });

  it('rejects bad arguments', () => {
    expect(() => native.fmaPeakGflops(0, 10)).toThrow('threads: expected 1..=1024, got 0');
    expect(() => native.fmaPeakGflops(1, 0)).toThrow('millis: expected 1..=60000, got 0');
    expect(() => native.fmaPeakGflops(1.5, 10)).toThrow('threads: expected a non-negative integer, got 1.5');
    expect(() => native.fmaPeakGflops(1, -3)).toThrow('millis: expected a non-negative integer, got -3');
  });
});

describe('memoryBandwidthGbs', () => {
  it('measures a positive, finite bandwidth', () => {
    const gbs = native.memoryBandwidthGbs(2);
    expect(Number.isFinite(gbs)).toBe(true);
    expect(gbs).toBeGreaterThan(0.1);
  });

  it('rejects bad arguments', () => {
    expect(() => native.memoryBandwidthGbs(0)).toThrow('threads: expected 1..=1024, got 0');
    expect(() => native.memoryBandwidthGbs(NaN)).toThrow('threads: expected a non-negative integer, got NaN');
  });
});
