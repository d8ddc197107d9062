// GroupNorm (+ optional fused SiLU): one workgroup per (sample, group). Two passes over the
// group's contiguous block in NCHW (mean, then mean squared deviation — stabler than E[x²]−E[x]²),
// then the affine transform. f32 statistics whatever the storage dtype.
//
// Defines: SILU (apply x·sigmoid(x) to the normalised output). WG must be a power of two.

struct Params {
  c: u32,        // channels
  hw: u32,       // H·W
  groups: u32,   // G (C % G == 0, host checked)
  count: u32,    // N·G workgroups that do work
  eps: f32,
  _p0: u32, _p1: u32, _p2: u32,
}
#uniform Params

#tensor 1 x read      // [N, C, H, W]
#tensor 2 gamma read  // [C] scale (diffusers `norm.weight`)
#tensor 3 beta read   // [C] shift (diffusers `norm.bias`)
#tensor 4 y write     // [N, C, H, W]

var<workgroup> red: array<f32, ${WG}>;

fn wg_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${WG}u / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let ng = wid.y * nwg.x + wid.x;
  if (ng >= p.count) { return; }
  let cpg = p.c / p.groups;
  let n = ng / p.groups;
  let g = ng % p.groups;
  let base = (n * p.c + g * cpg) * p.hw;
  let len = cpg * p.hw;
  var s = 0.0;
  for (var i = lid; i < len; i = i + ${WG}u) { s += x_ld(base + i); }
  let mean = wg_sum(s, lid) / f32(len);
  var q = 0.0;
  for (var i = lid; i < len; i = i + ${WG}u) {
    let d = x_ld(base + i) - mean;
    q += d * d;
  }
  let inv = inverseSqrt(wg_sum(q, lid) / f32(len) + p.eps);
  for (var i = lid; i < len; i = i + ${WG}u) {
    let ch = g * cpg + i / p.hw;
    var v = (x_ld(base + i) - mean) * inv * gamma_ld(ch) + beta_ld(ch);
#if SILU
    v = v / (1.0 + exp(-v));
#endif
    y_st(base + i, v);
  }
}
