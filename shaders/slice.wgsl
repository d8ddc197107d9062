// Channel slice: y[n, c, p] = x[n, c0 + c, p] for NCHW tensors (splitting a multi-head output,
// e.g. RDDM's residual and noise heads). One invocation per output element.

#uniform Params  // generated from ops::concat::SliceParams (src/ops/concat.rs)

#tensor 1 x read    // [N, Cx, H, W]
#tensor 2 y write   // [N, Cy, H, W], Cy ≤ Cx − c0

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let n = i / (p.cy * p.hw);
  let r = i % (p.cy * p.hw);
  y_st(i, x_ld((n * p.cx + p.c0) * p.hw + r));
}
