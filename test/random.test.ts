// The seedable generator: a state set from outside (a checkpoint's `rng`, user code) is checked,
// so no state can leave the generator stuck (all zero is xoshiro's fixed point) or malformed.
import { describe, expect, it } from 'vitest';
import { Rng, randn } from '../src/index.js';

describe('Rng.setState', () => {
  it('round-trips getState() exactly', () => {
    const a = new Rng(42);
    a.next();
    const b = new Rng(1);
    b.setState(a.getState());
    expect(b.getState()).toEqual(a.getState());
    expect(b.nextU32()).toBe(a.nextU32());
    const edge = new Rng(1);
    edge.setState([0, 0, 0, 0xffffffff]);
    expect(edge.getState()).toEqual([0, 0, 0, 0xffffffff]);
  });

  it.each([
    ['all zero', [0, 0, 0, 0], /Rng\.setState: expected a state that is not all zero/],
    ['NaN', [1, NaN, 3, 4], /Rng\.setState: state\[1\]: expected an integer in \[0, 2\^32\), got NaN/],
    ['string', ['a', 2, 3, 4], /state\[0\]: expected an integer in \[0, 2\^32\), got "a"/],
    ['too large', [1, 2, 2 ** 32, 4], /state\[2\]: expected an integer in \[0, 2\^32\), got 4294967296/],
    ['negative', [1, 2, 3, -1], /state\[3\]: expected an integer in \[0, 2\^32\), got -1/],
    ['fraction', [1.5, 2, 3, 4], /state\[0\]: expected an integer in \[0, 2\^32\), got 1.5/],
    ['too short', [1, 2, 3], /expected an array of 4 integers in \[0, 2\^32\), got \[1, 2, 3\]/],
    [
      'not an array',
      { 0: 1, 1: 2, 2: 3, 3: 4, length: 4 },
      /expected an array of 4 integers in \[0, 2\^32\), got an object/,
    ],
    ['null', null, /expected an array of 4 integers in \[0, 2\^32\), got null/],
  ])('rejects a bad state (%s) and keeps the old one', (_name, bad, msg) => {
    const rng = new Rng(7);
    const before = rng.getState();
    expect(() => rng.setState(bad as number[])).toThrow(msg);
    expect(rng.getState()).toEqual(before);
    // still a working generator: randn returns (an all-zero state made this loop forever)
    expect(Number.isFinite(randn([4], { rng }).data[0])).toBe(true);
  });
});
