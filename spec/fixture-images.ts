/** The PyTorch fixture scripts' input images (scripts/make-ecosystem-fixtures.py images(), which make-rehearsal-fixture.py uses). */
import * as tf from '@tensorflow/tfjs';

/** Images [2, S, S, 3]: the scripts' formula in float64, then float32, as they feed their modules. */
export function fixtureImages(size: number): tf.Tensor4D {
  const data = new Float32Array(2 * size * size * 3);
  let i = 0;
  for (let b = 0; b < 2; b++)
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++)
        for (let c = 0; c < 3; c++) data[i++] = Math.sin(0.31 * y + 0.17 * x + 1.3 * c + 0.7 * b) + 0.5 * Math.cos(0.05 * x * y + 0.9 * c - 0.4 * b);
  return tf.tensor4d(data, [2, size, size, 3]);
}
