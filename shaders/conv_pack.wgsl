// Repacks conv weights [Cout, Cin, taps] (PyTorch layout, taps = kh·kw) into
// [⌈Cout/4⌉, Cin, taps, 4] — four output channels innermost, zero-padded past Cout — so the
// conv2d row kernel reads the weights of 4 channels at one tap as one vec4. One invocation per
// packed element.

#uniform Params  // generated from ops::conv_pack::Params (src/ops/conv_pack.rs)

#tensor 1 w read      // [Cout, Cin, taps]
#tensor 2 packed write  // [⌈Cout/4⌉, Cin, taps, 4]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.total) { return; }
  let r = i % 4u;
  let t = (i / 4u) % p.taps;
  let ci = (i / (4u * p.taps)) % p.cin;
  let co = (i / (4u * p.taps * p.cin)) * 4u + r;
  var v = 0.0;
  if (co < p.cout) { v = w_ld((co * p.cin + ci) * p.taps + t); }
  packed_st(i, v);
}
