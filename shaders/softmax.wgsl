// Row softmax: y[r, :] = softmax(scale · x[r, :]): max, then the sum of shifted exponentials,
// then the normalised write; f32 statistics. With p.causal_rows ≠ 0 (a causal attention mask)
// row r uses only its first valid(r) = min(cols, r % causal_rows + causal_off + 1) columns and
// writes 0 to the rest. Three layouts:
// - default: one workgroup per row, tree reductions in workgroup memory (WG a power of two);
// - ROW_PER_THREAD: one invocation per row, three serial passes, no barriers — faster where
//   barriers are expensive and rows are short (CPU adapters such as lavapipe, attention over
//   ≤ a few thousand tokens);
// - SUBGROUP: one subgroup per row (a workgroup holds num_subgroups rows), reductions with
//   subgroupMax / subgroupAdd — no workgroup memory and no barriers (adapters with subgroups).

#uniform Params  // generated from ops::softmax::Params (src/ops/softmax.rs)

#tensor 1 x read    // [rows, cols] row-major (e.g. attention scores [B·heads·Lq, Lk])
#tensor 2 y write   // [rows, cols]

// Columns of row `row` inside the causal mask (all of them without one).
fn valid_cols(row: u32) -> u32 {
  if (p.causal_rows == 0u) { return p.cols; }
  return min(p.cols, row % p.causal_rows + p.causal_off + 1u);
}

#if SUBGROUP
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_id) sid: u32, @builtin(num_subgroups) nsg: u32,
        @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32) {
  let row = (wid.y * nwg.x + wid.x) * nsg + sid;
  if (row >= p.rows) { return; }  // uniform within the subgroup
  let base = row * p.cols;
  let nv = valid_cols(row);
  var m = -3.4028235e38;
  for (var i = sgi; i < nv; i = i + sgs) { m = max(m, p.scale * x_ld(base + i)); }
  let mx = subgroupMax(m);
  var s = 0.0;
  for (var i = sgi; i < nv; i = i + sgs) { s += exp(p.scale * x_ld(base + i) - mx); }
  let inv = 1.0 / subgroupAdd(s);
  for (var i = sgi; i < p.cols; i = i + sgs) {
    y_st(base + i, select(0.0, exp(p.scale * x_ld(base + i) - mx) * inv, i < nv));
  }
}
#else
#if ROW_PER_THREAD
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * ${WG}u + lid;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  let nv = valid_cols(row);
  var m = -3.4028235e38;
  for (var i = 0u; i < nv; i = i + 1u) { m = max(m, p.scale * x_ld(base + i)); }
  var s = 0.0;
  for (var i = 0u; i < nv; i = i + 1u) { s += exp(p.scale * x_ld(base + i) - m); }
  let inv = 1.0 / s;
  for (var i = 0u; i < nv; i = i + 1u) {
    y_st(base + i, exp(p.scale * x_ld(base + i) - m) * inv);
  }
  for (var i = nv; i < p.cols; i = i + 1u) { y_st(base + i, 0.0); }
}
#else
var<workgroup> red: array<f32, ${WG}>;

fn wg_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${WG}u / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), is_max);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  let nv = valid_cols(row);
  var m = -3.4028235e38;
  for (var i = lid; i < nv; i = i + ${WG}u) { m = max(m, p.scale * x_ld(base + i)); }
  let mx = wg_reduce(m, lid, true);
  var s = 0.0;
  for (var i = lid; i < nv; i = i + ${WG}u) { s += exp(p.scale * x_ld(base + i) - mx); }
  let inv = 1.0 / wg_reduce(s, lid, false);
  for (var i = lid; i < p.cols; i = i + ${WG}u) {
    y_st(base + i, select(0.0, exp(p.scale * x_ld(base + i) - mx) * inv, i < nv));
  }
}
#endif
#endif
