// Langevin corrector update (Song et al., "Score-Based Generative Modeling through SDEs", ICLR
// 2021, Alg. 4/5): ε = 2·alpha·(snr·mean_b ‖z_b‖ / mean_b ‖g_b‖)² from per-sample L2 norms
// (reduced beforehand), then x ← x + ε·g + √(2ε)·z. One invocation per element; each
// recomputes the batch means from the N norms (N is small).

#uniform Params  // generated from solvers::executor::LangevinParams (src/solvers/executor.rs)

#tensor 1 x rw f32        // [N, ...] sample, updated in place
#tensor 2 g read f32      // [N, ...] score
#tensor 3 z read f32      // [N, ...] standard normal draw
#tensor 4 gn read f32     // [N] per-sample ‖g‖
#tensor 5 zn read f32     // [N] per-sample ‖z‖

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  var sg = 0.0;
  var sz = 0.0;
  for (var b = 0u; b < p.samples; b = b + 1u) {
    sg += gn_ld(b);
    sz += zn_ld(b);
  }
  let r = p.snr * sz / max(sg, 1e-30);
  let eps = 2.0 * p.alpha * r * r;
  x_st(i, x_ld(i) + eps * g_ld(i) + sqrt(2.0 * eps) * z_ld(i));
}
