"""Writes the seed corpus of the fuzz tests (tests/fuzz/<target>/seed-*): small valid inputs of
every kind each reader accepts, so that mutations start from files that get past the first
checks. Crash inputs found later are added beside them by hand (named crash-*), never by this
script. Needs numpy and safetensors; run from the repository root:
    python tools/gen_fuzz_corpus.py
"""
import gzip
import json
import os
import struct
import zlib

import numpy as np
from safetensors.numpy import save

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FUZZ = os.path.join(ROOT, "tests", "fuzz")


def put(target, name, data):
    d = os.path.join(FUZZ, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def safetensors_seeds():
    rng = np.random.default_rng(0)
    put("safetensors", "f32.safetensors", save({
        "conv_in.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "conv_in.bias": rng.standard_normal(4).astype(np.float32)}))
    put("safetensors", "mixed.safetensors", save({
        "a": rng.standard_normal((2, 3)).astype(np.float16),
        "b": np.arange(6, dtype=np.int64).reshape(2, 3),
        "c": np.zeros((0, 3), dtype=np.float32),
        "d": np.array(1.5, dtype=np.float64)}, metadata={"format": "pt"}))
    put("safetensors", "int8.safetensors", save({
        "conv.weight": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8),
        "conv.weight_scale": rng.random(4).astype(np.float32),
        "class_labels": np.array([0, 3], dtype=np.int64)}))
    d = 4
    a = rng.standard_normal((d, d)).astype(np.float32)
    put("safetensors", "fid_stats.safetensors", save({
        "test_mean": rng.standard_normal(d).astype(np.float32), "test_cov": a @ a.T,
        "train_mean": rng.standard_normal(d).astype(np.float32), "train_cov": a.T @ a}))
    # bf16: numpy has none; write the header by hand.
    raw = np.array([0x3f80, 0x4000, 0xbf80, 0x7fc0], dtype="<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}})
    header = header.encode() + b" " * (-len(header) % 8)
    put("safetensors", "bf16.safetensors", struct.pack("<Q", len(header)) + header + raw)


def copy_json(target, src, name):
    with open(os.path.join(ROOT, src), "rb") as f:
        put(target, name, f.read())


def config_seeds():
    copy_json("unet_config", "assets/fmnist-ddpm/config.json", "fmnist-ddpm.json")
    copy_json("unet_config", "assets/fmnist-cond/config.json", "fmnist-cond.json")
    for g in ["unet_fourier", "unet_ncsnpp_like", "unet_ddpm_like"]:
        p = os.path.join("tests", "golden", g, "config.json")
        if os.path.exists(os.path.join(ROOT, p)):
            copy_json("unet_config", p, g + ".json")
    copy_json("scheduler_config", "assets/fmnist-ddpm/scheduler_config.json", "ddpm.json")
    copy_json("scheduler_config", "assets/fmnist-sr4/scheduler_config.json", "mr.json")
    base = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
            "beta_schedule": "linear", "prediction_type": "epsilon"}
    classes = {
        "DDIMScheduler": {"eta": 0.0, "timestep_spacing": "trailing", "clip_sample": True},
        "DPMSolverMultistepScheduler": {"solver_order": 2, "algorithm_type": "dpmsolver++",
                                        "use_karras_sigmas": True, "lower_order_final": True},
        "UniPCMultistepScheduler": {"solver_order": 3, "timestep_spacing": "linspace"},
        "EulerDiscreteScheduler": {"timestep_spacing": "leading", "steps_offset": 1},
        "HeunDiscreteScheduler": {"use_karras_sigmas": True},
        "EulerAncestralDiscreteScheduler": {},
        "BDIAScheduler": {"gamma": 0.5},
        "DDPMScheduler": {"variance_type": "fixed_small", "clip_sample_range": 1.0},
        "FlowMatchEulerDiscreteScheduler": {"shift": 1.0},
        "FlowMatchHeunDiscreteScheduler": {},
        "ScoreSdeVpScheduler": {},
        "PNDMScheduler": {"skip_prk_steps": True, "set_alpha_to_one": False},
        "LMSDiscreteScheduler": {"use_karras_sigmas": True},
    }
    for cls, extra in classes.items():
        put("scheduler_config", cls + ".json",
            json.dumps({"_class_name": cls, **base, **extra}, indent=1).encode())
    put("scheduler_config", "EDM.json", json.dumps({
        "_class_name": "EDMHeunScheduler", "sigma_min": 0.002, "sigma_max": 80.0,
        "sigma_data": 0.5, "rho": 7.0}).encode())
    put("scheduler_config", "ScoreSdeVe.json", json.dumps({
        "_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 50.0,
        "snr": 0.16, "sampling_eps": 1e-5, "num_train_timesteps": 2000}).encode())
    put("scheduler_config", "Resfusion.json", json.dumps({
        "_class_name": "ResfusionScheduler", "num_train_timesteps": 1000}).encode())
    put("scheduler_config", "RDDM.json", json.dumps({
        "_class_name": "RDDMScheduler", "num_train_timesteps": 1000, "sum_scale": 0.01}).encode())
    put("scheduler_config", "ResShift.json", json.dumps({
        "_class_name": "ResShiftScheduler", "num_train_timesteps": 15, "kappa": 2.0,
        "min_noise_level": 0.04, "etas_end": 0.99, "power": 0.3,
        "prediction_type": "sample"}).encode())


def idx_seeds():
    rng = np.random.default_rng(1)
    n, h, w = 3, 5, 4
    raw = struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w) + rng.integers(0, 256, n * h * w,
                                                                        dtype=np.uint8).tobytes()
    put("idx", "plain.idx", raw)
    put("idx", "gzip.idx.gz", gzip.compress(raw, mtime=0))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w, h, color_type, depth, rows, plte=None, trns=None):
    """A PNG from raw rows (filter byte 0 prepended here)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    body = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(body)) + png_chunk(b"IEND", b"")


def png_seeds():
    rng = np.random.default_rng(2)
    w = h = 6
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
    for ct, depths in {0: [1, 8, 16], 2: [8, 16], 3: [8], 4: [8, 16], 6: [8, 16]}.items():
        for d in depths:
            c = channels[ct]
            if d == 16:
                px = rng.integers(0, 65536, (h, w * c), dtype=np.uint16).astype(">u2")
                rows = [r.tobytes() for r in px]
            elif d == 1:
                rows = [bytes([rng.integers(0, 256)]) for _ in range(h)]
            else:
                hi = 4 if ct == 3 else 256
                rows = [rng.integers(0, hi, w * c, dtype=np.uint8).tobytes() for _ in range(h)]
            plte = bytes(rng.integers(0, 256, 12, dtype=np.uint8)) if ct == 3 else None
            put("png", f"ct{ct}-{d}bit.png", png(w, h, ct, d, rows, plte))
    # 28×28 gray, the fmnist model's size.
    put("png", "gray28.png",
        png(28, 28, 0, 8, [rng.integers(0, 256, 28, dtype=np.uint8).tobytes() for _ in range(28)]))


def bytes_to_unicode():
    """GPT-2's byte → printable character table (as the engine's `bytes_to_unicode`)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tokenizer_seeds():
    """Small CLIP BPE folders, NUL-joined as the `tokenizer` target splits them: vocab.json,
    merges.txt, tokenizer_config.json, special_tokens_map.json[, tokenizer.json]."""
    chars = bytes_to_unicode()
    merges = [("a", "b"), ("ab", "c</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "g</w>"), ("d", "og</w>")]
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    merges_txt = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    sd1 = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "unk_token": "<|endoftext|>", "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}
    sd2 = dict(sd1, pad_token="!")
    special = {k: sd1[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    j = lambda o: json.dumps(o, ensure_ascii=False).encode()
    parts = [j(vocab), merges_txt.encode(), j(sd1), j(special)]
    put("tokenizer", "sd1", b"\0".join(parts))
    put("tokenizer", "sd2-pad", b"\0".join([j(vocab), merges_txt.encode(), j(sd2), j(dict(special, pad_token="!"))]))
    tj = {"version": "1.0",
          "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
                           for t in ("<|startoftext|>", "<|endoftext|>")],
          "normalizer": {"type": "Sequence", "normalizers": [
              {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
              {"type": "Lowercase"}]},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>",
                    "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                    "fuse_unk": False, "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]}}
    put("tokenizer", "tokenizer-json", b"\0".join([b"", b"", j(sd1), j(special), j(tj)]))


# The engine's CLIP_PATTERN (src/load/clip_tokenizer/mod.rs).
CLIP_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                r"|[^\s\p{L}\p{N}]+")


def sd_config_seeds():
    for v in ("sd15", "sd21"):
        for c in ("unet", "vae", "text_encoder"):
            copy_json("sd_config", f"assets/configs/{v}/{c}/config.json", f"{v}-{c}.json")
    for c in ("unet", "vae", "text_encoder"):
        copy_json("sd_config", f"tests/golden/sd/sd2-tiny/{c}/config.json", f"sd2-tiny-{c}.json")


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    idx_seeds()
    png_seeds()
    tokenizer_seeds()
    sd_config_seeds()
    print("seed corpus written under", FUZZ)
