// Data-dependent solver coefficients, all on the GPU: per-(sample, channel) scalar registers
// live in one f32 buffer `regs` [R, N, C] (register k at k·N·C; a per-sample value is stored
// in each of its C entries). Three kernels, one define each:
//   K_DOT    regs[dst][g] = Σ a·b over group g (per (n, c): H×W elements; per n: C×H×W,
//            written to the sample's C entries). One workgroup per group; each invocation
//            keeps a Neumaier-compensated sum of a strided slice, then a pairwise tree in
//            workgroup memory.
//   K_SCALAR regs[dst][j] = an RPN program over registers and constants, one invocation per
//            (n, c) entry j (opcodes below; a stack of 8).
//   K_UPDATE dst = c_self·r_self·dst + Σ cᵢ·rᵢ·inᵢ, r = the register entry of the element's
//            (n, c) (or 1 for register index NONE). One invocation per element.
// Defines: K_DOT (DT_A, DT_B) | K_SCALAR | K_UPDATE (DT_DST, NIN, IN0..IN3, DT_IN0..3, SELF).

#uniform Params  // generated from ops::coef::{DotParams, ScalarParams, UpdateParams}

#if K_DOT
#tensor 1 a read ${DT_A}     // [N, C, H, W]
#tensor 2 b read ${DT_B}     // [N, C, H, W]
#tensor 3 regs rw f32        // [R, N, C] scalar registers

var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= p.groups) { return; }
  let base = g * p.len;
  var s = 0.0;
  var comp = 0.0;
  for (var i = lid; i < p.len; i = i + ${WG}u) {
    let v = a_ld(base + i) * b_ld(base + i);
    let t = s + v;
    if (abs(s) >= abs(v)) { comp += (s - t) + v; } else { comp += (v - t) + s; }
    s = t;
  }
  red[lid] = s + comp;
  workgroupBarrier();
  for (var st = ${WG}u / 2u; st > 0u; st = st >> 1u) {
    if (lid < st) { red[lid] = red[lid] + red[lid + st]; }
    workgroupBarrier();
  }
  if (lid < p.reps) {
    regs_st(p.dst + g * p.reps + lid, red[0]);
  }
}
#endif

#if K_SCALAR
#tensor 1 regs rw f32        // [R, N, C] scalar registers

// Opcodes (low 8 bits; the operand in the high bits): 0 push register, 1 push constant,
// 2 add, 3 sub, 4 mul, 5 div, 6 min, 7 max, 8 abs, 9 neg, 10 sigmoid, 11 sqrt.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let j = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (j >= p.m) { return; }
  var stack: array<f32, 8>;
  var sp = 0u;
  for (var k = 0u; k < p.len; k = k + 1u) {
    let word = p.code[k / 4u][k % 4u];
    let op = word & 255u;
    let arg = word >> 8u;
    if (op == 0u) {
      stack[sp] = regs_ld(arg * p.m + j);
      sp += 1u;
    } else if (op == 1u) {
      stack[sp] = p.consts[arg / 4u][arg % 4u];
      sp += 1u;
    } else if (op >= 8u) {
      let x = stack[sp - 1u];
      var y = x;
      if (op == 8u) { y = abs(x); }
      if (op == 9u) { y = -x; }
      if (op == 10u) { y = 1.0 / (1.0 + exp(-x)); }
      if (op == 11u) { y = sqrt(x); }
      stack[sp - 1u] = y;
    } else {
      let x = stack[sp - 2u];
      let y = stack[sp - 1u];
      var r = 0.0;
      if (op == 2u) { r = x + y; }
      if (op == 3u) { r = x - y; }
      if (op == 4u) { r = x * y; }
      if (op == 5u) { r = x / y; }
      if (op == 6u) { r = min(x, y); }
      if (op == 7u) { r = max(x, y); }
      stack[sp - 2u] = r;
      sp -= 1u;
    }
  }
  regs_st(p.dst + j, stack[0]);
}
#endif

#if K_UPDATE
#tensor 1 dst rw ${DT_DST}     // [N, C, H, W] written (and read with SELF)
#tensor 2 regs read f32        // [R, N, C] scalar registers
#if IN0
#tensor 3 in0 read ${DT_IN0}  // [N, C, H, W]
#endif
#if IN1
#tensor 4 in1 read ${DT_IN1}  // [N, C, H, W]
#endif
#if IN2
#tensor 5 in2 read ${DT_IN2}  // [N, C, H, W]
#endif
#if IN3
#tensor 6 in3 read ${DT_IN3}  // [N, C, H, W]
#endif

const NONE: u32 = 0xffffffffu;

fn coef(c: f32, reg: u32, nc: u32) -> f32 {
  if (reg == NONE) { return c; }
  return c * regs_ld(reg + nc);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let nc = i / p.hw;
  var v = 0.0;
#if SELF
  v = coef(p.c_self, p.reg_self, nc) * dst_ld(i);
#endif
#if IN0
  v += coef(p.c.x, p.reg.x, nc) * in0_ld(i);
#endif
#if IN1
  v += coef(p.c.y, p.reg.y, nc) * in1_ld(i);
#endif
#if IN2
  v += coef(p.c.z, p.reg.z, nc) * in2_ld(i);
#endif
#if IN3
  v += coef(p.c.w, p.reg.w, nc) * in3_ld(i);
#endif
  dst_st(i, v);
}
#endif
