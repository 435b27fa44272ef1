/**
 * The dashboard's own thread (started by serveRuns, view/server.ts): runs the server here and
 * reports to the starting thread; 'close' from it stops the server and ends the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { serveRunsHere, ServeRunsOptions, WorkerMessage } from './server';

const port = parentPort!;
const tell = (m: WorkerMessage) => port.postMessage(m);
const opts = workerData as Omit<ServeRunsOptions, 'log'>;
serveRunsHere({ ...opts, log: (line) => tell({ kind: 'log', line }) }).then(
  (server) => {
    tell({ kind: 'listening', url: server.url });
    port.on('message', (m) => {
      if (m === 'close') void server.close().then(() => port.close());
    });
  },
  (err: Error) => {
    tell({ kind: 'failed', message: err.message });
    port.close();
  },
);
