// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011). Element e (64-bit global index = offset + position) takes word e % 4 of
// philox(counter = (e / 4 as 64-bit, stream, 0), key = seed), so every value is a pure function
// of (seed, stream, e): identical whatever the dispatch shape or chunking.
//
// Defines: DIST_NORMAL (Box–Muller on word pairs (0,1), (2,3): u1 ∈ (0,1], u2 ∈ [0,1),
//   r = sqrt(−2 ln u1), even words r·cos(2πu2), odd r·sin(2πu2)),
//   DIST_UNIFORM ([0, 1) from the top 24 bits), DIST_BITS (the raw word, bit-cast; f32 only).

#uniform Params  // generated from ops::rng::Params (src/ops/rng.rs)

#tensor 1 y write   // [n] output chunk

#include philox

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let lo = p.base_lo + i;
  let hi = p.base_hi + select(0u, 1u, lo < i);
  let seed = vec2<u32>(p.seed_lo, p.seed_hi);
  let w = philox_words(lo, hi, p.stream, seed);
  let lane = lo & 3u;
#if DIST_BITS
  y_st(i, bitcast<f32>(w[lane]));
#endif
#if DIST_UNIFORM
  y_st(i, f32(w[lane] >> 8u) * 5.9604644775390625e-8);
#endif
#if DIST_NORMAL
  y_st(i, philox_normal(lo, hi, p.stream, seed));
#endif
}
