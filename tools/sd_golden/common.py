"""Shared by every part of tools/gen_sd_golden.py: paths, the real CLIP BPE vocabulary, and the
two random-weight tiny pipelines (one SD-1.x-shaped, one SD-2.x-shaped)."""
import gzip
import json
import os

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "sd")
PIPES = ["sd1-tiny", "sd2-tiny"]


def pipe_dir(name):
    return os.path.join(ROOT, name)


def bytes_to_unicode():
    """GPT-2/CLIP's byte -> printable unicode table (as open_clip and transformers build it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab():
    """(vocab dict, merges list) from open_clip's bpe_simple_vocab_16e6.txt.gz, in the order
    open_clip's SimpleTokenizer builds them (the same ids as openai/clip-vit-large-patch14)."""
    import open_clip.tokenizer as oct

    path = oct.default_bpe()
    merges = gzip.open(path).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    return {v: i for i, v in enumerate(vocab)}, merges


def write_tokenizer(out_dir, pad_token):
    """A transformers CLIPTokenizer folder (vocab.json, merges.txt, configs) with `pad_token`."""
    from transformers import CLIPTokenizer

    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = clip_vocab()
    vf, mf = os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt")
    with open(vf, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(mf, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    tok = CLIPTokenizer(vf, mf, pad_token=pad_token, model_max_length=77)
    return tok


def drop_tokenizer_json(out_dir):
    """transformers 5 also writes tokenizer.json (3.6 MB); SD pipeline folders as published carry
    vocab.json + merges.txt, which is what the engine must read, so keep the folder to those."""
    tj = os.path.join(out_dir, "tokenizer.json")
    if os.path.exists(tj):
        os.remove(tj)


def round_f16(module, seed):
    """Random weights that f16 stores exactly: perturb norms (so scales/biases are not 1/0),
    then round every parameter to f16 and back."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return module


def configs(name):
    """Component constructors' keyword arguments of a tiny pipeline."""
    sd2 = name == "sd2-tiny"
    unet = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    if sd2:
        # SD 2.x: linear proj_in/out, per-block head counts, upcast attention.
        unet.update(use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True)
    else:
        # SD 1.x: attention_head_dim is diffusers' misnamed head *count* (8 in SD 1.5).
        unet.update(attention_head_dim=8)
    vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=32, scaling_factor=0.18215,
    )
    text = dict(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, layer_norm_eps=1e-5,
        hidden_act="gelu" if sd2 else "quick_gelu", bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1,
    )
    sched = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        set_alpha_to_one=False, steps_offset=1,
    )
    if sd2:
        sched.update(prediction_type="v_prediction", clip_sample=False)  # as stabilityai/stable-diffusion-2-1
    else:
        sched.update(skip_prk_steps=True)  # PNDMScheduler, as runwayml/stable-diffusion-v1-5
    return dict(unet=unet, vae=vae, text=text, sched=sched, pad="!" if sd2 else "<|endoftext|>",
                scheduler="DDIMScheduler" if sd2 else "PNDMScheduler")


def load_pipeline(name):
    """The saved tiny pipeline, in float32 (its f16-stored weights are exact in f32)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(pipe_dir(name), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
