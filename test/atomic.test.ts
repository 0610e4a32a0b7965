// Atomic writes clean up after writers that were killed mid-write (their temp files, once the
// writing process is gone) without touching a live writer's, and flush the directory after the
// rename so the new file survives a power cut.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { writeFileAtomic } from '../src/index.js';

// Records which descriptors fsyncSync flushes, to see the directory among them.
const flushed: { directory: boolean }[] = [];
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    fsyncSync: (fd: number) => {
      flushed.push({ directory: real.fstatSync(fd).isDirectory() });
      real.fsyncSync(fd);
    },
  };
});

/** The pid of a process that has exited (spawnSync waits for it and reaps it). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  expect(r.status).toBe(0);
  expect(() => process.kill(r.pid!, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  return r.pid!;
}

describe('writeFileAtomic', () => {
  it("removes a dead writer's temp file for the same target, keeps live writers' and other targets'", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-atomic-'));
    const target = join(dir, 'model.safetensors');
    const dead = deadPid();
    const stale = `.model.safetensors.${dead}.1700000000000.tmp`;
    // This process: a live writer (e.g. a worker thread). A second old, so its name is not the one
    // writeFileAtomic tries first for its own temp file (pid and ms; the test below covers that).
    const ours = `.model.safetensors.${process.pid}.${Date.now() - 1000}.tmp`;
    // Our pid but from 2023, before this process started: a dead process that had the same pid.
    const reusedPid = `.model.safetensors.${process.pid}.1700000000001.tmp`;
    const parent = `.model.safetensors.${process.ppid}.1700000000002.tmp`; // another live process
    const otherTarget = `.other.safetensors.${dead}.1700000000003.tmp`;
    const lookalike = `.model.safetensors.1.${dead}.1700000000004.tmp`; // the temp of a target 'model.safetensors.1'
    const unrelated = 'model.safetensors.bak';
    for (const name of [stale, ours, reusedPid, parent, otherTarget, lookalike, unrelated])
      writeFileSync(join(dir, name), 'partial');
    writeFileAtomic(target, [new TextEncoder().encode('new contents')]);
    expect(readFileSync(target, 'utf8')).toBe('new contents');
    expect(readdirSync(dir).sort()).toEqual(
      [ours, parent, otherTarget, lookalike, unrelated, 'model.safetensors'].sort(),
    );
  });

  it("never writes another writer's temp file: a name taken in the same millisecond is passed over", () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-atomic-'));
    const target = join(dir, 'w.bin');
    const now = Date.now();
    // A worker thread of this process writing the same target in the same millisecond.
    const other = `.w.bin.${process.pid}.${now}.tmp`;
    writeFileSync(join(dir, other), 'the other writer');
    const clock = vi.spyOn(Date, 'now').mockReturnValue(now);
    try {
      writeFileAtomic(target, [new TextEncoder().encode('mine')]);
    } finally {
      clock.mockRestore();
    }
    expect(readFileSync(target, 'utf8')).toBe('mine');
    expect(readFileSync(join(dir, other), 'utf8')).toBe('the other writer');
    expect(readdirSync(dir).sort()).toEqual([other, 'w.bin'].sort());
  });

  it('flushes the file, then (on POSIX) the directory after the rename', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-atomic-'));
    flushed.length = 0;
    writeFileAtomic(join(dir, 'a.bin'), [Uint8Array.from([1, 2, 3])]);
    expect(Array.from(readFileSync(join(dir, 'a.bin')))).toEqual([1, 2, 3]);
    expect(flushed).toEqual(
      process.platform === 'win32' ? [{ directory: false }] : [{ directory: false }, { directory: true }],
    );
    expect(readdirSync(dir)).toEqual(['a.bin']);
  });
});
