// 2-D convolution as an implicit GEMM: y[n, co, p] = bias[co] + Σ_k W[co, k] · X[n, k, p] where
// k = (ci, ky, kx) and p = (oy, ox); the im2col matrix X is never materialised. Each invocation
// owns CB (4 or 8) output channels × 4 consecutive output pixels (register block), f32 accumulation.
//
// Defines: CB = 4 | 8 output channels per invocation (CB8 set when 8), BIAS.
// Fused epilogue: y = (acc + bias[co] + t[n, co] (ADD_NC) + r[n, co, p] (RESIDUAL)) · out_scale —
// a ResnetBlock2D's time-embedding add after conv1 and its residual add and output scale after
// conv2, without extra dispatches.
// TILE: the shared-memory implicit GEMM (CB = 4; its own 16×16 workgroup). ROW3: the 3×3
// stride-1 row kernel; otherwise the general kernel (any size and stride). PACKED (both): the
// weights come packed (conv_pack.wgsl) and are read as vec4 (one load per 4 channels and tap).
// Both loop over input channels innermost with every index computed outside that loop: on
// lavapipe this runs at the GEMM kernel's rate, ~1.8× the earlier per-tap gather.
// Padding is zero padding on all sides; stride and padding are the same along H and W.
// Q8 (with PACKED; W8A32): the packed weights are int8, four channels per u32 word (same
// indexing as the vec4 layout), unpacked to f32 in registers; the accumulator of channel co is
// the sum of q·x and is multiplied by its scale wscale[co] in the epilogue:
// y = wscale[co] · Σ q[co, k] · x[k] + bias[co] (+ epilogue adds) — see load::quant.

#uniform Params  // generated from ops::conv2d::Params (src/ops/conv2d.rs)

#tensor 1 x read        // [N, Cin, H, W] input
#if PACKED
#if Q8
#tensor 2 wt read vec4 i8  // [⌈Cout/4⌉, Cin, kh·kw] words of 4 int8 channels (ops::conv2d::pack_q8)
#tensor 7 wscale read f32  // [Cout] per-output-channel dequantisation scale
#else
#tensor 2 wt read vec4  // [⌈Cout/4⌉, Cin, 3, 3, 4] (see conv_pack.wgsl): 4 channels innermost
#endif
#else
#tensor 2 wt read       // [Cout, Cin, kh, kw] = [Cout, K] row-major (PyTorch layout)
#endif
#tensor 3 y write       // [N, Cout, Ho, Wo] output
#if BIAS
#tensor 4 bias read     // [Cout]
#endif
#if ADD_NC
#tensor 5 tnc read      // [N, Cout] added per sample and channel
#endif
#if RESIDUAL
#tensor 6 res read      // [N, Cout, Ho, Wo] added element-wise (must not alias y)
#endif

// The output write with the fused epilogue, for CB channels × `count` (≤ 4) pixels from p0.
fn write_out(n: u32, co0: u32, p0: u32, count: u32, accs: array<vec4<f32>, ${CB}>) {
  let yb = n * p.y_bs;
  for (var r = 0u; r < ${CB}u; r = r + 1u) {
    let co = co0 + r;
    if (co >= p.cout) { break; }
    var b = 0.0;
    var sc = 1.0;
#if Q8
    sc = wscale_ld(co);
#endif
#if BIAS
    b = bias_ld(co);
#endif
#if ADD_NC
    b = b + tnc_ld(n * p.cout + co);
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (j < count && p0 + j < p.hw_out) {
        let o = yb + co * p.hw_out + p0 + j;
        var v = accs[r][j] * sc + b;
#if RESIDUAL
        v = v + res_ld(o);
#endif
        y_st(o, v * p.out_scale);
      }
    }
  }
}

