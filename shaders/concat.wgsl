// Channel concatenation: y = cat([a, b], dim=1) for NCHW tensors (UNet skip connections,
// conditioning by channel concat). One invocation per output element.

#uniform Params  // generated from ops::concat::Params (src/ops/concat.rs)

#tensor 1 a read    // [N, Ca, H, W]
#tensor 2 b read    // [N, Cb, H, W]
#tensor 3 y write   // [N, Ca + Cb, H, W]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let ct = p.ca + p.cb;
  let n = i / (ct * p.hw);
  let r = i % (ct * p.hw);
  let c = r / p.hw;
  let px = r % p.hw;
  if (c < p.ca) {
    y_st(i, a_ld((n * p.ca + c) * p.hw + px));
  } else {
    y_st(i, b_ld((n * p.cb + (c - p.ca)) * p.hw + px));
  }
}
