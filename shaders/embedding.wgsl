// Embeddings of the conditioning scalars. Defines select the entry's bindings:
// SINUSOIDAL (default when neither other define is set) — timestep embedding (DDPM / diffusers
// `get_timestep_embedding`):
//   freq_k = exp(-ln(max_period) · k / (half − shift)),  arg = scale · (t · freq_k),
//   out = [sin(arg), cos(arg)], or [cos, sin] with flip_sin_to_cos; odd dim → last column 0.
// Evaluated in the same f32 order as diffusers; sin/cos after a Cody–Waite reduction by 2π so
// large timesteps keep full accuracy.
// FOURIER — Gaussian Fourier features (Song et al., Score SDE; diffusers
//   `GaussianFourierProjection`): arg = (t' · w_k · 2) · π with t' = ln t when LOG,
//   out = [sin, cos] (or [cos, sin] with flip).
// LOOKUP — embedding (`nn.Embedding`): y[n, :] = table[label[n], :]; the binding holds table
//   rows row0 .. row0 + rows (a large table is bound in row ranges, one dispatch each), and a
//   label outside them is left to the dispatch that holds its row.
// One invocation per output element.

#uniform Params  // generated from ops::embedding::Params (src/ops/embedding.rs)

#if LOOKUP
#tensor 1 label read f32  // [N] class indices (exact small integers, host-validated < rows)
#tensor 2 table read      // [rows, dim] embedding table
#tensor 3 y write         // [N, dim]
#else
#tensor 1 t read f32      // [N] timesteps / noise levels (float)
#tensor 2 y write         // [N, dim]
#if FOURIER
#tensor 3 w read          // [half] Gaussian frequencies (diffusers `time_proj.weight`)
#endif
#endif

// sin or cos of x after a Cody–Waite reduction by 2π = 6.28125 + 1.9353071795864769e-3.
fn sin_or_cos(x: f32, use_cos: bool) -> f32 {
  let q = round(x * 0.15915494309189535);
  let red = (x - q * 6.28125) - q * 1.9353071795864769e-3;
  return select(sin(red), cos(red), use_cos);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let row = i / p.dim;
  let j = i % p.dim;
#if LOOKUP
  let l = u32(label_ld(row));
  if (l < p.row0 || l - p.row0 >= p.rows) { return; }
  y_st(i, table_ld((l - p.row0) * p.dim + j));
#else
  if (j >= 2u * p.half) { y_st(i, 0.0); return; }
  let second = j >= p.half;
  let k = select(j, j - p.half, second);
  let use_cos = second != (p.flip == 1u);
#if FOURIER
  var tv = t_ld(row);
#if LOG
  tv = log(tv);
#endif
  let arg = ((tv * w_ld(k)) * 2.0) * 3.14159265358979;
#else
  let e = (p.neg_log_max_period * f32(k)) / (f32(p.half) - p.shift);
  let arg = p.scale * (t_ld(row) * exp(e));
#endif
  y_st(i, sin_or_cos(arg, use_cos));
#endif
}
