// W8A8 linear layer (PTQ4DM, Shang et al. 2023): y[m, o] = f32(Σ_k q_w[o, k] · q_x[m, k]) ·
// (wscale[o] · in_scale) + bias[o], with q_x = clamp(round_half_even(x · in_inv), −127, 127)
// quantised by conv2d_a8.wgsl's QUANTIZE pass into words of four (see load::quant). Each
// invocation owns 4 rows × 4 outputs and walks K in words of four.
//
// Defines: DOT4 — `dot4I8Packed` into i32 accumulators (exact); otherwise the same integer
// products in f32 (exact while partial sums stay below 2^24). BIAS.

#uniform Params  // generated from ops::gemm_a8::Params (src/ops/gemm_a8.rs)

#tensor 1 xq read i8       // [rows, ⌈fin/4⌉] words of 4 quantised inputs
#tensor 2 wt read i8       // [fout, ⌈fin/4⌉·4] int8, rows zero-padded to whole words
#tensor 3 y write          // [rows, fout]
#tensor 4 wscale read f32  // [fout] per-output weight scales
#if BIAS
#tensor 5 bias read        // [fout]
#endif

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o0 = gid.x * 4u;
  let m0 = gid.y * 4u;
  if (o0 >= p.fout || m0 >= p.rows) { return; }
#if DOT4
  var acc: array<vec4<i32>, 4>;  // [row i][output r]
#else
  var acc: array<vec4<f32>, 4>;
#endif
  for (var k4 = 0u; k4 < p.fin4; k4 = k4 + 1u) {
#if DOT4
    var xw: array<u32, 4>;
#else
    var xw: array<vec4<f32>, 4>;
#endif
    for (var i = 0u; i < 4u; i = i + 1u) {
      let m = m0 + i;
#if DOT4
      xw[i] = 0u;
      if (m < p.rows) { xw[i] = xq_word(m * p.fin4 + k4); }
#else
      xw[i] = vec4<f32>(0.0);
      if (m < p.rows) { xw[i] = xq_ld4(m * p.fin4 + k4); }
#endif
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
      let o = o0 + r;
      if (o >= p.fout) { break; }
#if DOT4
      let w = wt_word(o * p.fin4 + k4);
      for (var i = 0u; i < 4u; i = i + 1u) { acc[i][r] = acc[i][r] + dot4I8Packed(w, xw[i]); }
#else
      let wf = wt_ld4(o * p.fin4 + k4);
      for (var i = 0u; i < 4u; i = i + 1u) { acc[i][r] = acc[i][r] + dot(wf, xw[i]); }
#endif
    }
  }
  for (var r = 0u; r < 4u; r = r + 1u) {
    let o = o0 + r;
    if (o >= p.fout) { break; }
    let sc = wscale_ld(o) * p.in_scale;
    var b = 0.0;
#if BIAS
    b = bias_ld(o);
#endif
    for (var i = 0u; i < 4u; i = i + 1u) {
      let m = m0 + i;
      if (m < p.rows) { y_st(m * p.fout + o, f32(acc[i][r]) * sc + b); }
    }
  }
}
