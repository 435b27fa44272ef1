/** Placeholder until the threaded loader lands: single-threaded wasm. */
export async function enableWasmThreads(): Promise<number> {
  return 1;
}
