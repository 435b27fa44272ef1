import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

/**
 * Starts a worker thread on a module of this project, .ts (under ts-node, as in specs and
 * `npx ts-node pipelines/...`) or compiled .js alike. Under ts-node the worker registers
 * ts-node itself, with the project's tsconfig located from here rather than from the cwd.
 */
export function spawnWorker(file: string, workerData?: unknown): Worker {
  if (!file.endsWith('.ts')) return new Worker(file, { workerData });
  const tsNode = require.resolve('ts-node');
  const project = path.join(__dirname, '../tsconfig.json');
  return new Worker(
    `require(${JSON.stringify(tsNode)}).register({ transpileOnly: true, project: ${JSON.stringify(project)} });` +
      `require(${JSON.stringify(file)});`,
    { eval: true, workerData },
  );
}

/** The sibling module `name` with this module's extension (.ts under ts-node, .js compiled). */
export function siblingModule(dir: string, name: string, self: string): string {
  return path.join(dir, `${name}${path.extname(self)}`);
}
