// Batched 2-D transpose: y[b, c, r] = x[b, r, c]. Turns NCHW activations [B, C, H·W] into
// token-major [B, H·W, C] for attention's linear layers, and back. One invocation per output
// element.

#uniform Params  // generated from ops::transpose::Params (src/ops/transpose.rs)

#tensor 1 x read    // [B, R, C]
#tensor 2 y write   // [B, C, R]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let plane = p.rows * p.cols;
  let b = i / plane;
  let r = i % plane;          // index inside y's [C, R] plane
  let c = r / p.rows;
  let row = r % p.rows;
  y_st(i, x_ld(b * plane + row * p.cols + c));
}
