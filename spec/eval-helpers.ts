/** Shared by the specs of async work (evaluations read the device with `await t.data()`; pipelines run as promises). */
import * as assert from 'uvu/assert';

/** Asserts that f's promise rejects with a message matching `pattern`. */
export async function rejects(f: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await f();
  } catch (err) {
    assert.match((err as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected a rejection matching ${pattern}`);
}
