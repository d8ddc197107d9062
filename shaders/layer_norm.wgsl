// LayerNorm over the last dimension: one invocation per row (no barriers; rows are many and
// short in transformers — tokens × features), two passes for the statistics in f32 (the mean,
// summed shifted by the row's first element; then the mean of squared deviations: population
// variance as torch), then the write y = (x − mean) · (var + eps)^-½ · weight + bias.
//
// Defines: WEIGHT (multiply by weight[f]), BIAS (add bias[f]).

#uniform Params  // generated from ops::layer_norm::Params (src/ops/layer_norm.rs)

#tensor 1 x read        // [rows, cols] (any leading dims)
#tensor 2 y write       // [rows, cols]
#if WEIGHT
#tensor 3 weight read   // [cols]
#endif
#if BIAS
#tensor 4 bias read     // [cols]
#endif

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  // The mean of x − K with K the row's first element (exact-ish sums for rows far from 0).
  let shift = x_ld(base);
  var s = 0.0;
  for (var i = 0u; i < p.cols; i = i + 1u) { s += x_ld(base + i) - shift; }
  let mean = shift + s / f32(p.cols);
  var q = 0.0;
  for (var i = 0u; i < p.cols; i = i + 1u) {
    let d = x_ld(base + i) - mean;
    q += d * d;
  }
  let inv = inverseSqrt(q / f32(p.cols) + p.eps);
  for (var i = 0u; i < p.cols; i = i + 1u) {
    var v = (x_ld(base + i) - mean) * inv;
#if WEIGHT
    v = v * weight_ld(i);
#endif
#if BIAS
    v = v + bias_ld(i);
#endif
    y_st(base + i, v);
  }
}
