"""Part `img2img`: diffusers' own `StableDiffusionImg2ImgPipeline` on the tiny pipelines
-> tests/golden/sd/img2img_input.png (the shared input, a non-square 48x32 RGB PNG),
   tests/golden/sd/img2img_input_odd.png (52x37: diffusers resizes it to 52x36),
   tests/golden/sd/<pipe>/img2img_io.safetensors + img2img_cases.json.

The pipeline is called as a user calls it (a PIL image, a seeded torch.Generator); the two
draws it takes are recorded, not replaced: `randn_tensor` is wrapped where the VAE posterior
(`DiagonalGaussianDistribution.sample`) and the pipeline's `prepare_latents` import it, and
what it returned is saved. Per case `<case>.encoder_noise` is the posterior's standard-normal
draw [n, 4, h, w], `<case>.noise` the z that `scheduler.add_noise` adds at the first kept
timestep [B, 4, h, w], `<case>.latents` the final latents (`output_type="latent"`) and
`<case>.image` `vae.decode(latents / scaling_factor)` in model range. `input` is the image as
`VaeImageProcessor.preprocess` hands it to the VAE ([1, 3, 32, 48] in [-1, 1]), `input_odd` the
same of the 52x37 picture (Lanczos-resized by PIL); case "odd_euler_s075" starts from it.
`pil_lanczos_40x24` / `pil_lanczos_61x45`: Pillow's `resize(..., LANCZOS)` of that picture
([H, W, 3], 0..255), for the engine's bit-exact resampler.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from .common import PIPES, ROOT, pipe_dir

INPUT = os.path.join(ROOT, "img2img_input.png")
# An odd side: VaeImageProcessor rounds the sides down to multiples of the VAE's factor (2 for
# the tiny VAE: 52x36) and Lanczos-resizes.
INPUT_ODD = os.path.join(ROOT, "img2img_input_odd.png")

# (name, scheduler class or None for the folder's, strength, prompts, negative prompts, guidance)
CASES = [
    dict(name="folder_s075", scheduler=None, strength=0.75,
         prompt=["a photo of a cat", "an oil painting of a harbour"],
         negative_prompt=["blurry", ""], guidance=7.5, seed=11),
    dict(name="euler_s030", scheduler="EulerDiscreteScheduler", strength=0.3,
         prompt=["a red cube"], negative_prompt=["photo"], guidance=5.0, seed=12),
    dict(name="dpmpp2m_s100", scheduler="DPMSolverMultistepScheduler", strength=1.0,
         prompt=["a lighthouse at dusk"], negative_prompt=None, guidance=7.5, seed=13),
    dict(name="lms_s075", scheduler="LMSDiscreteScheduler", strength=0.75,
         prompt=["a bowl of fruit"], negative_prompt=None, guidance=6.0, seed=14),
    dict(name="ddim_s030", scheduler="DDIMScheduler", strength=0.3,
         prompt=["a snowy mountain"], negative_prompt=None, guidance=7.5, seed=15),
    # PNDMScheduler.from_config keeps the folder's skip_prk_steps (sd1: true, PLMS; sd2: the
    # class default false, so the cut lands inside the Runge-Kutta start).
    dict(name="pndm_s030", scheduler="PNDMScheduler", strength=0.3,
         prompt=["a snowy mountain"], negative_prompt=None, guidance=7.5, seed=16),
    dict(name="heun_s050", scheduler="HeunDiscreteScheduler", strength=0.5,
         prompt=["a city street"], negative_prompt=None, guidance=1.0, seed=17),
    dict(name="odd_euler_s075", input="odd", scheduler="EulerDiscreteScheduler", strength=0.75,
         prompt=["a harbour"], negative_prompt=None, guidance=7.5, seed=19),
    dict(name="unipc_s075", scheduler="UniPCMultistepScheduler", strength=0.75,
         prompt=["a forest"], negative_prompt=None, guidance=7.5, seed=18),
]
STEPS = 10


def write_input(path=INPUT, h=32, w=48):
    """A deterministic non-square RGB image with structure (gradients, a disc, noise)."""
    from PIL import Image

    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(7)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = np.where((x - 30) ** 2 + (y - 14) ** 2 < 81, 230.0, 40.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path)


class Recorder:
    """Wraps `randn_tensor` in the modules that draw the posterior and the start noise."""

    def __init__(self):
        import diffusers.models.autoencoders.vae as vae
        import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as p

        self.draws = {}
        for key, mod in (("encoder_noise", vae), ("noise", p)):
            orig = mod.randn_tensor

            def wrapped(*a, _orig=orig, _key=key, **k):
                t = _orig(*a, **k)
                self.draws[_key] = t.clone()
                return t

            mod.randn_tensor = wrapped


def run(pipe, base, case, rec):
    import diffusers
    from PIL import Image

    pipe.scheduler = base
    if case["scheduler"]:
        pipe.scheduler = getattr(diffusers, case["scheduler"]).from_config(base.config)
    rec.draws.clear()
    g = torch.Generator().manual_seed(case["seed"])
    with torch.no_grad():
        out = pipe(prompt=case["prompt"], negative_prompt=case["negative_prompt"],
                   image=Image.open(INPUT_ODD if case.get("input") == "odd" else INPUT), strength=case["strength"], num_inference_steps=STEPS,
                   guidance_scale=case["guidance"], generator=g, output_type="latent")
        latents = out.images
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    sched = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    sched["_class_name"] = type(pipe.scheduler).__name__
    return latents, image, sched


def main():
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    write_input()
    write_input(INPUT_ODD, 37, 52)
    rec = Recorder()
    for name in PIPES:
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
            pipe_dir(name), torch_dtype=torch.float32, safety_checker=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        base = pipe.scheduler
        tensors = {"input": pipe.image_processor.preprocess(Image.open(INPUT)).contiguous(),
                   "input_odd": pipe.image_processor.preprocess(Image.open(INPUT_ODD)).contiguous()}
        # Pillow's own Lanczos resize of the odd picture on both axes, down and up (HWC, 0..255).
        for w, h in ((40, 24), (61, 45)):
            r = Image.open(INPUT_ODD).convert("RGB").resize((w, h), Image.LANCZOS)
            tensors[f"pil_lanczos_{w}x{h}"] = torch.from_numpy(np.array(r).astype(np.float32))
        cases = []
        for case in CASES:
            latents, image, sched = run(pipe, base, case, rec)
            n = case["name"]
            tensors[f"{n}.encoder_noise"] = rec.draws["encoder_noise"].contiguous()
            tensors[f"{n}.noise"] = rec.draws["noise"].contiguous()
            tensors[f"{n}.latents"] = latents.contiguous()
            tensors[f"{n}.image"] = image.contiguous()
            cases.append(dict(case, steps=STEPS, scheduler_config=sched))
            print(f"  {name}/{n}: latents max {latents.abs().max():.4f}, image max {image.abs().max():.4f}")
        save_file(tensors, os.path.join(pipe_dir(name), "img2img_io.safetensors"))
        with open(os.path.join(pipe_dir(name), "img2img_cases.json"), "w") as f:
            json.dump(cases, f, indent=1)
