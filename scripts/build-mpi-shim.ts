/**
 * Compiles native/mpi-shim.c with the system's mpicc into .cache/mpi-shim/ (what a launched rank
 * otherwise does on first use), so that the ranks of a job start with it built: container
 * images, cluster jobs.  npm run build:mpi-shim   (MPICC=... for another MPI's compiler wrapper)
 */
import { buildMpiShim } from '../runtime/collective-mpi';

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  console.log('usage: npm run build:mpi-shim   (MPICC=... for another MPI\'s compiler wrapper; prints the built library\'s path)');
} else {
  try {
    console.log(buildMpiShim());
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    process.exit(1);
  }
}
