// Resampling over NCHW planes. One invocation per output element.
// Defines: UPSAMPLE_NEAREST (integer factor f: y[.., oy, ox] = x[.., oy / f, ox / f], as
//   diffusers' Upsample2D with F.interpolate(scale_factor=2, mode="nearest")),
//   AVG_POOL (2×2 window, stride 2, as diffusers' Downsample2D without conv; H, W even),
//   REFLECT (y[.., oy, ox] = x[.., r(oy, H), r(ox, W)], r(i, n) = i < n ? i : 2(n − 1) − i:
//   F.pad(x, (0, Wo − W, 0, Ho − H), "reflect") for Ho < 2H, Wo < 2W, and the crop
//   x[.., :Ho, :Wo] for Ho ≤ H, Wo ≤ W).

#uniform Params  // generated from ops::resample::Params (src/ops/resample.rs)

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
#if UPSAMPLE_NEAREST
  y_st(i, x_ld(src + (oy / p.factor) * p.w + ox / p.factor));
#endif
#if REFLECT
  let ry = select(2u * (p.h - 1u) - oy, oy, oy < p.h);
  let rx = select(2u * (p.w - 1u) - ox, ox, ox < p.w);
  y_st(i, x_ld(src + ry * p.w + rx));
#endif
#if AVG_POOL
  let t = src + (2u * oy) * p.w + 2u * ox;
  y_st(i, 0.25 * ((x_ld(t) + x_ld(t + 1u)) + (x_ld(t + p.w) + x_ld(t + p.w + 1u))));
#endif
}
