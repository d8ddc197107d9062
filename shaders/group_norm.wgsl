// GroupNorm (+ optional fused SiLU): one workgroup per (sample, group). One pass over the
// group's contiguous block in NCHW gathers the sum and the sum of squares of x − K, shifted by
// K = the block's first element (the shifted-data variance: as stable as two passes when K is
// a typical value, and one pass fewer), then the affine transform. f32 statistics whatever the
// storage dtype.
//
// Defines: SILU (apply x·sigmoid(x) to the normalised output); SUBGROUP (reduce within
// subgroups first: one barrier round instead of log2(WG)). WG must be a power of two.
//
// Banded GroupNorm (a tensor too large for one binding, held as row bands: ops::group_norm_banded):
// STATS writes one band's partial statistics over its interior rows (the window win0..win0+winlen
// of every channel's H·W) into slot `slot`; SHARED normalises with the statistics of all `slots`
// bands, merged by Chan et al.'s pairwise rule, instead of its own.

#uniform Params  // generated from ops::group_norm::Params (src/ops/group_norm.rs)

#tensor 1 x read      // [N, C, H, W]
#if STATS
#tensor 2 stats rw f32  // [T, N·G, 4]: per band and (sample, group) (mean, M2, count, 0)
#else
#tensor 2 gamma read  // [C] scale (diffusers `norm.weight`)
#tensor 3 beta read   // [C] shift (diffusers `norm.bias`)
#tensor 4 y write     // [N, C, H, W]
#if SHARED
#tensor 5 stats read f32  // [T, N·G, 4] as written by STATS
#endif
#endif

var<workgroup> red: array<vec2<f32>, ${WG}>;

#if SUBGROUP
// Workgroup sum of (s, q) through subgroup sums: one partial per subgroup (indexed by
// subgroup_id, whatever the lane-to-subgroup mapping), then one barrier.
fn wg_sum(v: vec2<f32>, lid: u32, sgi: u32, sid: u32, nsg: u32) -> vec2<f32> {
  let part = subgroupAdd(v);
  if (sgi == 0u) { red[sid] = part; }
  workgroupBarrier();
  var t = vec2<f32>(0.0);
  for (var i = 0u; i < nsg; i = i + 1u) { t += red[i]; }
  return t;
}
#else
fn wg_sum(v: vec2<f32>, lid: u32, sgi: u32, sid: u32, nsg: u32) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${WG}u / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  return red[0];
}
#endif

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
#if SUBGROUP
        @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_id) sid: u32,
        @builtin(num_subgroups) nsg: u32,
#endif
) {
#if SUBGROUP
#else
  let sgi = 0u;
  let sid = 0u;
  let nsg = 1u;
#endif
  let ng = wid.y * nwg.x + wid.x;
  if (ng >= p.count) { return; }
  let cpg = p.c / p.groups;
  let n = ng / p.groups;
  let g = ng % p.groups;
  let base = (n * p.c + g * cpg) * p.hw;
  let len = cpg * p.hw;
#if STATS
  // The band's interior rows only: channel by channel, the contiguous window of its H·W.
  let shift = x_ld(base + p.win0);
  var acc = vec2<f32>(0.0);
  for (var ch = 0u; ch < cpg; ch = ch + 1u) {
    let b = base + ch * p.hw + p.win0;
    for (var i = lid; i < p.winlen; i = i + ${WG}u) {
      let d = x_ld(b + i) - shift;
      acc += vec2<f32>(d, d * d);
    }
  }
  let cnt = f32(cpg * p.winlen);
  let t = wg_sum(acc, lid, sgi, sid, nsg);
  if (lid == 0u) {
    let o = (p.slot * p.count + ng) * 4u;
    stats_st(o, shift + t.x / cnt);
    stats_st(o + 1u, max(t.y - t.x * t.x / cnt, 0.0));
    stats_st(o + 2u, cnt);
    stats_st(o + 3u, 0.0);
  }
}
#else
#if SHARED
  // Merge the bands' (mean, M2, count) one at a time (Chan, Golub & LeVeque, 1979).
  var cnt = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var s = 0u; s < p.slots; s = s + 1u) {
    let o = (s * p.count + ng) * 4u;
    let nt = stats_ld(o + 2u);
    let tot = cnt + nt;
    let d = stats_ld(o) - mean;
    mean += d * (nt / tot);
    m2 += stats_ld(o + 1u) + d * d * (cnt * nt / tot);
    cnt = tot;
  }
  let inv = inverseSqrt(m2 / cnt + p.eps);
#else
  let shift = x_ld(base);
  var acc = vec2<f32>(0.0);
  for (var i = lid; i < len; i = i + ${WG}u) {
    let d = x_ld(base + i) - shift;
    acc += vec2<f32>(d, d * d);
  }
  let t = wg_sum(acc, lid, sgi, sid, nsg) / f32(len);
  let mean = shift + t.x;
  let inv = inverseSqrt(max(t.y - t.x * t.x, 0.0) + p.eps);
#endif
  // Flat walk with the channel tracked incrementally (no division per element).
  var ch = g * cpg + lid / p.hw;
  var r = lid % p.hw;
  for (var i = lid; i < len; i = i + ${WG}u) {
    let sc = inv * gamma_ld(ch);
    var v = (x_ld(base + i) - mean) * sc + beta_ld(ch);
#if SILU
    v = v / (1.0 + exp(-v));
#endif
    y_st(base + i, v);
    r = r + ${WG}u;
    while (r >= p.hw) { r = r - p.hw; ch = ch + 1u; }
  }
}
#endif
