// Element-wise kernels: unary activations, broadcasting binary ops, in-place axpby.
// One invocation per element; 1-D index spread over a 2-D grid (x * 65535 limit).
// All arithmetic in f32; storage dtype per the kernel key.
//
// Defines: UNARY | BINARY | AXPBY | MODULATE | SAMPLE_DIV | GEGLU (selects the entry and its
//   bindings), unary op: OP_SILU | OP_GELU (erf) | OP_GELU_TANH | OP_QUICK_GELU
//   (x·σ(1.702x)) | OP_CLAMP (clamp(lo, hi)) | OP_AFFINE
//   (alpha*x + beta), with INPLACE (x is overwritten); binary op: OP_ADD | OP_MUL.
//   (tests/shaders.rs checks that this list names every define the ops set.)
// SAMPLE_DIV: x[i] ← x[i] / t[(base + i) / inner] in place, t f32 [N] (per-sample divide, e.g.
//   UNet2DModel's Fourier output ÷ noise level).
// MODULATE: out = a · (1 + t[n, c]) + t[n, C + c] for a [N, C, inner] and t [N, 2C] (diffusers'
//   ResnetBlock2D with time_embedding_norm="scale_shift"); C = blen.
// GEGLU: y[r, f] = x[r, f] · gelu(x[r, F + f]) for x [rows, 2F], y [rows, F]; F = inner.

#uniform Params  // generated from ops::elementwise::Params (src/ops/elementwise.rs)

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * ${WG}u + lid;
}

fn erf_approx(x: f32) -> f32 {
  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
  let s = sign(x);
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return s * (1.0 - poly * exp(-a * a));
}

#if UNARY
#if INPLACE
#tensor 1 x rw        // [n] input, overwritten with the result (chunk of any shape)
#else
#tensor 1 x read      // [n] input (chunk of any shape)
#tensor 2 y write     // [n] output, same shape as x
#endif

fn apply(v: f32) -> f32 {
#if OP_SILU
  return v / (1.0 + exp(-v));
#endif
#if OP_GELU
  return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752));
#endif
#if OP_QUICK_GELU
  return v / (1.0 + exp(-1.702 * v));
#endif
#if OP_GELU_TANH
  let u = 0.79788456080286536 * (v + 0.044715 * v * v * v);
  return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
#endif
#if OP_CLAMP
  return clamp(v, p.lo, p.hi);
#endif
#if OP_AFFINE
  return p.alpha * v + p.beta;
#endif
}

@compute @workgroup_size(${WG})
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
#if INPLACE
  x_st(i, apply(x_ld(i)));
#else
  y_st(i, apply(x_ld(i)));
#endif
}
#endif

#if BINARY
#tensor 1 a read      // [n] left operand (chunk)
#tensor 2 b read      // [blen] right operand, broadcast: b[((base+i)/inner) % blen]
#tensor 3 out write   // [n] result, shape of a

@compute @workgroup_size(${WG})
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let bi = ((p.base + i) / p.inner) % p.blen;
#if OP_ADD
  out_st(i, a_ld(i) + b_ld(bi));
#endif
#if OP_MUL
  out_st(i, a_ld(i) * b_ld(bi));
#endif
}
#endif

#if AXPBY
#tensor 1 x read      // [n] (chunk)
#tensor 2 y rw        // [n] (chunk), y <- alpha * x + beta * y

@compute @workgroup_size(${WG})
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
  y_st(i, p.alpha * x_ld(i) + p.beta * y_ld(i));
}
#endif

#if MODULATE
#tensor 1 a read      // [N, C, inner] (chunk)
#tensor 2 t read      // [N, 2C]: scale then shift per sample
#tensor 3 out write   // [N, C, inner] (chunk)

@compute @workgroup_size(${WG})
fn modulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let nc = (p.base + i) / p.inner;   // n * C + c
  let n = nc / p.blen;
  let c = nc % p.blen;
  let row = n * 2u * p.blen;
  out_st(i, a_ld(i) * (1.0 + t_ld(row + c)) + t_ld(row + p.blen + c));
}
#endif

#if SAMPLE_DIV
#tensor 1 x rw        // [N, ...] (chunk), divided in place
#tensor 2 t read f32  // [N] per-sample divisors

@compute @workgroup_size(${WG})
fn sample_div(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
  x_st(i, x_ld(i) / t_ld((p.base + i) / p.inner));
}
#endif

#if GEGLU
#tensor 1 x read      // [rows, 2F]: hidden | gate
#tensor 2 y write     // [rows, F]

@compute @workgroup_size(${WG})
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let r = i / p.inner;
  let f = i % p.inner;
  let xo = r * 2u * p.inner + f;
  let g = x_ld(xo + p.inner);
  y_st(i, x_ld(xo) * 0.5 * g * (1.0 + erf_approx(g * 0.70710678118654752)));
}
#endif
