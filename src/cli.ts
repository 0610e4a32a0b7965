#!/usr/bin/env node
// The `ferroconv` command's entry. `--version` is answered here, and the subcommands (with the
// native addon they need) load afterwards, so that a missing or broken addon is one line on
// stderr like every other CLI error, and `--version` works without it.
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

// Read from ferroconv's own package.json at run time, so it is always the installed version;
// '../package.json' is the package root from both src/cli.ts and dist/cli.js.
function packageVersion(): string {
  return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--version' || argv[0] === '-v') {
    console.log(packageVersion());
    return 0;
  }
  let commands: typeof import('./cli/commands.js');
  try {
    commands = await import('./cli/commands.js');
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`ferroconv: cannot load the native addon: ${msg.split('\n')[0]}\n`);
    return 1;
  }
  return commands.main(argv);
}

function isEntryPoint(): boolean {
  try {
    return Boolean(process.argv[1]) && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
