// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011). Element e (64-bit global index = offset + position) takes word e % 4 of
// philox(counter = (e / 4 as 64-bit, stream, 0), key = seed), so every value is a pure function
// of (seed, stream, e): identical whatever the dispatch shape or chunking.
//
// Defines: DIST_NORMAL (Box–Muller on word pairs (0,1), (2,3): u1 ∈ (0,1], u2 ∈ [0,1),
//   r = sqrt(−2 ln u1), even words r·cos(2πu2), odd r·sin(2πu2)),
//   DIST_UNIFORM ([0, 1) from the top 24 bits), DIST_BITS (the raw word, bit-cast; f32 only).

struct Params {
  n: u32,        // elements in this dispatch
  base_lo: u32,  // global index of the dispatch's first element (low word)
  base_hi: u32,  //   (high word)
  stream: u32,   // counter word 2: independent streams under one seed
  seed_lo: u32,
  seed_hi: u32,
  _p0: u32,
  _p1: u32,
}
#uniform Params

#tensor 1 y write   // [n] output chunk

// 32×32 → 64-bit product as (hi, lo) from 16-bit halves (WGSL has no mulhi).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let hl = ah * bl;
  let lh = al * bh;
  let hh = ah * bh;
  let cross = (ll >> 16u) + (hl & 0xffffu) + lh;
  let hi = hh + (hl >> 16u) + (cross >> 16u);
  let lo = (cross << 16u) | (ll & 0xffffu);
  return vec2<u32>(hi, lo);
}

fn philox(c_in: vec4<u32>, k_in: vec2<u32>) -> vec4<u32> {
  var c = c_in;
  var k = k_in;
  for (var r = 0u; r < 10u; r = r + 1u) {
    let p0 = mulhilo(0xD2511F53u, c.x);
    let p1 = mulhilo(0xCD9E8D57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let lo = p.base_lo + i;
  let hi = p.base_hi + select(0u, 1u, lo < i);
  let ctr = vec4<u32>((lo >> 2u) | (hi << 30u), hi >> 2u, p.stream, 0u);
  let w = philox(ctr, vec2<u32>(p.seed_lo, p.seed_hi));
  let lane = lo & 3u;
#if DIST_BITS
  y_st(i, bitcast<f32>(w[lane]));
#endif
#if DIST_UNIFORM
  y_st(i, f32(w[lane] >> 8u) * 5.9604644775390625e-8);
#endif
#if DIST_NORMAL
  let pair = select(w.xy, w.zw, lane >= 2u);
  let u1 = (f32(pair.x >> 8u) + 1.0) * 5.9604644775390625e-8;
  let u2 = f32(pair.y >> 8u) * 5.9604644775390625e-8;
  let rad = sqrt(-2.0 * log(u1));
  let th = 6.283185307179586 * u2;
  y_st(i, select(rad * cos(th), rad * sin(th), (lane & 1u) == 1u));
#endif
}
