// W8A8 linear layer (PTQ4DM, Shang et al. 2023): y[m, o] = f32(Σ_k q_w[o, k] · q_x[m, k]) ·
// (wscale[o] · in_scale) + bias[o], with q_x = clamp(round_half_even(x · in_inv), −127, 127)
// quantised on load (see load::quant). Each invocation owns 4 rows × 4 outputs and walks K in
// words of four.
//
// Defines: DOT4 — `dot4I8Packed` into i32 accumulators (exact); otherwise the same integer
// products in f32 (exact while partial sums stay below 2^24). BIAS.

#uniform Params  // generated from ops::gemm_a8::Params (src/ops/gemm_a8.rs)

#tensor 1 x read           // [rows, fin] input (model dtype)
#tensor 2 wt read i8       // [fout, ⌈fin/4⌉·4] int8, rows zero-padded to whole words
#tensor 3 y write          // [rows, fout]
#tensor 4 wscale read f32  // [fout] per-output weight scales
#if BIAS
#tensor 5 bias read        // [fout]
#endif

fn qx(v: f32) -> i32 {
  return i32(clamp(round(v * p.in_inv), -127.0, 127.0));
}

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
      var q = vec4<i32>(0);
      for (var c = 0u; c < 4u; c = c + 1u) {
        let k = k4 * 4u + c;
        if (m < p.rows && k < p.fin) { q[c] = qx(x_ld(m * p.fin + k)); }
      }
#if DOT4
      xw[i] = pack4xI8(q);
#else
      xw[i] = vec4<f32>(q);
#endif
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
      let o = o0 + r;
      if (o >= p.fout) { break; }
      let w = wt_word(o * p.fin4 + k4);
#if DOT4
      for (var i = 0u; i < 4u; i = i + 1u) { acc[i][r] = acc[i][r] + dot4I8Packed(w, xw[i]); }
#else
      let wf = vec4<f32>(unpack4xI8(w));
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
