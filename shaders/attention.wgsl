// Fused attention: out[b, i, h·D + e] = Σ_j softmax_j(α·q_i·k_j) v_j[e] for q, out
// [B, Lq, H·D] and k, v [B, Lk, H·D] in the token-major layout of diffusers' Attention (heads
// adjacent in the channel dim). One invocation per (b, h, query i): one pass over the keys
// (j ≤ i only when p.causal = 1) with an online softmax (running max and sum, rescaled
// accumulator), f32 throughout; no score matrix in memory. The query and the accumulator live
// in private vec4 arrays of DV4 entries (a define, ≥ ⌈D/4⌉): the loops over them have constant
// trip counts; lanes past D hold q = 0 and are never stored.

#uniform Params  // generated from ops::attention::Params (src/ops/attention.rs)

#tensor 1 q read      // [B, Lq, H·D]
#tensor 2 k read      // [B, Lk, H·D]
#tensor 3 v read      // [B, Lk, H·D]
#tensor 4 out write   // [B, Lq, H·D]

// Elements 4e..4e+3 of a head row starting at `o` (indices past D clamped to D − 1).
fn k4(o: u32, e: u32) -> vec4<f32> {
  let l = p.dim - 1u;
  return vec4<f32>(k_ld(o + min(4u * e, l)), k_ld(o + min(4u * e + 1u, l)),
                   k_ld(o + min(4u * e + 2u, l)), k_ld(o + min(4u * e + 3u, l)));
}
fn v4(o: u32, e: u32) -> vec4<f32> {
  let l = p.dim - 1u;
  return vec4<f32>(v_ld(o + min(4u * e, l)), v_ld(o + min(4u * e + 1u, l)),
                   v_ld(o + min(4u * e + 2u, l)), v_ld(o + min(4u * e + 3u, l)));
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (t >= p.batch * p.heads * p.lq) { return; }
  let i = t % p.lq;
  let bh = t / p.lq;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let row = p.heads * p.dim;
  let qo = (b * p.lq + i) * row + h * p.dim;
  let n4 = (p.dim + 3u) / 4u;
  var qv: array<vec4<f32>, ${DV4}>;
  var acc: array<vec4<f32>, ${DV4}>;
  for (var e = 0u; e < ${DV4}u; e = e + 1u) {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c = c + 1u) {
      if (4u * e + c < p.dim) { x[c] = q_ld(qo + 4u * e + c) * p.scale; }
    }
    qv[e] = x;
    acc[e] = vec4<f32>(0.0);
  }
  var nk = p.lk;
  if (p.causal == 1u) { nk = min(p.lk, i + 1u); }
  var m = -3.4028235e38;
  var l = 0.0;
  for (var j = 0u; j < nk; j = j + 1u) {
    let ko = (b * p.lk + j) * row + h * p.dim;
    var s = 0.0;
    for (var e = 0u; e < ${DV4}u; e = e + 1u) {
      if (e < n4) { s += dot(qv[e], k4(ko, e)); }
    }
    let m2 = max(m, s);
    let c = exp(m - m2);
    let w = exp(s - m2);
    l = l * c + w;
    for (var e = 0u; e < ${DV4}u; e = e + 1u) {
      if (e < n4) { acc[e] = acc[e] * c + w * v4(ko, e); }
    }
    m = m2;
  }
  let inv = 1.0 / l;
  for (var e = 0u; e < ${DV4}u; e = e + 1u) {
    for (var c = 0u; c < 4u; c = c + 1u) {
      if (4u * e + c < p.dim) { out_st(qo + 4u * e + c, acc[e][c] * inv); }
    }
  }
}
