// One Adam step (Kingma & Ba, ICLR 2015), element-wise, as torch.optim.Adam without weight
// decay or amsgrad: m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²;
// p = p − step·m / (√v · inv_sqrt_bc2 + eps), with step = lr / (1 − β1^k) and
// inv_sqrt_bc2 = 1/√(1 − β2^k) computed on the host for step k. All f32.

#uniform Params  // generated from ops::adam::Params (src/ops/adam.rs)

#tensor 1 theta rw f32  // [n] parameter
#tensor 2 grad read f32  // [n] gradient
#tensor 3 mom1 rw f32  // [n] first moment
#tensor 4 mom2 rw f32  // [n] second moment

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let gi = grad_ld(i);
  let mi = p.beta1 * mom1_ld(i) + (1.0 - p.beta1) * gi;
  let vi = p.beta2 * mom2_ld(i) + (1.0 - p.beta2) * gi * gi;
  mom1_st(i, mi);
  mom2_st(i, vi);
  theta_st(i, theta_ld(i) - p.step * mi / (sqrt(vi) * p.inv_sqrt_bc2 + p.eps));
}
