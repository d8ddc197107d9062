// FIR resampling (upfirdn2d, as in StyleGAN2 and Song et al.'s NCSN++; diffusers
// `upfirdn2d_native`): zero-insertion upsampling by `up`, zero padding (pad0 before, pad1 after),
// true convolution with a kh×kw kernel (≤ 4×4, taps in the uniform), keeping every `down`-th
// output. One invocation per output element of each NCHW plane.

#uniform Params  // generated from ops::fir::Params (src/ops/fir.rs)

#tensor 1 x read    // [N, C, H, W]
#tensor 2 y write   // [N, C, Ho, Wo]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let plane = i / (p.ho * p.wo);
  let r = i % (p.ho * p.wo);
  let oy = r / p.wo;
  let ox = r % p.wo;
  let src = plane * p.h * p.w;
  var acc = 0.0;
  for (var a = 0u; a < p.kh; a = a + 1u) {
    // Row in the upsampled, padded image; the flipped kernel makes this a true convolution.
    let uy = i32(oy * p.down + a) - i32(p.pad0);
    if (uy < 0 || uy % i32(p.up) != 0 || uy / i32(p.up) >= i32(p.h)) { continue; }
    let iy = u32(uy) / p.up;
    for (var b = 0u; b < p.kw; b = b + 1u) {
      let ux = i32(ox * p.down + b) - i32(p.pad0);
      if (ux < 0 || ux % i32(p.up) != 0 || ux / i32(p.up) >= i32(p.w)) { continue; }
      let ix = u32(ux) / p.up;
      acc += p.taps[p.kh - 1u - a][p.kw - 1u - b] * x_ld(src + iy * p.w + ix);
    }
  }
  y_st(i, acc);
}
