// Degradation operators of the training-free inverse-problem methods (ops::degrade): the linear
// maps A, their adjoints Aᵀ and closed-form pseudo-inverses A†, batched over NCHW planes, f32.
// One invocation per output element. One kernel per define:
//   K_POOL   y[p, i, j] = scale · Σ_{a,b < R} x[p, R·i + a, R·j + b]       (y: [N, C, H/R, W/R])
//   K_UNPOOL y[p, i, j] = scale · x[p, i / R, j / R]                       (y: [N, C, H, W])
//   K_MASK   y[p, i, j] = m[i, j] · x[p, i, j]                             (m: [H, W], 0 or 1)
//   K_BLUR   y[p, i, j] = Σ_{a,b} k[a]·k[b]·x[p, i + a − T/2, j + b − T/2], zero outside the
//            image (zero padding; the host passes the taps reversed for Aᵀ).
// h, w: the input plane's size; ho, wo: the output plane's size.

#uniform Params  // generated from ops::degrade::Params (src/ops/degrade.rs)

#tensor 1 x read f32    // [N, C, h, w]
#tensor 2 y write f32   // [N, C, ho, wo]
#if K_MASK
#tensor 3 m read f32    // [h, w] mask
#endif

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let e = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (e >= p.n) { return; }
  let plane = e / (p.ho * p.wo);
  let q = e % (p.ho * p.wo);
  let i = q / p.wo;
  let j = q % p.wo;
  let src = plane * p.h * p.w;
#if K_POOL
  var acc = 0.0;
  for (var a = 0u; a < p.r; a = a + 1u) {
    for (var b = 0u; b < p.r; b = b + 1u) {
      acc += x_ld(src + (p.r * i + a) * p.w + p.r * j + b);
    }
  }
  y_st(e, p.scale * acc);
#endif
#if K_UNPOOL
  y_st(e, p.scale * x_ld(src + (i / p.r) * p.w + j / p.r));
#endif
#if K_MASK
  y_st(e, m_ld(q) * x_ld(e));
#endif
#if K_BLUR
  let half = i32(p.ntaps / 2u);
  var acc = 0.0;
  for (var a = 0u; a < p.ntaps; a = a + 1u) {
    let yy = i32(i) + i32(a) - half;
    if (yy < 0 || yy >= i32(p.h)) { continue; }
    var row = 0.0;
    for (var b = 0u; b < p.ntaps; b = b + 1u) {
      let xx = i32(j) + i32(b) - half;
      if (xx < 0 || xx >= i32(p.w)) { continue; }
      row += p.taps[b / 4u][b % 4u] * x_ld(src + u32(yy) * p.w + u32(xx));
    }
    acc += p.taps[a / 4u][a % 4u] * row;
  }
  y_st(e, acc);
#endif
}
