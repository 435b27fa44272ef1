/** The records that flow through every pipeline, from source to batch. */

/** One encoded sample as a source yields it. `index` is the stable dataset index (0..N-1). */
export interface EncodedSample {
  index: number;
  key: string;
  /** Class index, or -1 where the source has no labels. Labels are for evaluation/monitoring only. */
  label: number;
  /** Encoded image bytes (JPEG/PNG/...), or raw RGB when `raw` is set (CIFAR binary). */
  bytes: Buffer;
  raw?: { width: number; height: number };
  /** Where it came from (file path, or shard path + member name), for error messages. */
  origin: string;
}

/** Interleaved 8-bit RGB, row-major, HWC. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface DecodedSample {
  index: number;
  key: string;
  label: number;
  origin: string;
  image: RgbImage;
}

/** A sample after the view transform(s): each view is HWC float32, normalised, size x size x 3. */
export interface ViewsSample {
  index: number;
  label: number;
  views: Float32Array[];
  viewSizes: number[];
}

/** A batch: views[v] holds view v of every sample, [batch, size, size, 3] row-major float32. */
export interface Batch {
  indices: Int32Array;
  labels: Int32Array;
  views: Float32Array[];
  viewSizes: number[];
}