#if TILE
// Shared-memory implicit GEMM (the GPU-style tile; a tuning candidate): a 16×16 workgroup
// computes 64 output channels × 64 flattened output pixels of one sample, 4 × 4 per
// invocation. Per chunk of 16 k = (ci, ky, kx) the workgroup stages the weight tile
// [64 co × 16 k] and the gathered input tile [16 k × 64 px] in workgroup memory (4 elements
// of each per invocation), then every invocation reads its 4 weights and 4 inputs per k from
// there: each input element is gathered once per workgroup instead of once per 4–8 channels.
var<workgroup> wtile: array<f32, 1024>;  // [64 co][16 k]
var<workgroup> xtile: array<f32, 1024>;  // [16 k][64 px]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let n = wid.z;
  let co_base = wid.y * 64u;
  let p_base = wid.x * 64u;
  let taps = p.kh * p.kw;
  let xb = n * p.x_bs;
  let hi = i32(p.h);
  let wi = i32(p.w);
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.k; k0 = k0 + 16u) {
    for (var j = 0u; j < 4u; j = j + 1u) {
      let e = lid * 4u + j;
      // Weights: row e / 16 (output channel), column e % 16 (k).
      let co = co_base + e / 16u;
      let kw_ = k0 + e % 16u;
      var wv = 0.0;
      if (co < p.cout && kw_ < p.k) { wv = wt_ld(co * p.k + kw_); }
      wtile[e] = wv;
      // Inputs: row e / 64 (k), column e % 64 (pixel).
      let kx_ = k0 + e / 64u;
      let px = p_base + e % 64u;
      var xv = 0.0;
      if (kx_ < p.k && px < p.hw_out) {
        let ci = kx_ / taps;
        let t = kx_ % taps;
        let iy = i32((px / p.wo) * p.stride + t / p.kw) - i32(p.pad);
        let ix = i32((px % p.wo) * p.stride + t % p.kw) - i32(p.pad);
        if (iy >= 0 && iy < hi && ix >= 0 && ix < wi) {
          xv = x_ld(xb + ci * p.h * p.w + u32(iy) * p.w + u32(ix));
        }
      }
      xtile[e] = xv;
    }
    workgroupBarrier();
    let r0 = lid3.y * 4u * 16u;
    let c0 = lid3.x * 4u;
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      let xv = vec4<f32>(xtile[kk * 64u + c0], xtile[kk * 64u + c0 + 1u],
                         xtile[kk * 64u + c0 + 2u], xtile[kk * 64u + c0 + 3u]);
      acc0 += wtile[r0 + kk] * xv;
      acc1 += wtile[r0 + 16u + kk] * xv;
      acc2 += wtile[r0 + 32u + kk] * xv;
      acc3 += wtile[r0 + 48u + kk] * xv;
    }
    workgroupBarrier();
  }
  write_out(n, co_base + lid3.y * 4u, p_base + lid3.x * 4u, 4u,
            array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}
#else
#if ROW3
// 3×3 stride-1 convolution. Pixels are tiled by rows: invocation x covers 4 consecutive pixels
// of one output row (the last group of a row may be partial), so the 6 input columns its 4
// pixels × 3 taps need are the same for every input row and channel: their offsets and
// validity are computed once, then the loop over channels (inner) and kernel rows (outer, the
// row check hoisted out) does 6 input loads and 3·CB weight loads per (ky, ci) with vector
// arithmetic only — no private arrays (they spill on llvmpipe).
@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let gpr = (p.wo + 3u) / 4u;  // pixel groups per output row
  let oy = gid.x / gpr;
  let ox0 = (gid.x % gpr) * 4u;
  let co0 = gid.y * ${CB}u;
  if (oy >= p.ho || co0 >= p.cout) { return; }
  let n = wid.z;
  let clast = p.cout - 1u;
  let wr0 = min(co0 + 0u, clast) * p.k;
  let wr1 = min(co0 + 1u, clast) * p.k;
  let wr2 = min(co0 + 2u, clast) * p.k;
  let wr3 = min(co0 + 3u, clast) * p.k;
#if CB8
  let wr4 = min(co0 + 4u, clast) * p.k;
  let wr5 = min(co0 + 5u, clast) * p.k;
  let wr6 = min(co0 + 6u, clast) * p.k;
  let wr7 = min(co0 + 7u, clast) * p.k;
#endif
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
#if CB8
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
#endif
  let hi = i32(p.h);
  let wi = i32(p.w);
  // The 6 input columns: offsets clamped into the row, validity as masks.
  let ix0 = i32(ox0) - i32(p.pad);
  let ca = vec4<i32>(ix0) + vec4<i32>(0, 1, 2, 3);
  let cb = vec2<i32>(ix0) + vec2<i32>(4, 5);
  let oka = (ca >= vec4<i32>(0)) & (ca < vec4<i32>(wi));
  let okb = (cb >= vec2<i32>(0)) & (cb < vec2<i32>(wi));
  let ua = vec4<u32>(clamp(ca, vec4<i32>(0), vec4<i32>(wi - 1)));
  let ub = vec2<u32>(clamp(cb, vec2<i32>(0), vec2<i32>(wi - 1)));
  let plane = p.h * p.w;
