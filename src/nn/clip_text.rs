//! transformers' `CLIPTextModel`, the text encoder of Stable Diffusion (Radford et al., 2021,
//! "Learning Transferable Visual Models From Natural Language Supervision"): token and position
//! embeddings, pre-LayerNorm transformer layers with causal self-attention and a
//! `quick_gelu`/`gelu` MLP, and the final LayerNorm. `clip_skip` as diffusers'
//! `StableDiffusionPipeline` applies it: the hidden state after layer `num_hidden_layers −
//! clip_skip`, then the final LayerNorm.
//!
//! Weights as transformers saves them: `text_model.embeddings.token_embedding.weight`, …
//! (transformers ≤ 4) or the same keys without `text_model.` (transformers 5); the
//! `embeddings.position_ids` buffer older files carry is checked to be 0..n and otherwise unused.

use super::attention::sdpa;
use super::layers::{add, LayerNorm, Linear, Loader};
use super::Graph;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, ConfigFields, WeightSource, Weights};
use crate::ops;
use crate::ops::elementwise::Unary;
use crate::tensor::{DType, Tensor};
use serde_json::Value;
use std::path::Path;

/// transformers' checkpoint file name.
pub const WEIGHTS: &str = "model.safetensors";

/// Fields of `CLIPTextConfig` (and of transformers' `PretrainedConfig`) that do not change the
/// text model's hidden states: metadata, dropout (inactive at inference), initialisation,
/// generation settings and the pooled/projection heads this model does not compute.
const INERT: &[&str] = &[
    "_name_or_path",
    "architectures",
    "attention_dropout",
    "dropout",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "initializer_factor",
    "initializer_range",
    "projection_dim",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "sep_token_id",
    "decoder_start_token_id",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// Fields read into [`CLIPTextConfig`].
const READ: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
];

/// `hidden_act` of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// x·σ(1.702x) (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// Exact GELU (OpenCLIP ViT-H, SD 2.x).
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl HiddenAct {
    fn unary(self) -> Unary {
        match self {
            HiddenAct::QuickGelu => Unary::QuickGelu,
            HiddenAct::Gelu => Unary::Gelu,
            HiddenAct::GeluTanh => Unary::GeluTanh,
        }
    }
}

/// `text_encoder/config.json` (transformers' `CLIPTextConfig`; defaults as there).
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
    pub bos_token_id: Option<usize>,
    pub eos_token_id: Option<usize>,
    pub pad_token_id: Option<usize>,
    pub projection_dim: Option<usize>,
}

impl CLIPTextConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses a config object; `file` names it in errors. Unknown fields are refused by name.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = ConfigFields::new(v, file)?;
        for k in f.keys() {
            if !READ.contains(&k.as_str()) && !INERT.contains(&k.as_str()) {
                return Err(f.err(
                    k,
                    "not a CLIPTextConfig field this engine knows; refusing to guess",
                ));
            }
        }
        let mt = f.str("model_type", "clip_text_model")?;
        if mt != "clip_text_model" {
            return Err(f.err(
                "model_type",
                format!("`{mt}` is not a CLIP text model (expected clip_text_model)"),
            ));
        }
        let act = f.str("hidden_act", "quick_gelu")?;
        let hidden_act = match act.as_str() {
            "quick_gelu" => HiddenAct::QuickGelu,
            "gelu" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluTanh,
            other => {
                return Err(f.err(
                    "hidden_act",
                    format!(
                    "`{other}` is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"
                ),
                ))
            }
        };
        let big = 1..=1 << 20;
        let c = CLIPTextConfig {
            vocab_size: f.int("vocab_size", 49408, big.clone())?,
            hidden_size: f.int("hidden_size", 512, big.clone())?,
            intermediate_size: f.int("intermediate_size", 2048, big.clone())?,
            num_hidden_layers: f.int("num_hidden_layers", 12, 1..=1024)?,
            num_attention_heads: f.int("num_attention_heads", 8, 1..=4096)?,
            max_position_embeddings: f.int("max_position_embeddings", 77, 1..=1 << 16)?,
            hidden_act,
            layer_norm_eps: f.f64("layer_norm_eps", 1e-5, Domain::NON_NEGATIVE)?,
            bos_token_id: f.opt_usize("bos_token_id")?,
            eos_token_id: f.opt_usize("eos_token_id")?,
            pad_token_id: f.opt_usize("pad_token_id")?,
            projection_dim: f.opt_usize("projection_dim")?,
        };
        if c.hidden_size % c.num_attention_heads != 0 {
            return Err(f.err(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    c.num_attention_heads, c.hidden_size
                ),
            ));
        }
        Ok(c)
    }
}

