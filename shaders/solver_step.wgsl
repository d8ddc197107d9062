// The fused solver update: dst = c_self·dst + Σ_{i<NIN} c_i·in_i + c_z·z, optionally clamped to
// ±clamp. z is a standard normal drawn in-kernel (Philox, stream per update instruction), so
// no noise tensor exists and nothing is read back. One invocation per element.
// Defines: NIN = 0..4 inputs (IN0..IN3 set for the present ones), SELF (read dst), NOISE,
//   CLAMP, DT_DST / DT_IN0..3 = f32 | f16 (solver state is f32; model buffers may be f16).

#uniform Params  // generated from solvers::executor::Params (src/solvers/executor.rs)

#tensor 1 dst rw ${DT_DST}     // [N, C, H, W] written (and read with SELF)
#if IN0
#tensor 2 in0 read ${DT_IN0}  // [N, C, H, W]
#endif
#if IN1
#tensor 3 in1 read ${DT_IN1}  // [N, C, H, W]
#endif
#if IN2
#tensor 4 in2 read ${DT_IN2}  // [N, C, H, W]
#endif
#if IN3
#tensor 5 in3 read ${DT_IN3}  // [N, C, H, W]
#endif

#include philox

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  var v = 0.0;
#if SELF
  v = p.c_self * dst_ld(i);
#endif
#if IN0
  v += p.c.x * in0_ld(i);
#endif
#if IN1
  v += p.c.y * in1_ld(i);
#endif
#if IN2
  v += p.c.z * in2_ld(i);
#endif
#if IN3
  v += p.c.w * in3_ld(i);
#endif
#if NOISE
  v += p.c_z * philox_normal(i, 0u, p.stream, vec2<u32>(p.seed_lo, p.seed_hi));
#endif
#if CLAMP
  v = clamp(v, -p.clamp_to, p.clamp_to);
#endif
  dst_st(i, v);
}
