/** The WebGPU-vs-wasm check's entry in the device kit's bundle (see refine-main.ts for why). */
import { main } from '../check-webgpu';

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
