"""Part `tokenizer`: transformers' CLIPTokenizer ids of a prompt corpus, for both tiny pipelines'
tokenizer folders (sd1-tiny: pad `<|endoftext|>`; sd2-tiny: pad `!`) and for two folders with
the legacy (transformers 4 era) config files of the published SD 1.5 / SD 2.1 tokenizers
(AddedToken objects with "normalized": true; the same vocab.json/merges.txt) and three configs
that pin transformers' handling of those flags, written to tests/golden/sd/tokenizer-legacy/NAME/
(configs only: the test copies the vocabulary in).
Each prompt is tokenised as diffusers' StableDiffusionPipeline calls the tokenizer
(padding="max_length", max_length=model_max_length, truncation=True) and untruncated.
-> tests/golden/sd/tokenizer.json
"""
import json
import os
import shutil
import tempfile

from .common import PIPES, ROOT, pipe_dir

WORDS = "a majestic lion standing on a rocky cliff at sunset with dramatic clouds".split()


def corpus():
    long_words = " ".join(WORDS[i % len(WORDS)] for i in range(100))
    return [
        "",
        "a photo of an astronaut riding a horse on mars",
        "A Photo Of A CAT",
        "portrait of a woman, highly detailed, 8k, trending on artstation!!!",
        "It's a dog's life; they're here, we've got it, I'm sure you'll see, he'd go",
        "IT'S LOUD AND THEY'RE HERE",
        "café crème brûlée, naïve résumé, Zürich, São Paulo",
        "e\u0301cole de\u0301cor",
        "一只猫坐在窗台上",
        "日本語のテキスト、東京タワー",
        "한국어 문장 테스트",
        "emoji 🐱🚀 and 👩\u200d👩\u200d👧 family, flag 🇫🇷",
        "numbers 1234567890 3.14159 1e-5 1,000,000",
        "   leading and trailing spaces   ",
        "tabs\tand\nnewlines\r\nand   multiple    spaces",
        "!",
        "!!!",
        "wow! great!! amazing!!! hi!there",
        "hello<|endoftext|>world",
        "<|startoftext|>a dog<|endoftext|><|endoftext|>",
        "<|ENDOFTEXT|> uppercase special <|StartOfText|>",
        long_words,
        long_words.replace(" ", "! "),
        " ".join(["a"] * 75),
        " ".join(["a"] * 76),
        "ΟΔΟΣ ΣΟΦΟΣ Ελληνικά",
        "İstanbul ŞEHİR ıi",
        "Straße STRASSE ß ẞ",
        "fullwidth ＡＢＣ１２３ and ligature ﬁne",
        "nbsp\u00a0ideographic\u3000space line\u2028sep nel\u0085x zero\u200bwidth ogham\u1680mark mongolian\u180evs",
        "control\x00chars\x07here\x1b[0m and \ufffd replacement",
        "punctuation: (parentheses) [brackets] {braces} <angle> \"quotes\" 'single' `back`",
        "hyphen-ated words\u2014em dash\u2026ellipsis «guillemets» „quotes“",
        "masterpiece, best quality, (((detailed))), [[blurry]], {sharp}:1.2",
        "x" * 300,
        "Ünïcödé ÀÉÎÕÜ ÅØÆ",
        "arabic العربية hebrew עברית hindi हिन्दी thai ภาษาไทย",
        "''s 'S 'tis rock'n'roll o'clock",
        "\u0301 lone combining accent q\u0301",
        "mixed123numbers456and789letters",
        "$100 @user #hashtag 50% a&b c|d ~tilde^caret",
        "superhero's sidekick's cape; Dogs' toys",
    ]


def legacy_configs(pad):
    """tokenizer_config.json / special_tokens_map.json as the published SD 1.5 (pad
    `<|endoftext|>`) and SD 2.1 (pad `!`) tokenizer folders carry them."""
    def tok(c):
        return {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    cfg = {
        "add_prefix_space": False,
        "bos_token": dict(__type="AddedToken", **tok("<|startoftext|>")),
        "do_lower_case": True,
        "eos_token": dict(__type="AddedToken", **tok("<|endoftext|>")),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": pad,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": dict(__type="AddedToken", **tok("<|endoftext|>")),
    }
    stm = {"bos_token": tok("<|startoftext|>"), "eos_token": tok("<|endoftext|>"), "pad_token": pad,
           "unk_token": tok("<|endoftext|>")}
    return cfg, stm


def legacy_variants():
    """name -> (tokenizer_config, special_tokens_map or None): the SD 1.5 / 2.1 files, and three
    single-flag configs that pin which `"normalized": true` flags transformers honours (an
    eos_token's is dropped, an unk_token's or an added_tokens_decoder entry's is kept)."""
    def added(c, n):
        return {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": n, "rstrip": False,
                "single_word": False}

    base = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}
    plain = {k: v for k, v in added("<|endoftext|>", True).items() if k != "__type"}
    return {
        "sd15": legacy_configs("<|endoftext|>"),
        "sd21": legacy_configs("!"),
        "eos-normalized": (dict(base, eos_token=added("<|endoftext|>", True)), None),
        "unk-normalized": (dict(base, unk_token=added("<|endoftext|>", True)), None),
        "decoder-normalized": (dict(base, eos_token="<|endoftext|>", added_tokens_decoder={"49407": plain}), None),
    }


def run(tok, prompts):
    n = tok.model_max_length
    padded = tok(prompts, padding="max_length", max_length=n, truncation=True).input_ids
    full = [tok(p).input_ids for p in prompts]
    return {"pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id, "model_max_length": n,
            "input_ids": padded, "ids": full}


def main():
    import tokenizers
    import transformers
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    prompts = corpus()
    out = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
           "CLIPTokenizerFast_is_CLIPTokenizer": CLIPTokenizerFast is CLIPTokenizer,
           "prompts": prompts, "tokenizers_": {}}
    for name in PIPES:
        d = os.path.join(pipe_dir(name), "tokenizer")
        res = run(CLIPTokenizer.from_pretrained(d), prompts)
        fast = run(CLIPTokenizerFast.from_pretrained(d), prompts)
        res["fast_differs"] = fast["input_ids"] != res["input_ids"] or fast["ids"] != res["ids"]
        out["tokenizers_"][name] = res
    legacy_root = os.path.join(ROOT, "tokenizer-legacy")
    vocab_src = os.path.join(pipe_dir("sd1-tiny"), "tokenizer")
    for name, (cfg, stm) in legacy_variants().items():
        d = os.path.join(legacy_root, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        if stm is not None:
            with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
                json.dump(stm, f, indent=2)
        with tempfile.TemporaryDirectory() as tmp:
            for f in os.listdir(d):
                shutil.copy(os.path.join(d, f), tmp)
            for f in ["vocab.json", "merges.txt"]:
                shutil.copy(os.path.join(vocab_src, f), tmp)
            out["tokenizers_"][f"legacy-{name}"] = run(CLIPTokenizer.from_pretrained(tmp), prompts)
    path = os.path.join(ROOT, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        # One prompt's ids a line: readable diffs, small file.
        f.write(json.dumps(out, ensure_ascii=False, indent=1).replace("\n   ", " ").replace("\n  ]", " ]"))
    for k, v in out["tokenizers_"].items():
        print(f"  {k}: pad {v['pad_token']!r}={v['pad_token_id']}, fast differs: {v.get('fast_differs')}")
    print(f"  {len(prompts)} prompts -> {path}")
