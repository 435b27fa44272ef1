;; SIMD row kernels for the view transforms (simd.ts loads them; blur.ts and resize.ts call them).
;; Built with: wat2wasm operators/transforms/simd.wat -o operators/transforms/simd.wasm
;; (Debian package wabt; the .wasm is committed so nothing is needed at run time.)
;;
;; Why: the blur and the bicubic resize are ~70% of a view's time in plain JS; these loops
;; over contiguous float32 rows run ~4x faster as f32x4 (measured on the 2-core dev box).
;;
;; Conventions: pointers are byte offsets into the exported memory; lengths `n` count floats
;; and are processed in whole groups of 4, so a call may read and write up to 3 floats past
;; the end: callers leave that slack after every buffer and write rows in increasing order
;; (the spill lands in the next row, which is written after).
(module
  (memory (export "memory") 1)

  ;; dst[i] = w * a[i]
  (func (export "scale") (param $dst i32) (param $a i32) (param $w f32) (param $n i32)
    (local $end i32) (local $wv v128)
    (local.set $wv (f32x4.splat (local.get $w)))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst) (f32x4.mul (local.get $wv) (v128.load (local.get $a))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (br $next))))

  ;; dst[i] += w * a[i]
  (func (export "axpy") (param $dst i32) (param $a i32) (param $w f32) (param $n i32)
    (local $end i32) (local $wv v128)
    (local.set $wv (f32x4.splat (local.get $w)))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst)
          (f32x4.add (v128.load (local.get $dst)) (f32x4.mul (local.get $wv) (v128.load (local.get $a)))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (br $next))))

  ;; dst[i] += w * (a[i] + b[i])   (a symmetric kernel's pair of taps)
  (func (export "axpy2") (param $dst i32) (param $a i32) (param $b i32) (param $w f32) (param $n i32)
    (local $end i32) (local $wv v128)
    (local.set $wv (f32x4.splat (local.get $w)))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst)
          (f32x4.add (v128.load (local.get $dst))
            (f32x4.mul (local.get $wv) (f32x4.add (v128.load (local.get $a)) (v128.load (local.get $b))))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 16)))
        (br $next))))

  ;; dst[i] = min(max(dst[i], lo), hi)
  (func (export "clamp") (param $dst i32) (param $lo f32) (param $hi f32) (param $n i32)
    (local $end i32) (local $lov v128) (local $hiv v128)
    (local.set $lov (f32x4.splat (local.get $lo)))
    (local.set $hiv (f32x4.splat (local.get $hi)))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst)
          (f32x4.min (f32x4.max (v128.load (local.get $dst)) (local.get $lov)) (local.get $hiv)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (br $next))))

  ;; One row of a horizontal resample of interleaved RGB: output pixel x (3 floats at
  ;; dst + 12x) = sum over k < count[x] of weight[x * maxTaps + k] * pixel (start[x] + k) of
  ;; the source row. Each pixel moves as one f32x4 (RGB + the next pixel's R, ignored; its
  ;; write is overwritten by pixel x + 1).
  (func (export "hresample")
    (param $dst i32) (param $src i32) (param $start i32) (param $count i32) (param $weights i32)
    (param $maxTaps i32) (param $outW i32)
    (local $x i32) (local $k i32) (local $n i32) (local $p i32) (local $w i32) (local $acc v128)
    (block $rowDone
      (loop $pixel
        (br_if $rowDone (i32.ge_u (local.get $x) (local.get $outW)))
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $p (i32.add (local.get $src)
          (i32.mul (i32.load (i32.add (local.get $start) (i32.shl (local.get $x) (i32.const 2)))) (i32.const 12))))
        (local.set $n (i32.load (i32.add (local.get $count) (i32.shl (local.get $x) (i32.const 2)))))
        (local.set $w (i32.add (local.get $weights) (i32.shl (i32.mul (local.get $x) (local.get $maxTaps)) (i32.const 2))))
        (local.set $k (i32.const 0))
        (block $tapsDone
          (loop $tap
            (br_if $tapsDone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $acc (f32x4.add (local.get $acc)
              (f32x4.mul (v128.load32_splat (local.get $w)) (v128.load (local.get $p)))))
            (local.set $p (i32.add (local.get $p) (i32.const 12)))
            (local.set $w (i32.add (local.get $w) (i32.const 4)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $tap)))
        (v128.store (i32.add (local.get $dst) (i32.mul (local.get $x) (i32.const 12))) (local.get $acc))
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br $pixel))))
)
