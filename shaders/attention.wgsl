// Fused attention for short sequences: out[b, i, h·D + e] = Σ_j softmax_j(α·q_i·k_j) v_j[e] for
// q, k, v, out in the token-major [B, L, H·D] layout of diffusers' Attention (heads adjacent in
// the channel dim). One invocation per (b, h, query i): one pass over the keys with an online
// softmax (running max and sum, rescaled accumulator), f32 throughout; no score matrix in
// memory. Head dim D ≤ DMAX (a define; the accumulator lives in a private array).

#uniform Params  // generated from ops::attention::Params (src/ops/attention.rs)

#tensor 1 q read      // [B, L, H·D]
#tensor 2 k read      // [B, L, H·D]
#tensor 3 v read      // [B, L, H·D]
#tensor 4 out write   // [B, L, H·D]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (t >= p.batch * p.heads * p.len) { return; }
  let i = t % p.len;
  let bh = t / p.len;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let row = p.heads * p.dim;
  let qo = (b * p.len + i) * row + h * p.dim;
  var qv: array<f32, ${DMAX}>;
  var acc: array<f32, ${DMAX}>;
  for (var e = 0u; e < p.dim; e = e + 1u) {
    qv[e] = q_ld(qo + e) * p.scale;
    acc[e] = 0.0;
  }
  var m = -3.4028235e38;
  var l = 0.0;
  for (var j = 0u; j < p.len; j = j + 1u) {
    let ko = (b * p.len + j) * row + h * p.dim;
    var s = 0.0;
    for (var e = 0u; e < p.dim; e = e + 1u) { s += qv[e] * k_ld(ko + e); }
    let m2 = max(m, s);
    let c = exp(m - m2);
    let w = exp(s - m2);
    l = l * c + w;
    for (var e = 0u; e < p.dim; e = e + 1u) { acc[e] = acc[e] * c + w * v_ld(ko + e); }
    m = m2;
  }
  let inv = 1.0 / l;
  for (var e = 0u; e < p.dim; e = e + 1u) { out_st(qo + e, acc[e] * inv); }
}
