//! The tensors of a converted DA-CLIP folder (tools/convert_daclip.py), by name and shape, as the
//! official constructors lay them out (grrrute/mr-sampler, `universal-image-restoration/`):
//! `ConditionalUNet` (`config/daclip-sde/models/modules/DenoisingUNet_arch.py` with
//! `module_util.py` and `attention.py`) and the two visual towers of `DaCLIP`
//! (`open_clip/daclip_model.py`: `visual` = open_clip's `VisionTransformer`, `visual_control` =
//! its copy whose `transformer` is a `ControlTransformer` with one zero `Linear` per block).
//! Used to check a folder's safetensors headers before the GPU starts; checked against the
//! official state dicts (tests/golden/daclip/manifests.json).

/// Name → shape, in the official `state_dict()` order.
pub type Manifest = Vec<(String, Vec<usize>)>;

/// The `ConditionalUNet` constructor arguments that set tensor shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetDims {
    pub in_nc: usize,
    pub out_nc: usize,
    pub nf: usize,
    pub ch_mult: Vec<usize>,
    /// `None`: the official −1 (no context path).
    pub context_dim: Option<usize>,
    pub use_degra_context: bool,
    pub use_image_context: bool,
}

/// The DaCLIP vision tower dimensions that set tensor shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionDims {
    pub width: usize,
    pub layers: usize,
    pub patch_size: usize,
    pub image_size: usize,
    pub mlp_width: usize,
    pub embed_dim: usize,
}

/// `num_head_channels` of the official network (LinearAttention: 4 heads of 32).
const HEAD: usize = 32;
/// The first level with a `SpatialTransformer` when the image context is used.
const FIRST_SPATIAL: usize = 3;

struct M(Manifest);

impl M {
    fn t(&mut self, name: String, shape: &[usize]) {
        self.0.push((name, shape.to_vec()));
    }
    fn linear(&mut self, p: &str, out: usize, inp: usize, bias: bool) {
        self.t(format!("{p}.weight"), &[out, inp]);
        if bias {
            self.t(format!("{p}.bias"), &[out]);
        }
    }
    fn conv(&mut self, p: &str, out: usize, inp: usize, k: usize, bias: bool) {
        self.t(format!("{p}.weight"), &[out, inp, k, k]);
        if bias {
            self.t(format!("{p}.bias"), &[out]);
        }
    }
    fn norm(&mut self, p: &str, dim: usize) {
        self.t(format!("{p}.weight"), &[dim]);
        self.t(format!("{p}.bias"), &[dim]);
    }

    /// module_util `ResBlock` (default_conv: 3×3 without bias; 1×1 `res_conv` when widths differ).
    fn resblock(&mut self, p: &str, din: usize, dout: usize, time_dim: usize) {
        self.linear(&format!("{p}.mlp.1"), 2 * dout, time_dim, true);
        self.conv(&format!("{p}.block1.proj"), dout, din, 3, false);
        self.conv(&format!("{p}.block2.proj"), dout, dout, 3, false);
        if din != dout {
            self.conv(&format!("{p}.res_conv"), dout, din, 1, false);
        }
    }

    /// `Residual(PreNorm(dim, LinearAttention(dim) | SpatialTransformer(dim, dim/32, 32, cd)))`.
    fn attention(&mut self, p: &str, dim: usize, spatial_context: Option<usize>) {
        let f = format!("{p}.fn.fn");
        match spatial_context {
            None => {
                let hidden = 4 * HEAD;
                self.conv(&format!("{f}.to_qkv"), 3 * hidden, dim, 1, false);
                self.conv(&format!("{f}.to_out.0"), dim, hidden, 1, true);
                self.t(format!("{f}.to_out.1.g"), &[1, dim, 1, 1]);
            }
            Some(cd) => {
                let inner = (dim / HEAD) * HEAD;
                self.norm(&format!("{f}.norm"), dim);
                self.conv(&format!("{f}.proj_in"), inner, dim, 1, true);
                let b = format!("{f}.transformer_blocks.0");
                for (a, kv) in [("attn1", inner), ("attn2", cd)] {
                    self.linear(&format!("{b}.{a}.to_q"), inner, inner, false);
                    self.linear(&format!("{b}.{a}.to_k"), inner, kv, false);
                    self.linear(&format!("{b}.{a}.to_v"), inner, kv, false);
                    self.linear(&format!("{b}.{a}.to_out.0"), inner, inner, true);
                    if a == "attn1" {
                        // FeedForward(glu=True): GEGLU proj to 2·4·inner, then Linear back.
                        self.linear(&format!("{b}.ff.net.0.proj"), 8 * inner, inner, true);
                        self.linear(&format!("{b}.ff.net.2"), inner, 4 * inner, true);
                    }
                }
                for n in ["norm1", "norm2", "norm3"] {
                    self.norm(&format!("{b}.{n}"), inner);
                }
                self.conv(&format!("{f}.proj_out"), dim, inner, 1, true);
            }
        }
        self.t(format!("{p}.fn.norm.g"), &[1, dim, 1, 1]);
    }
}

