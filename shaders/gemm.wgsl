// Batched GEMM: C[z] = alpha * A[z] · op(B[z]) (+ bias), f32 accumulation.
// Register-blocked: each invocation owns a 4×4 block of C; no shared memory (on lavapipe this
// beats shared-memory tiling). With VEC4 the K loop reads A (and B) four elements at a time.
//
// TILE: the shared-memory variant below (its own 16×16 workgroup, scalar loads). ROWS = 4 | 8
// rows of C per invocation in the register-blocked kernel (M8 set when 8).
// Defines: TRANS_B (B is [N, K], i.e. C = A·Bᵀ, as for nn.Linear weights and Q·Kᵀ),
//   VEC4 (host checked K, lda, ldb, batch strides % 4 == 0, and N % 4 == 0 without TRANS_B),
//   BIAS (adds bias[n]).
// Q8 (with TRANS_B; W8A32 nn.Linear): B is int8 [N, K], four per u32 word, unpacked to f32 in
//   registers; column n of the accumulator is multiplied by wscale[n] before alpha and bias:
//   C[m, n] = alpha · wscale[n] · Σ_k A[m, k] · q[n, k] + bias[n] (see load::quant).
// Batch z (workgroup z) splits as zo = z / batch_inner, zi = z % batch_inner; each operand's
// offset is zo * s0 + zi * s1 (lets attention address heads inside [B, L, H·d] directly), plus
// a_off / c_off for A and C (a chunk of query rows inside the whole q and output).

#uniform Params  // generated from ops::gemm::Params (src/ops/gemm.rs)

#if VEC4
#tensor 1 a read vec4   // [batch.., M, lda] row-major, rows of K used
#if Q8
#tensor 2 b read vec4 i8  // [N, ldb] int8, 4 per word
#else
#tensor 2 b read vec4   // TRANS_B: [batch.., N, ldb] ; else [batch.., K, ldb] (stride-0 batch = shared weights)
#endif
#else
#tensor 1 a read        // [batch.., M, lda] row-major
#if Q8
#tensor 2 b read i8     // [N, ldb] int8, 4 per word
#else
#tensor 2 b read        // TRANS_B: [batch.., N, ldb] ; else [batch.., K, ldb]
#endif
#endif
#if Q8
#tensor 5 wscale read f32  // [N] per-output-column dequantisation scale
#endif
#tensor 3 c write       // [batch.., M, ldc] row-major
#if BIAS
#tensor 4 bias read     // [N]
#endif

// Stores a 4×4 block of C at (m0, n0): alpha · acc + bias, rows/columns past M/N skipped.
fn store(cb: u32, m0: u32, n0: u32, accs: array<vec4<f32>, 4>) {
  var add = vec4<f32>(0.0);
  let nlast = p.n - 1u;
#if BIAS
  add = vec4<f32>(bias_ld(min(n0, nlast)), bias_ld(min(n0 + 1u, nlast)),
                  bias_ld(min(n0 + 2u, nlast)), bias_ld(min(n0 + 3u, nlast)));
#endif
  var sc = vec4<f32>(1.0);
#if Q8
  sc = vec4<f32>(wscale_ld(min(n0, nlast)), wscale_ld(min(n0 + 1u, nlast)),
                 wscale_ld(min(n0 + 2u, nlast)), wscale_ld(min(n0 + 3u, nlast)));
#endif
  for (var r = 0u; r < 4u; r = r + 1u) {
    let m = m0 + r;
    if (m >= p.m) { break; }
    let v = p.alpha * (accs[r] * sc) + add;
    let crow = cb + m * p.ldc;
    for (var c = 0u; c < 4u; c = c + 1u) {
      if (n0 + c < p.n) { c_st(crow + n0 + c, v[c]); }
    }
  }
}

#if TILE
// Shared-memory tile (the GPU-style variant; a tuning candidate): a 16×16 workgroup computes a
// 64×64 block of C, 4×4 per invocation, staging A [64 m × 16 k] and B [16 k × 64 n] per chunk of
// 16 k in workgroup memory (4 elements of each per invocation). Scalar loads (no VEC4).
var<workgroup> at: array<f32, 1024>;  // [64 m][16 k]
var<workgroup> bt: array<f32, 1024>;  // [16 k][64 n]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let zo = wid.z / p.batch_inner;
  let zi = wid.z % p.batch_inner;
  let ab = p.a_off + zo * p.a_s0 + zi * p.a_s1;
  let bb = zo * p.b_s0 + zi * p.b_s1;
  let cb = p.c_off + zo * p.c_s0 + zi * p.c_s1;
  let m_base = wid.y * 64u;
  let n_base = wid.x * 64u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.k; k0 = k0 + 16u) {
    for (var j = 0u; j < 4u; j = j + 1u) {
      let e = lid * 4u + j;
      let am = m_base + e / 16u;
      let ak = k0 + e % 16u;
      var av = 0.0;
      if (am < p.m && ak < p.k) { av = a_ld(ab + am * p.lda + ak); }
      at[e] = av;
      let bk = k0 + e / 64u;
      let bn = n_base + e % 64u;
      var bv = 0.0;
      if (bk < p.k && bn < p.n) {
#if TRANS_B
        bv = b_ld(bb + bn * p.ldb + bk);
#else
        bv = b_ld(bb + bk * p.ldb + bn);
#endif
      }
      bt[e] = bv;
    }
    workgroupBarrier();
    let r0 = lid3.y * 64u;
    let c0 = lid3.x * 4u;
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      let bv = vec4<f32>(bt[kk * 64u + c0], bt[kk * 64u + c0 + 1u],
                         bt[kk * 64u + c0 + 2u], bt[kk * 64u + c0 + 3u]);
      acc0 += at[r0 + kk] * bv;
      acc1 += at[r0 + 16u + kk] * bv;
      acc2 += at[r0 + 32u + kk] * bv;
      acc3 += at[r0 + 48u + kk] * bv;
    }
    workgroupBarrier();
  }
  store(cb, m_base + lid3.y * 4u, n_base + lid3.x * 4u, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}
