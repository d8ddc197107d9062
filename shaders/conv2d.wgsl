// 2-D convolution as an implicit GEMM: y[n, co, p] = bias[co] + Σ_k W[co, k] · X[n, k, p] where
// k = (ci, ky, kx) and p = (oy, ox); the im2col matrix X is never materialised. Each invocation
// owns CB (4 or 8) output channels × 4 consecutive output pixels (register block), f32 accumulation.
//
// Defines: CB = 4 | 8 output channels per invocation (CB8 set when 8), VEC4 (host checked K = Cin·kh·kw % 4 == 0: weights read four k at a time), BIAS.
// Fused epilogue: y = (acc + bias[co] + t[n, co] (ADD_NC) + r[n, co, p] (RESIDUAL)) · out_scale —
// a ResnetBlock2D's time-embedding add after conv1 and its residual add and output scale after
// conv2, without extra dispatches.
// ROW3: the 3×3 stride-1 kernel below (needs scalar weights, i.e. not VEC4).
// Padding is zero padding on all sides; stride and padding are the same along H and W.

struct Params {
  cin: u32, h: u32, w: u32, cout: u32,
  ho: u32, wo: u32, kh: u32, kw: u32,
  stride: u32, pad: u32, k: u32, hw_out: u32,
  x_bs: u32, y_bs: u32, out_scale: f32, _p1: u32,
}
#uniform Params

#tensor 1 x read        // [N, Cin, H, W] input
#if VEC4
#tensor 2 wt read vec4  // [Cout, Cin, kh, kw] = [Cout, K] row-major (PyTorch layout)
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

// Input values at kernel tap (ci, ky, kx) for the invocation's 4 pixels (zero outside).
fn gather(xb: u32, ci: u32, ky: u32, kx: u32, iy0: vec4<i32>, ix0: vec4<i32>) -> vec4<f32> {
  let iy = iy0 + vec4<i32>(i32(ky));
  let ix = ix0 + vec4<i32>(i32(kx));
  let hi = i32(p.h);
  let wi = i32(p.w);
  let ok = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(hi)) & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(wi));
  let cy = vec4<u32>(clamp(iy, vec4<i32>(0), vec4<i32>(hi - 1)));
  let cx = vec4<u32>(clamp(ix, vec4<i32>(0), vec4<i32>(wi - 1)));
  let base = xb + ci * p.h * p.w;
  let v = vec4<f32>(x_ld(base + cy.x * p.w + cx.x), x_ld(base + cy.y * p.w + cx.y),
                    x_ld(base + cy.z * p.w + cx.z), x_ld(base + cy.w * p.w + cx.w));
  return select(vec4<f32>(0.0), v, ok);
}


// The output write with the fused epilogue, for CB channels × 4 pixels.
fn write_out(n: u32, co0: u32, p0: u32, accs: array<vec4<f32>, ${CB}>) {
  let yb = n * p.y_bs;
  for (var r = 0u; r < ${CB}u; r = r + 1u) {
    let co = co0 + r;
    if (co >= p.cout) { break; }
    var b = 0.0;
#if BIAS
    b = bias_ld(co);
#endif
#if ADD_NC
    b = b + tnc_ld(n * p.cout + co);
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (p0 + j < p.hw_out) {
        let o = yb + co * p.hw_out + p0 + j;
        var v = accs[r][j] + b;
#if RESIDUAL
        v = v + res_ld(o);
#endif
        y_st(o, v * p.out_scale);
      }
    }
  }
}

