// Degradation operators of the training-free inverse-problem methods (ops::degrade): the linear
// maps A, their adjoints Aᵀ and closed-form pseudo-inverses A†, batched over NCHW planes, f32.
// One invocation per output element. One kernel per define:
//   K_POOL   y[p, i, j] = scale · Σ_{a,b < R} x[p, R·i + a, R·j + b]       (y: [N, C, H/R, W/R])
//   K_UNPOOL y[p, i, j] = scale · x[p, i / R, j / R]                       (y: [N, C, H, W])
//   K_MASK   y[p, i, j] = m[i, j] · x[p, i, j]                             (m: [H, W], 0 or 1)
//   K_BLUR   y[p, i, j] = Σ_{a,b} k[a]·k[b]·x[p, i + a − T/2, j + b − T/2], zero outside the
//            image (zero padding; the host passes the taps reversed for Aᵀ).
//   K_DFT    y[p, u, v, c] = m[u] · scale · (re, im)_c Σ_{a,b} x[p, a, b]·exp(−iθ)   (y: [N, C, H, W, 2])
//   K_IDFT   y[p, a, b]    = scale · Σ_{u,v} m[u]·(x_re·cos θ − x_im·sin θ)           (x: [N, C, H, W, 2])
//            θ = 2π((u − H/2)a/H + (v − W/2)b/W), reduced exactly in integers mod H·W
//            (a direct DFT of any size; both flagged K_KSPACE, m: [H] row mask).
// h, w: the input plane's size; ho, wo: the output plane's size (the image's for the DFTs).

#uniform Params  // generated from ops::degrade::Params (src/ops/degrade.rs)

#tensor 1 x read f32    // [N, C, h, w]
#tensor 2 y write f32   // [N, C, ho, wo]
#if K_MASK
#tensor 3 m read f32    // [h, w] mask
#endif
#if K_KSPACE
#tensor 3 m read f32    // [h] k-space row mask
#endif

#if K_KSPACE
// exp(iθ) for θ = 2π·((ku·a mod H)·W + (kv·b mod W)·H mod HW) / HW, ku = (u − H/2) mod H.
fn twiddle(u: u32, v: u32, a: u32, b: u32) -> vec2<f32> {
  let ku = (u + p.h - p.h / 2u) % p.h;
  let kv = (v + p.w - p.w / 2u) % p.w;
  let hw = p.h * p.w;
  var n = (((ku * a) % p.h) * p.w + ((kv * b) % p.w) * p.h) % hw;
  var f = f32(n) / f32(hw);
  if (f > 0.5) { f = f - 1.0; }
  let th = 6.283185307179586 * f;
  return vec2<f32>(cos(th), sin(th));
}
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
#if K_DFT
  let o = e / 2u;
  let c = e % 2u;
  let hw = p.h * p.w;
  let pl = o / hw;
  let u = o % hw / p.w;
  let v = o % p.w;
  var acc = 0.0;
  if (m_ld(u) != 0.0) {
    for (var a = 0u; a < p.h; a = a + 1u) {
      for (var b = 0u; b < p.w; b = b + 1u) {
        let t = twiddle(u, v, a, b);
        let xv = x_ld(pl * hw + a * p.w + b);
        // exp(−iθ) = cos θ − i sin θ
        acc += select(-t.y, t.x, c == 0u) * xv;
      }
    }
  }
  y_st(e, p.scale * acc);
#endif
#if K_IDFT
  let hw = p.h * p.w;
  var acc = 0.0;
  for (var u = 0u; u < p.h; u = u + 1u) {
    if (m_ld(u) == 0.0) { continue; }
    for (var v = 0u; v < p.w; v = v + 1u) {
      let t = twiddle(u, v, i, j);
      let k = 2u * (plane * hw + u * p.w + v);
      acc += x_ld(k) * t.x - x_ld(k + 1u) * t.y;
    }
  }
  y_st(e, p.scale * acc);
#endif
}