#if PACKED
  // vec4 offsets of the packed weight blocks (4 channels each) at (ci = 0, tap 0).
  let blast = (p.cout - 1u) / 4u;
  let pw_lo = min(co0 / 4u, blast) * p.cin * 9u;
  let pw_hi = min(co0 / 4u + 1u, blast) * p.cin * 9u;
#endif
  for (var ky = 0u; ky < 3u; ky = ky + 1u) {
    let iy = i32(oy + ky) - i32(p.pad);
    if (iy < 0 || iy >= hi) { continue; }
    var rb = n * p.x_bs + u32(iy) * p.w;  // row iy of channel ci
    var kb = ky * 3u;                     // weight offset of (ci, ky, 0)
    for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
      let v0 = select(vec4<f32>(0.0), vec4<f32>(x_ld(rb + ua.x), x_ld(rb + ua.y),
                      x_ld(rb + ua.z), x_ld(rb + ua.w)), oka);
      let v45 = select(vec2<f32>(0.0), vec2<f32>(x_ld(rb + ub.x), x_ld(rb + ub.y)), okb);
      let v1 = vec4<f32>(v0.yzw, v45.x);
      let v2 = vec4<f32>(v0.zw, v45);
#if PACKED
      let pw = pw_lo + kb;
      let w0 = wt_ld4(pw);
      let w1 = wt_ld4(pw + 1u);
      let w2 = wt_ld4(pw + 2u);
      acc0 += w0.x * v0 + w1.x * v1 + w2.x * v2;
      acc1 += w0.y * v0 + w1.y * v1 + w2.y * v2;
      acc2 += w0.z * v0 + w1.z * v1 + w2.z * v2;
      acc3 += w0.w * v0 + w1.w * v1 + w2.w * v2;
#else
      acc0 += wt_ld(wr0 + kb) * v0 + wt_ld(wr0 + kb + 1u) * v1 + wt_ld(wr0 + kb + 2u) * v2;
      acc1 += wt_ld(wr1 + kb) * v0 + wt_ld(wr1 + kb + 1u) * v1 + wt_ld(wr1 + kb + 2u) * v2;
      acc2 += wt_ld(wr2 + kb) * v0 + wt_ld(wr2 + kb + 1u) * v1 + wt_ld(wr2 + kb + 2u) * v2;
      acc3 += wt_ld(wr3 + kb) * v0 + wt_ld(wr3 + kb + 1u) * v1 + wt_ld(wr3 + kb + 2u) * v2;
#endif
#if CB8
#if PACKED
      let pw4 = pw_hi + kb;
      let w4 = wt_ld4(pw4);
      let w5 = wt_ld4(pw4 + 1u);
      let w6 = wt_ld4(pw4 + 2u);
      acc4 += w4.x * v0 + w5.x * v1 + w6.x * v2;
      acc5 += w4.y * v0 + w5.y * v1 + w6.y * v2;
      acc6 += w4.z * v0 + w5.z * v1 + w6.z * v2;
      acc7 += w4.w * v0 + w5.w * v1 + w6.w * v2;
#else
      acc4 += wt_ld(wr4 + kb) * v0 + wt_ld(wr4 + kb + 1u) * v1 + wt_ld(wr4 + kb + 2u) * v2;
      acc5 += wt_ld(wr5 + kb) * v0 + wt_ld(wr5 + kb + 1u) * v1 + wt_ld(wr5 + kb + 2u) * v2;
      acc6 += wt_ld(wr6 + kb) * v0 + wt_ld(wr6 + kb + 1u) * v1 + wt_ld(wr6 + kb + 2u) * v2;
      acc7 += wt_ld(wr7 + kb) * v0 + wt_ld(wr7 + kb + 1u) * v1 + wt_ld(wr7 + kb + 2u) * v2;
#endif
#endif
      rb = rb + plane;
      kb = kb + 9u;
    }
  }
#if CB8
  let accs = array<vec4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
