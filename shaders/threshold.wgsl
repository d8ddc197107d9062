// Dynamic thresholding of a predicted x̂0 (Saharia et al., "Photorealistic Text-to-Image
// Diffusion Models with Deep Language Understanding" (Imagen), NeurIPS 2022; used by the MR
// Sampler's data solver): per sample, s = clamp(quantile(|v|, ratio), 1, max) with
// v = buf (+ shift), then v ← clamp(v, −s, s)/s and buf = v (− shift).
// The quantile is exact and interpolated like torch.quantile (linear, position ratio·(D − 1)):
// the order statistics are found by bisection on the IEEE bit patterns of |v| (monotonic for
// non-negative floats), 31 counting passes of the workgroup. One workgroup per sample.

#uniform Params  // generated from solvers::executor::ThresholdParams (src/solvers/executor.rs)

#tensor 1 buf rw f32      // [N, D] x̂0 (or x̂0 − shift), updated in place
#ifdef SHIFT
#tensor 2 shift read f32  // [N, D] added before and subtracted after (the MR condition μ)
#endif

var<workgroup> count: atomic<u32>;
var<workgroup> next_bits: atomic<u32>;
var<workgroup> shared_u: u32;

fn value(i: u32) -> f32 {
#ifdef SHIFT
  return buf_ld(i) + shift_ld(i);
#else
  return buf_ld(i);
#endif
}

// Number of |v| with bit pattern ≤ b in sample `base` (all invocations get the same result).
fn count_le(base: u32, lid: u32, b: u32) -> u32 {
  if (lid == 0u) { atomicStore(&count, 0u); }
  workgroupBarrier();
  var c = 0u;
  for (var j = lid; j < p.per_sample; j = j + ${WG}u) {
    if (bitcast<u32>(abs(value(base + j))) <= b) { c = c + 1u; }
  }
  atomicAdd(&count, c);
  workgroupBarrier();
  if (lid == 0u) { shared_u = atomicLoad(&count); }
  return workgroupUniformLoad(&shared_u);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * p.per_sample;
  // Smallest bit pattern b with count(≤ b) ≥ rank + 1: the rank-th order statistic.
  var lo = 0u;
  var hi = 0x7f800000u;
  for (var it = 0u; it < 31u; it = it + 1u) {
    let mid = lo + (hi - lo) / 2u;
    if (count_le(base, lid, mid) >= p.rank + 1u) { hi = mid; } else { lo = mid + 1u; }
  }
  let a_bits = hi;
  // The next order statistic: the same value if it repeats, else the smallest larger |v|.
  let c = count_le(base, lid, a_bits);
  if (lid == 0u) { atomicStore(&next_bits, 0x7f800000u); }
  workgroupBarrier();
  var m = 0x7f800000u;
  for (var j = lid; j < p.per_sample; j = j + ${WG}u) {
    let bits = bitcast<u32>(abs(value(base + j)));
    if (bits > a_bits) { m = min(m, bits); }
  }
  atomicMin(&next_bits, m);
  workgroupBarrier();
  if (lid == 0u) { shared_u = atomicLoad(&next_bits); }
  let larger = workgroupUniformLoad(&shared_u);
  var b_bits = a_bits;
  if (c < p.rank + 2u && p.rank + 1u < p.per_sample) { b_bits = larger; }
  let a = bitcast<f32>(a_bits);
  let b = bitcast<f32>(b_bits);
  let s = clamp(a + p.frac * (b - a), 1.0, p.max_value);
  workgroupBarrier();
  for (var j = lid; j < p.per_sample; j = j + ${WG}u) {
    let v = clamp(value(base + j), -s, s) / s;
#ifdef SHIFT
    buf_st(base + j, v - shift_ld(base + j));
#else
    buf_st(base + j, v);
#endif
  }
}
