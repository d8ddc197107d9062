// W8A8 2-D convolution (PTQ4DM, Shang et al. 2023): int8 weights, the input quantised with
// the layer's calibrated per-tensor scale, integer products accumulated per output.
// q_x = clamp(round_half_even(x · in_inv), −127, 127) (in_inv = f32(1/s_x); `round` is
// round-half-even in WGSL); y = f32(Σ q_w · q_x) · (wscale[co] · in_scale) + bias[co]
// (+ t[n, co] (ADD_NC) + r (RESIDUAL)) · out_scale — see load::quant.
//
// QUANTIZE: the input pass. One invocation per word of the quantised input [A, ⌈C/4⌉, P]:
// word (a, c4, p) packs channels 4·c4 … 4·c4 + 3 of x[(a·C + c)·P + p] (zero past C). The conv
// reads x as [N, Cin, H·W] (P = H·W), the linear layer (gemm_a8.wgsl) as [rows, fin] (P = 1).
// Each input element is quantised once, not once per output-channel block.
// Otherwise the conv: each invocation owns 8 output channels × 4 consecutive flattened output
// pixels; taps outside, words of four input channels inside, so a word of weights meets a word
// of quantised inputs. DOT4: `dot4I8Packed` into i32 accumulators (exact); otherwise the same
// integer products in f32 (exact while partial sums stay below 2^24).
// BIAS, ADD_NC, RESIDUAL as in conv2d.wgsl. Zero padding; stride and padding along H and W.

#uniform Params  // generated from ops::conv2d_a8::Params (src/ops/conv2d_a8.rs)

#if QUANTIZE
#tensor 1 x read           // [A, C, P] input (model dtype)
#tensor 2 xq write i8      // [A, ⌈C/4⌉, P] words of 4 quantised channels

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (i >= p.words) { return; }
  let pp = i % p.pix;
  let c4 = (i / p.pix) % p.c4;
  let a = i / (p.pix * p.c4);
  var q = vec4<i32>(0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    let ch = c4 * 4u + c;
    if (ch < p.c) {
      q[c] = i32(clamp(round(x_ld((a * p.c + ch) * p.pix + pp) * p.in_inv), -127.0, 127.0));
    }
  }
  xq_stw(i, pack4xI8(q));
}
#else
#tensor 1 xq read i8       // [N, ⌈Cin/4⌉, H·W] words of 4 quantised input channels (QUANTIZE pass)
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

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let p0 = gid.x * 4u;
  let co0 = gid.y * 8u;
  let n = gid.z;
  if (p0 >= p.hw_out || co0 >= p.cout) { return; }
  let hw = p.h * p.w;
  let xb = n * p.cin4 * hw;
  let taps = p.kh * p.kw;
#if DOT4
  var acc: array<vec4<i32>, 8>;  // [channel r][pixel j]
#else
  var acc: array<vec4<f32>, 8>;
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
      for (var j = 0u; j < 4u; j = j + 1u) {
        xw[j] = 0u;
        if (ok[j]) { xw[j] = xq_word(off[j] + c4 * hw); }
      }
#else
      var xw: array<vec4<f32>, 4>;
      for (var j = 0u; j < 4u; j = j + 1u) {
        xw[j] = vec4<f32>(0.0);
        if (ok[j]) { xw[j] = xq_ld4(off[j] + c4 * hw); }
      }
#endif
      for (var r = 0u; r < 8u; r = r + 1u) {
        let co = co0 + r;
        if (co >= p.cout) { break; }
#if DOT4
        let w = wt_word((co * taps + tap) * p.cin4 + c4);
        acc[r] = acc[r] + vec4<i32>(dot4I8Packed(w, xw[0]), dot4I8Packed(w, xw[1]),
                                    dot4I8Packed(w, xw[2]), dot4I8Packed(w, xw[3]));
#else
        let wf = wt_ld4((co * taps + tap) * p.cin4 + c4);
        acc[r] = acc[r] + vec4<f32>(dot(wf, xw[0]), dot(wf, xw[1]), dot(wf, xw[2]), dot(wf, xw[3]));
#endif
      }
    }
  }
  let yb = n * p.y_bs;
  for (var r = 0u; r < 8u; r = r + 1u) {
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
#endif
