// Atomic file writes: data goes to a temporary file in the same directory, is flushed to disk,
// then renamed over the target, and the directory is flushed so the rename itself survives a
// power cut. A crash or kill mid-write leaves the old file (or none), never a half-written one;
// the temporary file such a kill leaves behind is removed by the next write to the same target.
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Creates `.<name>.<pid>.<ms>.tmp` (hidden, next to the target, naming the process writing it)
 * exclusively: worker threads share the pid, so two writes to one target in the same millisecond
 * would otherwise write the same temp file and rename each other's data over the target. A name
 * already taken is passed over for the next millisecond's.
 */
function createTemp(path: string): { tmp: string; fd: number } {
  const ms = Date.now();
  for (let i = 0; ; i++) {
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${ms + i}.tmp`);
    try {
      return { tmp, fd: openSync(tmp, 'wx') };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || i >= 1000) throw e;
    }
  }
}

/**
 * When this process started, in ms since the epoch, a day early: the wall clock can be stepped
 * back while we run (a VM's clock sync did so during CI runs, by more than a minute, and this
 * process's own temp file then looked older than the process). A dead same-pid writer's file
 * younger than that stays until a later writer clears it; a live writer's is never removed.
 */
const startedAt = Date.now() - process.uptime() * 1000 - 86_400_000;

/** False only when no process has this pid (kill(pid, 0) fails with ESRCH; EPERM means one does). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Removes the temporary files earlier writes to `path` left behind when their process died
 * mid-write. Only files of exactly our naming pattern for this target, and only when their pid
 * is not a live process: a file of a live writer (another process, or a worker thread of this
 * one, which shares our pid) is never touched. Best effort: a file that cannot be removed stays.
 */
function removeStaleTemps(path: string): void {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    // Exactly two numeric fields after the prefix, so `.a.1.<pid>.<ms>.tmp` (the temp of a
    // target named `a.1`) never matches the target `a`.
    const m = /^(\d+)\.(\d+)\.tmp$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (!Number.isSafeInteger(pid) || pid < 1) continue;
    if (pid === process.pid) {
      // Our pid, but written before this process started: a dead process that had the same pid
      // (containers hand out the same small pids run after run). Ours, or a worker's: keep.
      if (Number(m[2]) >= startedAt) continue;
    } else if (processExists(pid)) continue;
    try {
      rmSync(join(dir, name));
    } catch {
      // Removed by another writer meanwhile, or not ours to remove: leave it.
    }
  }
}

/**
 * Flushes a directory's entries (the rename just made) to disk. POSIX only: Windows cannot
 * open a directory this way (and NTFS journals renames). Some filesystems refuse fsync on a
 * directory (EINVAL, EISDIR), and a directory we may write but not read cannot be opened
 * (EACCES, EPERM): the write itself has succeeded, so those are skipped.
 */
function fsyncDirectory(dir: string): void {
  if (process.platform === 'win32') return;
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOTSUP') throw e;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

export function writeFileAtomic(path: string, chunks: Uint8Array[]): void {
  removeStaleTemps(path);
  const created = createTemp(path);
  const tmp = created.tmp;
  let fd = created.fd;
  try {
    for (const c of chunks) {
      let off = 0;
      while (off < c.length) off += writeSync(fd, c, off, c.length - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDirectory(dirname(path));
}
