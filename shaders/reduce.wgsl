// Per-sample reductions over a flattened [N, L] view: sum, mean, L2 norm. One workgroup per
// sample; each invocation sums a strided slice, then a tree reduction in workgroup memory.
// The output is always f32 (an f16 sum could overflow). WG must be a power of two.
//
// Defines: OP_SUM | OP_MEAN | OP_L2 | OP_ABSMAX (max |x|: the same tree with max for +).

#uniform Params  // generated from ops::reduce::Params (src/ops/reduce.rs)

#tensor 1 x read       // [N, L] (any [N, ...] tensor, flattened per sample)
#tensor 2 y write f32  // [N]

var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let s = wid.y * nwg.x + wid.x;
  if (s >= p.n) { return; }
  let base = s * p.len;
  var acc = 0.0;
  for (var i = lid; i < p.len; i = i + ${WG}u) {
    let v = x_ld(base + i);
#if OP_L2
    acc += v * v;
#else
#if OP_ABSMAX
    acc = max(acc, abs(v));
#else
    acc += v;
#endif
#endif
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var st = ${WG}u / 2u; st > 0u; st = st >> 1u) {
#if OP_ABSMAX
    if (lid < st) { red[lid] = max(red[lid], red[lid + st]); }
#else
    if (lid < st) { red[lid] = red[lid] + red[lid + st]; }
#endif
    workgroupBarrier();
  }
  if (lid == 0u) {
    var r = red[0];
#if OP_MEAN
    r = r / f32(p.len);
#endif
#if OP_L2
    r = sqrt(r);
#endif
    y_st(s, r);
  }
}
