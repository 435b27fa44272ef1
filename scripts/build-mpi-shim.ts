/**
 * Compiles native/mpi-shim.c with the system's mpicc into .cache/mpi-shim/ (what a launched rank
 * otherwise does on first use), so that the ranks of a job start with it built: container
 * images, cluster jobs.  npm run build:mpi-shim   (MPICC=... for another MPI's compiler wrapper)
 */
import { buildMpiShim } from '../runtime/collective-mpi';

console.log(buildMpiShim());
