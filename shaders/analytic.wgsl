// Closed-form denoiser of an isotropic Gaussian mixture: data x0 ~ Σ_k w_k N(μ_k, s_k² I) in D
// dimensions, model input x = α·x0 + σ·ε. Component marginals N(α μ_k, v_k I), v_k = α² s_k² + σ²;
// responsibilities r_k ∝ w_k N(x; α μ_k, v_k I); E[x0 | x] = Σ_k r_k (μ_k + α s_k²/v_k (x − α μ_k)).
// One workgroup per sample: K reductions of ||x − α μ_k||², a softmax, then the write.
// Defines: PRED_EPS, PRED_X0, PRED_V (α ε − σ x0), PRED_FLOW (ε − x0), PRED_SCORE (−ε/σ). WG a power of two.

#uniform Params  // generated from models::analytic::Params (src/models/analytic.rs)

#tensor 1 x read       // [N, D] model input
#tensor 2 mu read f32  // [K, D] component means
#tensor 3 y write      // [N, D] prediction

var<workgroup> red: array<f32, ${WG}>;
var<workgroup> resp: array<f32, 8>;

fn comp(a: array<vec4<f32>, 2>, k: u32) -> f32 {
  return a[k / 4u][k % 4u];
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let s = wid.y * nwg.x + wid.x;
  if (s >= p.n) { return; }
  let base = s * p.d;
  let al = p.alpha;
  for (var k = 0u; k < p.k; k = k + 1u) {
    var acc = 0.0;
    for (var i = lid; i < p.d; i = i + ${WG}u) {
      let e = x_ld(base + i) - al * mu_ld(k * p.d + i);
      acc += e * e;
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var st = ${WG}u / 2u; st > 0u; st = st >> 1u) {
      if (lid < st) { red[lid] = red[lid] + red[lid + st]; }
      workgroupBarrier();
    }
    if (lid == 0u) {
      let v = al * al * comp(p.s2, k) + p.sigma * p.sigma;
      resp[k] = comp(p.logw, k) - 0.5 * f32(p.d) * log(v) - 0.5 * red[0] / v;
    }
    workgroupBarrier();
  }
  // Softmax over components (every invocation computes it from workgroup memory).
  var m = -3.4028235e38;
  for (var k = 0u; k < p.k; k = k + 1u) { m = max(m, resp[k]); }
  var tot = 0.0;
  for (var k = 0u; k < p.k; k = k + 1u) { tot += exp(resp[k] - m); }
  for (var i = lid; i < p.d; i = i + ${WG}u) {
    let xv = x_ld(base + i);
    var x0 = 0.0;
    for (var k = 0u; k < p.k; k = k + 1u) {
      let r = exp(resp[k] - m) / tot;
      let muv = mu_ld(k * p.d + i);
      let v = al * al * comp(p.s2, k) + p.sigma * p.sigma;
      x0 += r * (muv + al * comp(p.s2, k) / v * (xv - al * muv));
    }
#if PRED_EPS
    y_st(base + i, (xv - al * x0) / p.sigma);
#endif
#if PRED_X0
    y_st(base + i, x0);
#endif
#if PRED_V
    y_st(base + i, al * (xv - al * x0) / p.sigma - p.sigma * x0);
#endif
#if PRED_FLOW
    y_st(base + i, (xv - al * x0) / p.sigma - x0);
#endif
#if PRED_SCORE
    y_st(base + i, -(xv - al * x0) / (p.sigma * p.sigma));
#endif
  }
}
