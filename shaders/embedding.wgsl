// Sinusoidal timestep embedding (DDPM / diffusers `get_timestep_embedding`):
//   freq_k = exp(-ln(max_period) · k / (half − shift)),  arg = scale · (t · freq_k),
//   out = [sin(arg), cos(arg)], or [cos, sin] with flip_sin_to_cos; odd dim → last column 0.
// Evaluated in the same f32 order as diffusers; sin/cos after a Cody–Waite reduction by 2π so
// large timesteps keep full accuracy. One invocation per output element.

struct Params {
  n: u32,          // output elements (N · dim)
  dim: u32,        // embedding width
  half: u32,       // dim / 2
  flip: u32,       // 1: cos first (flip_sin_to_cos)
  neg_log_max_period: f32,  // −ln(max_period) rounded to f32
  shift: f32,      // downscale_freq_shift
  scale: f32,
  _p0: u32,
}
#uniform Params

#tensor 1 t read f32   // [N] timesteps (float, may be fractional)
#tensor 2 y write      // [N, dim]

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (i >= p.n) { return; }
  let row = i / p.dim;
  let j = i % p.dim;
  if (j >= 2u * p.half) { y_st(i, 0.0); return; }
  let second = j >= p.half;
  let k = select(j, j - p.half, second);
  let e = (p.neg_log_max_period * f32(k)) / (f32(p.half) - p.shift);
  let arg = p.scale * (t_ld(row) * exp(e));
  // Cody–Waite: 2π = 6.28125 + 1.9353071795864769e-3 (first part exact in f32).
  let q = round(arg * 0.15915494309189535);
  let red = (arg - q * 6.28125) - q * 1.9353071795864769e-3;
  let use_cos = second != (p.flip == 1u);
  y_st(i, select(sin(red), cos(red), use_cos));
}
