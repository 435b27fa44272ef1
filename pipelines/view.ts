/**
 * The live dashboard (view/server.ts) over a folder of runs: every run's status, flags and
 * curves in the browser, growing while the runs write them. Read-only; listens on 127.0.0.1
 * unless --host says otherwise, and then requires the printed URL's token (docs/dashboard.md).
 *
 *   npm run view                                   # runs/ at http://127.0.0.1:6006/
 *   npm run view -- --runs runs/refine-sweep --port 6007
 *   npm run view -- --host 0.0.0.0                 # reachable from other machines, with a token
 */
import { num, parseFlags, runMain } from '../runtime/cli';
import { serveRunsHere } from '../view/server';

const USAGE = 'Live dashboard of training runs.\n  npm run view -- [options]';
const FLAGS = {
  runs: { description: 'folder of runs, searched at any depth for folders holding metrics.jsonl or a checkpoint', default: 'runs' },
  port: { description: 'port to listen on (0: any free one)', default: '6006' },
  host: { description: 'address to listen on; beyond loopback every request needs the printed token', default: '127.0.0.1' },
} as const;
export const DEFINITION = { name: 'view', script: 'pipelines/view.ts', usage: USAGE, flags: FLAGS };

/** Serves the dashboard until SIGINT/SIGTERM. */
export async function view(argv: string[]): Promise<void> {
  const f = parseFlags(USAGE, FLAGS, argv);
  const port = num('port', f.port, { integer: true, min: 0, max: 65535 });
  const server = await serveRunsHere({ runsDir: f.runs!, port, host: f.host });
  console.log('[view] Ctrl-C to stop');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
}

if (require.main === module) runMain(() => view(process.argv.slice(2)));