/// The official `ConditionalUNet` state dict of `d` (names and shapes).
pub fn conditional_unet(d: &UNetDims) -> Manifest {
    let mut m = M(Vec::new());
    let (nf, td) = (d.nf, 4 * d.nf);
    let depth = d.ch_mult.len();
    let cd = d.context_dim;
    let image = if d.use_image_context { cd } else { None };
    m.conv("init_conv", nf, 2 * d.in_nc, 7, false);
    m.linear("time_mlp.1", td, nf, true);
    m.linear("time_mlp.3", td, td, true);
    if let (Some(cd), true) = (cd, d.use_degra_context) {
        m.t("prompt".into(), &[1, td]);
        m.linear("text_mlp.0", td, cd, true);
        m.linear("text_mlp.2", td, td, true);
        m.linear("prompt_mlp", td, td, true);
    }
    let mult = |j: usize| if j == 0 { 1 } else { d.ch_mult[j - 1] };
    let dims = |i: usize| (nf * mult(i), nf * mult(i + 1));
    for i in 0..depth {
        let (din, dout) = dims(i);
        let p = format!("downs.{i}");
        m.resblock(&format!("{p}.0"), din, din, td);
        m.resblock(&format!("{p}.1"), din, din, td);
        m.attention(&format!("{p}.2"), din, image.filter(|_| i >= FIRST_SPATIAL));
        m.conv(
            &format!("{p}.3"),
            dout,
            din,
            if i + 1 < depth { 4 } else { 3 },
            i + 1 < depth,
        );
    }
    // `ups.insert(0, …)`: ups.j is level depth − 1 − j.
    for j in 0..depth {
        let i = depth - 1 - j;
        let (din, dout) = dims(i);
        let p = format!("ups.{j}");
        m.resblock(&format!("{p}.0"), dout + din, dout, td);
        m.resblock(&format!("{p}.1"), dout + din, dout, td);
        m.attention(
            &format!("{p}.2"),
            dout,
            image.filter(|_| i >= FIRST_SPATIAL),
        );
        if i == 0 {
            m.conv(&format!("{p}.3"), din, dout, 3, false);
        } else {
            m.conv(&format!("{p}.3.1"), din, dout, 3, true);
        }
    }
    let mid = nf * d.ch_mult[depth - 1];
    m.resblock("mid_block1", mid, mid, td);
    m.attention("mid_attn", mid, image);
    m.resblock("mid_block2", mid, mid, td);
    m.resblock("final_res_block", 2 * nf, nf, td);
    m.conv("final_conv", d.out_nc, nf, 3, true);
    m.0
}

/// `visual.*` and `visual_control.*` of the official DaCLIP state dict of `v`.
pub fn daclip_visual(v: &VisionDims) -> Manifest {
    let mut m = M(Vec::new());
    let w = v.width;
    let grid = v.image_size / v.patch_size;
    for (tower, blocks) in [
        ("visual", "visual.transformer.resblocks"),
        (
            "visual_control",
            "visual_control.transformer.transformer.resblocks",
        ),
    ] {
        m.t(format!("{tower}.class_embedding"), &[w]);
        m.t(
            format!("{tower}.positional_embedding"),
            &[grid * grid + 1, w],
        );
        m.t(format!("{tower}.proj"), &[w, v.embed_dim]);
        m.conv(&format!("{tower}.conv1"), w, 3, v.patch_size, false);
        m.norm(&format!("{tower}.ln_pre"), w);
        for l in 0..v.layers {
            let b = format!("{blocks}.{l}");
            m.norm(&format!("{b}.ln_1"), w);
            m.t(format!("{b}.attn.in_proj_weight"), &[3 * w, w]);
            m.t(format!("{b}.attn.in_proj_bias"), &[3 * w]);
            m.linear(&format!("{b}.attn.out_proj"), w, w, true);
            m.norm(&format!("{b}.ln_2"), w);
            m.linear(&format!("{b}.mlp.c_fc"), v.mlp_width, w, true);
            m.linear(&format!("{b}.mlp.c_proj"), w, v.mlp_width, true);
        }
        if tower == "visual_control" {
            for l in 0..v.layers {
                m.linear(&format!("{tower}.transformer.zero_modules.{l}"), w, w, true);
            }
        }
        m.norm(&format!("{tower}.ln_post"), w);
    }
    m.0
}
