import type { OperatorFunction } from 'rxjs';
import sharp from 'sharp';
import type { DecodedSample, EncodedSample, RgbImage } from '../sources/types';
import { mapOrdered } from './map-ordered';

export type OnSkip = (origin: string, reason: string) => void;

export interface DecodeOptions {
  /** Images decoding at once (libvips runs them on libuv's pool). Default 2. */
  concurrency?: number;
  /**
   * Called for each sample dropped as undecodable. Skipped samples never reach the consumer,
   * so a pipeline fed through a Valve should give the credit back here (valve.release(1)).
   */
  onSkip?: OnSkip;
  /** How strict the decoder is (sharp failOn); default 'warning', see decodeImage. */
  failOn?: FailOn;
}

export type FailOn = 'truncated' | 'error' | 'warning';

/**
 * Bytes -> 8-bit RGB. Rejects (with a reason) anything that is not a whole, readable image.
 * failOn 'warning' (measured on real JPEGs): 'truncated' and 'error' both reject a cut-off
 * file but let a JPEG with garbled entropy-coded data through as a smeared picture; only
 * 'warning' rejects that too. Bytes after the end marker still pass. The price: the few
 * JPEGs whose only fault is a libjpeg warning (ImageNet has a handful) are skipped too,
 * where PIL would decode them; pass 'error' to keep those.
 * No EXIF auto-rotation, as PIL.Image.open + convert('RGB').
 */
export async function decodeImage(sample: Pick<EncodedSample, 'bytes' | 'raw'>, failOn: FailOn = 'warning'): Promise<RgbImage> {
  if (sample.raw) {
    const { width, height } = sample.raw;
    if (sample.bytes.length !== width * height * 3) {
      throw new Error(`raw RGB ${width}x${height} needs ${width * height * 3} bytes, got ${sample.bytes.length}`);
    }
    return { data: new Uint8Array(sample.bytes.buffer, sample.bytes.byteOffset, sample.bytes.length), width, height };
  }
  const { data, info } = await sharp(sample.bytes, { failOn })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}

/** EncodedSample -> DecodedSample via sharp, in input order; undecodable samples are skipped. */
export function decode(opts: DecodeOptions = {}): OperatorFunction<EncodedSample, DecodedSample> {
  const onSkip = opts.onSkip ?? ((origin, reason) => console.warn(`[decode] skipped ${origin}: ${reason}`));
  const gate = new ExclusiveGate();
  return mapOrdered(async (s: EncodedSample) => {
    try {
      const image = await gate.shared(() => decodeImage(s, opts.failOn)).catch(() => gate.alone(() => decodeImage(s, opts.failOn)));
      return { index: s.index, key: s.key, label: s.label, origin: s.origin, image };
    } catch (err) {
      onSkip(s.origin, (err as Error).message);
      return undefined;
    }
  }, opts.concurrency ?? 2);
}

/**
 * libvips keeps one error buffer per process, so with several decodes in flight a failing image
 * can be reported with another one's message. A failed sample is therefore decoded once more
 * alone (new decodes wait, in-flight ones finish first) so that the reason given is its own.
 * Failures are rare, so the pause costs nothing measurable.
 */
class ExclusiveGate {
  private active = 0;
  private exclusive: Promise<void> | undefined;
  private onIdle: (() => void) | undefined;

  async shared<T>(run: () => Promise<T>): Promise<T> {
    while (this.exclusive) await this.exclusive;
    this.active++;
    try {
      return await run();
    } finally {
      if (--this.active === 0) this.onIdle?.();
    }
  }

  async alone<T>(run: () => Promise<T>): Promise<T> {
    while (this.exclusive) await this.exclusive;
    let release!: () => void;
    this.exclusive = new Promise<void>((resolve) => (release = resolve));
    try {
      if (this.active > 0) await new Promise<void>((resolve) => (this.onIdle = resolve));
      this.onIdle = undefined;
      return await run();
    } finally {
      this.exclusive = undefined;
      release();
    }
  }
}
