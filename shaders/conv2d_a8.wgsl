// W8A8 2-D convolution (PTQ4DM, Shang et al. 2023): int8 weights, the input quantised on load
// with the layer's calibrated per-tensor scale, integer products accumulated per output.
// q_x = clamp(round_half_even(x · in_inv), −127, 127) (in_inv = f32(1/s_x); `round` is
// round-half-even in WGSL); y = f32(Σ q_w · q_x) · (wscale[co] · in_scale) + bias[co]
// (+ t[n, co] (ADD_NC) + r (RESIDUAL)) · out_scale — see load::quant.
// Each invocation owns 4 output channels × 4 consecutive flattened output pixels; taps outside,
// input channels inside in words of four (the weight layout below), so every word of weights
// meets a word of four quantised input channels.
//
// Defines: DOT4 — the word products with `dot4I8Packed` into i32 accumulators (exact);
// otherwise the same integer products in f32 (exact while partial sums stay below 2^24).
// BIAS, ADD_NC, RESIDUAL as in conv2d.wgsl. Zero padding; stride and padding along H and W.

#uniform Params  // generated from ops::conv2d_a8::Params (src/ops/conv2d_a8.rs)

#tensor 1 x read           // [N, Cin, H, W] input (model dtype)
#tensor 2 wt read i8       // [Cout, kh·kw, ⌈Cin/4⌉·4] int8: words of 4 input channels (ops::conv2d_a8::pack_a8)
#tensor 3 y write          // [N, Cout, Ho, Wo] output
#tensor 7 wscale read f32  // [Cout] per-output-channel weight scales
#if BIAS
#tensor 4 bias read        // [Cout]
#endif
#if ADD_NC
#tensor 5 tnc read         // [N, Cout] added per sample and channel
#endif
#if RESIDUAL
#tensor 6 res read         // [N, Cout, Ho, Wo] added element-wise (must not alias y)
#endif

fn qx(v: f32) -> i32 {
  return i32(clamp(round(v * p.in_inv), -127.0, 127.0));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let p0 = gid.x * 4u;
  let co0 = gid.y * 4u;
  let n = gid.z;
  if (p0 >= p.hw_out || co0 >= p.cout) { return; }
  let xb = n * p.x_bs;
  let hw = p.h * p.w;
  let taps = p.kh * p.kw;
#if DOT4
  var acc: array<vec4<i32>, 4>;  // [channel r][pixel j]
#else
  var acc: array<vec4<f32>, 4>;
#endif
  for (var tap = 0u; tap < taps; tap = tap + 1u) {
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    var off: array<u32, 4>;
    var ok: array<bool, 4>;
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pp = p0 + j;
      let iy = i32((pp / p.wo) * p.stride + ky) - i32(p.pad);
      let ix = i32((pp % p.wo) * p.stride + kx) - i32(p.pad);
      ok[j] = pp < p.hw_out && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
      off[j] = 0u;
      if (ok[j]) { off[j] = xb + u32(iy) * p.w + u32(ix); }
    }
    for (var c4 = 0u; c4 < p.cin4; c4 = c4 + 1u) {
#if DOT4
      var xw: array<u32, 4>;
#else
      var xw: array<vec4<f32>, 4>;
#endif
      for (var j = 0u; j < 4u; j = j + 1u) {
        var q = vec4<i32>(0);
        if (ok[j]) {
          for (var i = 0u; i < 4u; i = i + 1u) {
            let ci = c4 * 4u + i;
            if (ci < p.cin) { q[i] = qx(x_ld(off[j] + ci * hw)); }
          }
        }
#if DOT4
        xw[j] = pack4xI8(q);
#else
        xw[j] = vec4<f32>(q);
#endif
      }
      for (var r = 0u; r < 4u; r = r + 1u) {
        let co = co0 + r;
        if (co >= p.cout) { break; }
        let w = wt_word((co * taps + tap) * p.cin4 + c4);
#if DOT4
        acc[r] = acc[r] + vec4<i32>(dot4I8Packed(w, xw[0]), dot4I8Packed(w, xw[1]),
                                    dot4I8Packed(w, xw[2]), dot4I8Packed(w, xw[3]));
#else
        let wf = vec4<f32>(unpack4xI8(w));
        acc[r] = acc[r] + vec4<f32>(dot(wf, xw[0]), dot(wf, xw[1]), dot(wf, xw[2]), dot(wf, xw[3]));
#endif
      }
    }
  }
  let yb = n * p.y_bs;
  for (var r = 0u; r < 4u; r = r + 1u) {
    let co = co0 + r;
    if (co >= p.cout) { break; }
    let sc = wscale_ld(co) * p.in_scale;
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
        var v = f32(acc[r][j]) * sc + b;
#if RESIDUAL
        v = v + res_ld(o);
#endif
        y_st(o, v * p.out_scale);
      }
    }
  }
}
