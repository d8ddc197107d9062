// Row-window copy between NCHW tensors (ops::rows): y[n, c, dst_row0 + r, ox] = X[n, c,
// src_row0 + r, ox] for r < rows, where X is x upsampled by `factor` (nearest) and rows outside
// X read as zero. Row bands use it to fill halo rows from their neighbours, to cut a tensor into
// bands and to join them. One invocation per written element.
// Defines: ZERO (write zeros; no x).

#uniform Params  // generated from ops::rows::Params (src/ops/rows.rs)

#ifndef ZERO
#tensor 1 x read    // [N, C, Hs, Ws]
#endif
#tensor 2 y write   // [N, C, Hd, Ws·factor]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let ox = i % p.wd;
  let t = i / p.wd;
  let r = t % p.rows;
  let nc = t / p.rows;
  var v = 0.0;
#ifndef ZERO
  let sr = p.src_row0 + i32(r);
  if (sr >= 0 && u32(sr) < p.hs * p.factor) {
    v = x_ld((nc * p.hs + u32(sr) / p.factor) * p.ws + ox / p.factor);
  }
#endif
  y_st((nc * p.hd + p.dst_row0 + r) * p.wd + ox, v);
}
