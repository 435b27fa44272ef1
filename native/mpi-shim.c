/*
 * A thin C layer between Node (koffi, runtime/collective-mpi.ts) and the system's MPI.
 *
 * Why compiled and not called through raw FFI: MPI's handles are implementation types
 * (Open MPI: pointers to global structs, MPI_COMM_WORLD = &ompi_mpi_comm_world; MPICH: plain
 * ints such as 0x44000000), and its constants are macros. Compiled with the system's mpicc,
 * this file resolves them, so the Node side only sees ints, doubles, pointers and byte counts,
 * whichever MPI is installed.
 *
 * Every call returns 0 or an MPI error code; mr_error_string turns a code into MPI's message.
 * Counts are 64-bit on the Node side and sent in chunks of at most INT_MAX elements (MPI-3
 * counts are int).
 */
#include <mpi.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static MPI_Comm node_comm = MPI_COMM_NULL;
static int world_rank = -1;

/* Initialises MPI (MPI_THREAD_SERIALIZED: Node calls MPI from its main thread and from koffi's
 * async worker, never at the same time; collective.ts serialises them). out: rank, size,
 * local rank (rank among the processes sharing this node's memory), local size, provided
 * thread level. */
int mr_init(int *out) {
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
  if (rc != MPI_SUCCESS) return rc;
  /* errors come back as codes (turned into exceptions naming the rank) instead of aborting
   * inside MPI with no context */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &out[0]);
  MPI_Comm_size(MPI_COMM_WORLD, &out[1]);
  world_rank = out[0];
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, out[0], MPI_INFO_NULL, &node_comm);
  if (rc != MPI_SUCCESS) return rc;
  MPI_Comm_rank(node_comm, &out[2]);
  MPI_Comm_size(node_comm, &out[3]);
  out[4] = provided == MPI_THREAD_SINGLE ? 0 : provided == MPI_THREAD_FUNNELED ? 1 : provided == MPI_THREAD_SERIALIZED ? 2 : 3;
  return MPI_SUCCESS;
}

/* op: 0 sum, 1 max, 2 min. */
static MPI_Op op_of(int op) { return op == 1 ? MPI_MAX : op == 2 ? MPI_MIN : MPI_SUM; }

/* In-place all-reduce of n floats (float32 if dtype 0, float64 if 1). */
int mr_allreduce(void *buf, int64_t n, int dtype, int op) {
  MPI_Datatype t = dtype == 1 ? MPI_DOUBLE : MPI_FLOAT;
  size_t elem = dtype == 1 ? 8 : 4;
  for (int64_t done = 0; done < n;) {
    int chunk = (int)(n - done > INT_MAX ? INT_MAX : n - done);
    int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + done * elem, chunk, t, op_of(op), MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
    done += chunk;
  }
  return MPI_SUCCESS;
}

/* All-gather of n bytes per rank into recv (size * n bytes, rank order). */
int mr_allgather(const void *send, int64_t n, void *recv) {
  if (n > INT_MAX) return MPI_ERR_COUNT;
  return MPI_Allgather(send, (int)n, MPI_BYTE, recv, (int)n, MPI_BYTE, MPI_COMM_WORLD);
}

/* Broadcast of n bytes from root, in place. */
int mr_broadcast(void *buf, int64_t n, int root) {
  for (int64_t done = 0; done < n;) {
    int chunk = (int)(n - done > INT_MAX ? INT_MAX : n - done);
    int rc = MPI_Bcast((char *)buf + done, chunk, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
    done += chunk;
  }
  return MPI_SUCCESS;
}

/* A barrier that waits without spinning: MPI_Barrier busy-polls, and a rank waiting minutes
 * for rank 0's evaluation at the end of a run would take a core from it. MPI_Ibarrier, tested
 * every millisecond (on koffi's worker thread: the event loop keeps running). */
int mr_barrier(void) {
  MPI_Request request;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
  if (rc != MPI_SUCCESS) return rc;
  struct timespec pause = {0, 1000 * 1000};
  for (;;) {
    int done = 0;
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    nanosleep(&pause, NULL);
  }
}

/* MPI's message for an error code, into out (at most cap bytes with the terminator). */
void mr_error_string(int code, char *out, int cap) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
  snprintf(out, (size_t)cap, "%s", msg);
}

/* Prints the message (the caller names the rank in it) and stops every rank of the job. */
void mr_abort(int code, const char *message) {
  fprintf(stderr, "%s\n", message);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
}

static volatile int finalize_done = 0;
static int finalize_timeout_s = 0;

static void *finalize_watchdog(void *arg) {
  (void)arg;
  struct timespec step = {0, 50 * 1000 * 1000};
  for (int waited = 0; waited < finalize_timeout_s * 20; waited++) {
    if (finalize_done) return NULL;
    nanosleep(&step, NULL);
  }
  if (!finalize_done) {
    fprintf(stderr, "[rank %d] MPI_Finalize did not complete within %d s (another rank is not finalising); exiting without it\n", world_rank, finalize_timeout_s);
    fflush(stderr);
    _exit(1);
  }
  return NULL;
}

/* MPI_Finalize, guarded: Open MPI's finalize waits for every rank (a fence), so a rank that
 * finalises alone (a signal sent to one process only) would hang; after timeout_s seconds the
 * watchdog ends the process instead, and the launcher then stops the others. */
int mr_finalize(int timeout_s) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return MPI_SUCCESS;
  pthread_t watchdog;
  finalize_timeout_s = timeout_s;
  int watched = timeout_s > 0 && pthread_create(&watchdog, NULL, finalize_watchdog, NULL) == 0;
  if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
  int rc = MPI_Finalize();
  finalize_done = 1;
  if (watched) pthread_join(watchdog, NULL);
  return rc;
}