/// One `CLIPEncoderLayer`: x + attn(ln1(x)), then + mlp(ln2(x)).
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP text model on the GPU.
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    pub dtype: DType,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    /// Bytes of the weight tensors on the GPU.
    pub weight_bytes: u64,
}

impl CLIPTextModel {
    /// Loads a transformers model folder (or the `text_encoder/` subfolder of a pipeline folder)
    /// holding `config.json` and `model.safetensors`.
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, "text_encoder")?;
        let config = CLIPTextConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(WEIGHTS))?;
        let prefix = if weights.contains("text_model.final_layer_norm.weight") {
            "text_model."
        } else {
            ""
        };
        let pos_ids = format!("{prefix}embeddings.position_ids");
        if weights.contains(&pos_ids) {
            let n = config.max_position_embeddings;
            let ids = weights.read_f32(&pos_ids, None)?;
            let ok =
                ids.data.len() == n && ids.data.iter().enumerate().all(|(i, &v)| v == i as f32);
            if !ok {
                return Err(Error::Load {
                    file: dir.join(WEIGHTS).display().to_string(),
                    reason: format!("tensor `{pos_ids}` is not the positions 0..{n}"),
                });
            }
        }
        let model = Self::load(gpu, config, &weights, prefix, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds the model from a parsed config and a checkpoint whose keys start with `prefix`
    /// (`"text_model."` or `""`).
    pub fn load(
        gpu: &Gpu,
        config: CLIPTextConfig,
        weights: &dyn WeightSource,
        prefix: &str,
        dtype: DType,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let c = &config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let p = |s: &str| format!("{prefix}{s}");
        let token_embedding =
            l.tensor(&p("embeddings.token_embedding.weight"), &[c.vocab_size, h])?;
        let position_embedding = l.tensor(
            &p("embeddings.position_embedding.weight"),
            &[c.max_position_embeddings, h],
        )?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let lp = |s: &str| p(&format!("encoder.layers.{i}.{s}"));
            layers.push(EncoderLayer {
                layer_norm1: l.layer_norm(&lp("layer_norm1"), h, eps)?,
                q_proj: l.linear(&lp("self_attn.q_proj"), h, h)?,
                k_proj: l.linear(&lp("self_attn.k_proj"), h, h)?,
                v_proj: l.linear(&lp("self_attn.v_proj"), h, h)?,
                out_proj: l.linear(&lp("self_attn.out_proj"), h, h)?,
                layer_norm2: l.layer_norm(&lp("layer_norm2"), h, eps)?,
                fc1: l.linear(&lp("mlp.fc1"), h, c.intermediate_size)?,
                fc2: l.linear(&lp("mlp.fc2"), c.intermediate_size, h)?,
            });
        }
        let final_layer_norm = l.layer_norm(&p("final_layer_norm"), h, eps)?;
        Ok(CLIPTextModel {
            weight_bytes: l.bytes.get(),
            config,
            dtype,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    /// Records the forward for `batch` prompts of `max_position_embeddings` tokens, returning
    /// the final LayerNorm of the hidden state after layer `num_hidden_layers − clip_skip`
    /// (`clip_skip` 0: the model's `last_hidden_state`).
    pub fn prepare(&self, gpu: &Gpu, batch: usize, clip_skip: usize) -> Result<TextForward> {
        let c = &self.config;
        if batch == 0 {
            return Err(Error::Argument {
                op: "CLIPTextModel",
                arg: "batch",
                reason: "must be at least 1".into(),
            });
        }
        if clip_skip > c.num_hidden_layers {
            return Err(Error::Argument {
                op: "CLIPTextModel",
                arg: "clip_skip",
                reason: format!(
                    "{clip_skip} is more than the model's {} layers",
                    c.num_hidden_layers
                ),
            });
        }
        let (len, h) = (c.max_position_embeddings, c.hidden_size);
        let input_ids = Tensor::zeros(gpu, "input_ids", &[batch * len], DType::F32)?;
        let positions: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let position_ids = Tensor::from_f32(gpu, "position_ids", &[len], &positions, DType::F32)?;
        let mut g = Graph::new(gpu, self.dtype);
        let tok = g.alloc("text.token_embeds", &[batch * len, h])?;
        ops::embedding::embedding_lookup(&mut g.rec, &input_ids, &self.token_embedding, &tok)?;
        let pos = g.alloc("text.position_embeds", &[len, h])?;
        ops::embedding::embedding_lookup(
            &mut g.rec,
            &position_ids,
            &self.position_embedding,
            &pos,
        )?;
        let tok = tok.reshape(&[batch, len, h])?;
        let mut x = add(&mut g, &tok, &pos, "text.embeddings")?;
        let heads = c.num_attention_heads;
        for (i, layer) in self.layers[..c.num_hidden_layers - clip_skip]
            .iter()
            .enumerate()
        {
            let n = |s: &str| format!("text.{i}.{s}");
            let y = layer.layer_norm1.forward(&mut g, &x, &n("ln1"))?;
            let q = layer.q_proj.forward(&mut g, &y, &n("q"))?;
            let k = layer.k_proj.forward(&mut g, &y, &n("k"))?;
            let v = layer.v_proj.forward(&mut g, &y, &n("v"))?;
            let a = sdpa(&mut g, &q, &k, &v, heads, true, &n("attn"))?;
            let o = layer.out_proj.forward(&mut g, &a, &n("attn_out"))?;
            x = add(&mut g, &x, &o, &n("residual1"))?;
            let y = layer.layer_norm2.forward(&mut g, &x, &n("ln2"))?;
            let f = layer.fc1.forward(&mut g, &y, &n("fc1"))?;
            ops::elementwise::unary_inplace(&mut g.rec, c.hidden_act.unary(), &f)?;
            let f = layer.fc2.forward(&mut g, &f, &n("fc2"))?;
            x = add(&mut g, &x, &f, &n("residual2"))?;
        }
        let output = self
            .final_layer_norm
            .forward(&mut g, &x, "text.hidden_state")?;
        let flops = g.flops;
        let recording = g.finish(&[&output])?;
        Ok(TextForward {
            activation_bytes: recording.activation_bytes(),
            recording,
            input_ids,
            position_ids,
            output,
            vocab_size: c.vocab_size,
            flops,
        })
    }
}

/// A recorded text-encoder forward: write the ids, submit, read or chain the output.
pub struct TextForward {
    recording: Recording,
    /// f32 [B·L] token ids (exact integers), written by [`TextForward::run`].
    pub input_ids: Tensor,
    /// f32 [L]: 0..L (constant).
    pub position_ids: Tensor,
    /// [B, L, hidden] in the model dtype (valid after a run).
    pub output: Tensor,
    vocab_size: usize,
    /// Bytes of activation buffers the recording holds.
    pub activation_bytes: u64,
    /// FLOPs of one forward (GEMMs, 2 per multiply-add).
    pub flops: u64,
}

impl TextForward {
    /// Validates and writes `ids` ([B·L], every id < vocab_size; checked before anything runs)
    /// and submits the recorded forward.
    pub fn run(&self, gpu: &Gpu, ids: &[u32]) -> Result<()> {
        let n = self.input_ids.numel();
        if ids.len() != n {
            return Err(Error::HostLength {
                tensor: "input_ids".into(),
                got: ids.len(),
                want: n,
                shape: vec![n],
            });
        }
        if let Some((i, bad)) = ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab_size)
        {
            return Err(Error::Argument {
                op: "CLIPTextModel",
                arg: "input_ids",
                reason: format!(
                    "token id {bad} at position {i} is outside the vocabulary 0..{}",
                    self.vocab_size
                ),
            });
        }
        let f: Vec<f32> = ids.iter().map(|&t| t as f32).collect();
        self.input_ids.write_f32(gpu, &f)?;
        self.recording.submit(gpu);
        Ok(())
    }

    /// Convenience: run on `ids` and download the hidden states as f32.
    pub fn forward_host(&self, gpu: &Gpu, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(gpu, ids)?;
        self.output.to_vec_f32(gpu)
    }
}