#if ROW3
// 3×3 stride-1 convolution, 4 consecutive output pixels of one row per invocation: per
// (ci, ky) the 6 input values the 4 pixels × 3 taps need are loaded once (6 loads instead of
// 12 gathers); a group of pixels straddling a row end takes the per-pixel path.
@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let p0 = gid.x * 4u;
  let co0 = gid.y * ${CB}u;
  if (p0 >= p.hw_out || co0 >= p.cout) { return; }
  let n = wid.z;
  let xb = n * p.x_bs;
  let clast = p.cout - 1u;
  var wr: array<u32, ${CB}>;
  for (var r = 0u; r < ${CB}u; r = r + 1u) { wr[r] = min(co0 + r, clast) * p.k; }
  var accs: array<vec4<f32>, ${CB}>;
  for (var r = 0u; r < ${CB}u; r = r + 1u) { accs[r] = vec4<f32>(0.0); }
  let oy = p0 / p.wo;
  let ox0 = p0 % p.wo;
  let hi = i32(p.h);
  let wi = i32(p.w);
  if (ox0 + 3u < p.wo) {
    let ix0 = i32(ox0) - i32(p.pad);
    for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
      let cb = xb + ci * p.h * p.w;
      for (var ky = 0u; ky < 3u; ky = ky + 1u) {
        let iy = i32(oy + ky) - i32(p.pad);
        if (iy < 0 || iy >= hi) { continue; }
        let rb = cb + u32(iy) * p.w;
        var xs: array<f32, 6>;
        for (var j = 0; j < 6; j = j + 1) {
          let ix = ix0 + j;
          xs[j] = select(0.0, x_ld(rb + u32(clamp(ix, 0, wi - 1))), ix >= 0 && ix < wi);
        }
        let kb = (ci * 3u + ky) * 3u;
        for (var kx = 0u; kx < 3u; kx = kx + 1u) {
          let xv = vec4<f32>(xs[kx], xs[kx + 1u], xs[kx + 2u], xs[kx + 3u]);
          for (var r = 0u; r < ${CB}u; r = r + 1u) {
            accs[r] += wt_ld(wr[r] + kb + kx) * xv;
          }
        }
      }
    }
  } else {
    // Pixels in two rows: per-pixel gather over all taps.
    var iy0 = vec4<i32>(0);
    var ix0 = vec4<i32>(0);
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pj = min(p0 + j, p.hw_out - 1u);
      iy0[j] = i32(pj / p.wo) - i32(p.pad);
      ix0[j] = i32(pj % p.wo) - i32(p.pad);
    }
    for (var ci = 0u; ci < p.cin; ci = ci + 1u) {
      for (var ky = 0u; ky < 3u; ky = ky + 1u) {
        for (var kx = 0u; kx < 3u; kx = kx + 1u) {
          let xv = gather(xb, ci, ky, kx, iy0, ix0);
          let kk = (ci * 3u + ky) * 3u + kx;
          for (var r = 0u; r < ${CB}u; r = r + 1u) {
            accs[r] += wt_ld(wr[r] + kk) * xv;
          }
        }
      }
    }
  }
  write_out(n, co0, p0, accs);
}
#else
@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let p0 = gid.x * 4u;
  let co0 = gid.y * ${CB}u;
  if (p0 >= p.hw_out || co0 >= p.cout) { return; }
  let n = wid.z;
  let xb = n * p.x_bs;
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
#endif
#if CB8
  let wr5 = min(co0 + 5u, clast) * p.k;
#endif
#if CB8
  let wr6 = min(co0 + 6u, clast) * p.k;
#endif
#if CB8
  let wr7 = min(co0 + 7u, clast) * p.k;
#endif
  var acc0 = vec4<f32>(0.0);  // output channel co0 + 0, four pixels
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
#if CB8
  var acc4 = vec4<f32>(0.0);
#endif
#if CB8
  var acc5 = vec4<f32>(0.0);
#endif
#if CB8
  var acc6 = vec4<f32>(0.0);
#endif
#if CB8
  var acc7 = vec4<f32>(0.0);
#endif
  var ci = 0u;
  var ky = 0u;
  var kx = 0u;
#if VEC4
  for (var k = 0u; k < p.k; k = k + 4u) {
    let w0 = wt_ld4((wr0 + k) >> 2u);
    let w1 = wt_ld4((wr1 + k) >> 2u);
    let w2 = wt_ld4((wr2 + k) >> 2u);
    let w3 = wt_ld4((wr3 + k) >> 2u);
#if CB8
    let w4 = wt_ld4((wr4 + k) >> 2u);
#endif
#if CB8
    let w5 = wt_ld4((wr5 + k) >> 2u);
#endif
#if CB8
    let w6 = wt_ld4((wr6 + k) >> 2u);
#endif
#if CB8
    let w7 = wt_ld4((wr7 + k) >> 2u);
#endif
    for (var j = 0u; j < 4u; j = j + 1u) {
      let xv = gather(xb, ci, ky, kx, iy0, ix0);
      acc0 += w0[j] * xv;
      acc1 += w1[j] * xv;
      acc2 += w2[j] * xv;
      acc3 += w3[j] * xv;
#if CB8
      acc4 += w4[j] * xv;
#endif
#if CB8
      acc5 += w5[j] * xv;
#endif
#if CB8
      acc6 += w6[j] * xv;
#endif
#if CB8
      acc7 += w7[j] * xv;
#endif
      kx = kx + 1u;
      if (kx == p.kw) { kx = 0u; ky = ky + 1u; if (ky == p.kh) { ky = 0u; ci = ci + 1u; } }
    }
  }
#else
  for (var k = 0u; k < p.k; k = k + 1u) {
    let xv = gather(xb, ci, ky, kx, iy0, ix0);
    acc0 += wt_ld(wr0 + k) * xv;
    acc1 += wt_ld(wr1 + k) * xv;
    acc2 += wt_ld(wr2 + k) * xv;
    acc3 += wt_ld(wr3 + k) * xv;
#if CB8
    acc4 += wt_ld(wr4 + k) * xv;
#endif
#if CB8
    acc5 += wt_ld(wr5 + k) * xv;
#endif
#if CB8
    acc6 += wt_ld(wr6 + k) * xv;
#endif
#if CB8
    acc7 += wt_ld(wr7 + k) * xv;
#endif
    kx = kx + 1u;
    if (kx == p.kw) { kx = 0u; ky = ky + 1u; if (ky == p.kh) { ky = 0u; ci = ci + 1u; } }
  }
#endif
#if CB8
  let accs = array<vec4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
#else
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
#endif
  write_out(n, co0, p0, accs);
}
#endif
