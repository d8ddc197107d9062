// Philox4x32-10 (Salmon et al., SC 2011) and Box–Muller normals: a library included by the
// kernels that draw noise (`#include philox`); no bindings, no entry points.
// Element e (64-bit index) uses word e % 4 of philox((e / 4 as u64, stream, 0), seed).

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

// The four words of element (lo, hi) of stream `stream` under `seed`.
fn philox_words(lo: u32, hi: u32, stream: u32, seed: vec2<u32>) -> vec4<u32> {
  return philox(vec4<u32>((lo >> 2u) | (hi << 30u), hi >> 2u, stream, 0u), seed);
}

// Standard normal of element (lo, hi): Box–Muller on word pairs (0,1) and (2,3).
fn philox_normal(lo: u32, hi: u32, stream: u32, seed: vec2<u32>) -> f32 {
  let w = philox_words(lo, hi, stream, seed);
  let lane = lo & 3u;
  let pair = select(w.xy, w.zw, lane >= 2u);
  let u1 = (f32(pair.x >> 8u) + 1.0) * 5.9604644775390625e-8;
  let u2 = f32(pair.y >> 8u) * 5.9604644775390625e-8;
  let rad = sqrt(-2.0 * log(u1));
  let th = 6.283185307179586 * u2;
  return select(rad * cos(th), rad * sin(th), (lane & 1u) == 1u);
}