#else
@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n0 = gid.x * 4u;
  let m0 = gid.y * ${ROWS}u;
  if (m0 >= p.m || n0 >= p.n) { return; }
  let zo = wid.z / p.batch_inner;
  let zi = wid.z % p.batch_inner;
  let ab = p.a_off + zo * p.a_s0 + zi * p.a_s1;
  let bb = zo * p.b_s0 + zi * p.b_s1;
  let cb = p.c_off + zo * p.c_s0 + zi * p.c_s1;
  let mlast = p.m - 1u;
  let nlast = p.n - 1u;
  // Row offsets of A (rows past M are clamped; their results are never stored).
  let ar0 = ab + min(m0 + 0u, mlast) * p.lda;
  let ar1 = ab + min(m0 + 1u, mlast) * p.lda;
  let ar2 = ab + min(m0 + 2u, mlast) * p.lda;
  let ar3 = ab + min(m0 + 3u, mlast) * p.lda;
#if M8
  let ar4 = ab + min(m0 + 4u, mlast) * p.lda;
  let ar5 = ab + min(m0 + 5u, mlast) * p.lda;
  let ar6 = ab + min(m0 + 6u, mlast) * p.lda;
  let ar7 = ab + min(m0 + 7u, mlast) * p.lda;
#endif
#if TRANS_B
  let br0 = bb + min(n0 + 0u, nlast) * p.ldb;
  let br1 = bb + min(n0 + 1u, nlast) * p.ldb;
  let br2 = bb + min(n0 + 2u, nlast) * p.ldb;
  let br3 = bb + min(n0 + 3u, nlast) * p.ldb;
#else
  let bc0 = min(n0 + 0u, nlast);
  let bc1 = min(n0 + 1u, nlast);
  let bc2 = min(n0 + 2u, nlast);
  let bc3 = min(n0 + 3u, nlast);
#endif
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
#if M8
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
#endif

#if VEC4
  for (var k = 0u; k < p.k; k = k + 4u) {
    let a0 = a_ld4((ar0 + k) >> 2u);
    let a1 = a_ld4((ar1 + k) >> 2u);
    let a2 = a_ld4((ar2 + k) >> 2u);
    let a3 = a_ld4((ar3 + k) >> 2u);
#if M8
    let a4 = a_ld4((ar4 + k) >> 2u);
    let a5 = a_ld4((ar5 + k) >> 2u);
    let a6 = a_ld4((ar6 + k) >> 2u);
    let a7 = a_ld4((ar7 + k) >> 2u);
#endif
#if TRANS_B
    let b0 = b_ld4((br0 + k) >> 2u);
    let b1 = b_ld4((br1 + k) >> 2u);
    let b2 = b_ld4((br2 + k) >> 2u);
    let b3 = b_ld4((br3 + k) >> 2u);
    acc0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
    acc1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
    acc2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
    acc3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
#if M8
    acc4 += vec4<f32>(dot(a4, b0), dot(a4, b1), dot(a4, b2), dot(a4, b3));
    acc5 += vec4<f32>(dot(a5, b0), dot(a5, b1), dot(a5, b2), dot(a5, b3));
    acc6 += vec4<f32>(dot(a6, b0), dot(a6, b1), dot(a6, b2), dot(a6, b3));
    acc7 += vec4<f32>(dot(a7, b0), dot(a7, b1), dot(a7, b2), dot(a7, b3));
#endif
#else
    let row = bb + k * p.ldb + n0;
    let b0 = b_ld4(row >> 2u);
    let b1 = b_ld4((row + p.ldb) >> 2u);
    let b2 = b_ld4((row + 2u * p.ldb) >> 2u);
    let b3 = b_ld4((row + 3u * p.ldb) >> 2u);
    acc0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
    acc1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
    acc2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
    acc3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
#if M8
    acc4 += a4.x * b0 + a4.y * b1 + a4.z * b2 + a4.w * b3;
    acc5 += a5.x * b0 + a5.y * b1 + a5.z * b2 + a5.w * b3;
    acc6 += a6.x * b0 + a6.y * b1 + a6.z * b2 + a6.w * b3;
    acc7 += a7.x * b0 + a7.y * b1 + a7.z * b2 + a7.w * b3;
#endif
#endif
  }
#else
  for (var k = 0u; k < p.k; k = k + 1u) {
#if TRANS_B
    let bv = vec4<f32>(b_ld(br0 + k), b_ld(br1 + k), b_ld(br2 + k), b_ld(br3 + k));
#else
    let row = bb + k * p.ldb;
    let bv = vec4<f32>(b_ld(row + bc0), b_ld(row + bc1), b_ld(row + bc2), b_ld(row + bc3));
#endif
    acc0 += a_ld(ar0 + k) * bv;
    acc1 += a_ld(ar1 + k) * bv;
    acc2 += a_ld(ar2 + k) * bv;
    acc3 += a_ld(ar3 + k) * bv;
#if M8
    acc4 += a_ld(ar4 + k) * bv;
    acc5 += a_ld(ar5 + k) * bv;
    acc6 += a_ld(ar6 + k) * bv;
    acc7 += a_ld(ar7 + k) * bv;
#endif
  }
#endif

  store(cb, m0, n0, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
#if M8
  store(cb, m0 + 4u, n0, array<vec4<f32>, 4>(acc4, acc5, acc6, acc7));
#endif
}
#endif