#else
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
#endif
  write_out(n, co0, oy * p.wo + ox0, min(4u, p.wo - ox0), accs);
}
#else
// Any kernel size and stride: 4 consecutive flattened output pixels per invocation (they may
// straddle rows). Taps (ky, kx) are the outer loop: the 4 input offsets and their validity are
// computed once per tap, then the inner loop over input channels only steps by one plane.
@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let p0 = gid.x * 4u;
  let co0 = gid.y * ${CB}u;
  if (p0 >= p.hw_out || co0 >= p.cout) { return; }
  let n = wid.z;
  var iy0 = vec4<i32>(0);
  var ix0 = vec4<i32>(0);
  for (var j = 0u; j < 4u; j = j + 1u) {
    let pj = min(p0 + j, p.hw_out - 1u);
    iy0[j] = i32((pj / p.wo) * p.stride) - i32(p.pad);
    ix0[j] = i32((pj % p.wo) * p.stride) - i32(p.pad);
  }
  let clast = p.cout - 1u;
  let wr0 = min(co0 + 0u, clast) * p.k;
  let wr1 = min(co0 + 1u, clast) * p.k;
  let wr2 = min(co0 + 2u, clast) * p.k;
  let wr3 = min(co0 + 3u, clast) * p.k;
#if CB8
  let wr4 = min(co0 + 4u, clast) * p.k;
  let wr5 = min(co0 + 5u, clast) * p.k;
  let wr6 = min(co0 + 6u, clast) * p.k;
  let wr7 = min(co0 + 7u, clast) * p.k;
#endif
  var acc0 = vec4<f32>(0.0);  // output channel co0 + 0, four pixels
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
#if CB8
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
#endif
  let hi = vec4<i32>(i32(p.h));
  let wi = vec4<i32>(i32(p.w));
  let plane = p.h * p.w;
  let taps = p.kh * p.kw;
#if PACKED
  // vec4 offsets of the packed weight blocks (4 channels each) at (ci = 0, tap 0).
  let blast = (p.cout - 1u) / 4u;
  let pw_lo = min(co0 / 4u, blast) * p.cin * taps;
  let pw_hi = min(co0 / 4u + 1u, blast) * p.cin * taps;
#endif
  for (var t = 0u; t < taps; t = t + 1u) {
    let iy = iy0 + vec4<i32>(i32(t / p.kw));
    let ix = ix0 + vec4<i32>(i32(t % p.kw));
    let ok = (iy >= vec4<i32>(0)) & (iy < hi) & (ix >= vec4<i32>(0)) & (ix < wi);
    // Offsets of the 4 pixels' inputs in channel 0 (clamped; masked by `ok`).
    var off = vec4<u32>(clamp(iy, vec4<i32>(0), hi - 1)) * p.w
            + vec4<u32>(clamp(ix, vec4<i32>(0), wi - 1)) + vec4<u32>(n * p.x_bs);
    var kk = t;
    for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
      let xv = select(vec4<f32>(0.0), vec4<f32>(x_ld(off.x), x_ld(off.y), x_ld(off.z), x_ld(off.w)), ok);
#if PACKED
      let wa = wt_ld4(pw_lo + kk);
      acc0 += wa.x * xv;
      acc1 += wa.y * xv;
      acc2 += wa.z * xv;
      acc3 += wa.w * xv;
#if CB8
      let wb = wt_ld4(pw_hi + kk);
      acc4 += wb.x * xv;
      acc5 += wb.y * xv;
      acc6 += wb.z * xv;
      acc7 += wb.w * xv;
#endif
#else
      acc0 += wt_ld(wr0 + kk) * xv;
      acc1 += wt_ld(wr1 + kk) * xv;
      acc2 += wt_ld(wr2 + kk) * xv;
      acc3 += wt_ld(wr3 + kk) * xv;
#if CB8
      acc4 += wt_ld(wr4 + kk) * xv;
      acc5 += wt_ld(wr5 + kk) * xv;
      acc6 += wt_ld(wr6 + kk) * xv;
      acc7 += wt_ld(wr7 + kk) * xv;
#endif
#endif
      off = off + vec4<u32>(plane);
      kk = kk + taps;
    }
  }
#if CB8
  let accs = array<vec4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
#else
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
#endif
  write_out(n, co0, p0, 4u, accs);
}
#endif
#endif
