"""Part `pipeline`: full `StableDiffusionPipeline` runs of the tiny pipelines with fixed noise,
prompts and negative prompts -> tests/golden/sd/<pipe>/pipeline_io.safetensors + pipeline_cases.json.

Per case `<case>.noise` holds the standard-normal latents handed to the pipeline as `latents=`
(diffusers multiplies them by `init_noise_sigma` itself, as `diffuse txt2img --noise` does),
`<case>.latents` the final latents (`output_type="latent"`) and `<case>.image` the VAE output
`vae.decode(latents / scaling_factor)` in model range [-1, 1] (before diffusers' postprocessing).
"""
import json
import os

import torch
from safetensors.torch import save_file

from .common import PIPES, load_pipeline, pipe_dir

CASES = [
    # The folder's own scheduler (PNDM for sd1-tiny, DDIM v-prediction for sd2-tiny).
    dict(name="folder", prompt=["a photo of a cat", "an astronaut riding a horse on mars!"],
         negative_prompt=["blurry, low quality", ""], steps=10, guidance=7.5, width=32, height=32,
         scheduler=None, seed=1),
    # No classifier-free guidance (guidance <= 1: one batch, no negative prompt), non-square.
    dict(name="noguide", prompt=["a red cube"], negative_prompt=None, steps=10, guidance=1.0,
         width=48, height=32, scheduler=None, seed=2),
    # Another solver on the same folder: Euler (diffusers' EulerDiscreteScheduler from the
    # folder's config, as `--scheduler euler` builds it).
    dict(name="euler", prompt=["a watercolor painting of a lighthouse"], negative_prompt=["photo"],
         steps=10, guidance=5.0, width=32, height=32, scheduler="EulerDiscreteScheduler", seed=3),
]


def run(pipe, case):
    import diffusers

    if case["scheduler"]:
        cls = getattr(diffusers, case["scheduler"])
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    b = len(case["prompt"])
    h, w = case["height"] // pipe.vae_scale_factor, case["width"] // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(case["seed"])
    noise = torch.randn((b, pipe.unet.config.in_channels, h, w), generator=g)
    with torch.no_grad():
        out = pipe(prompt=case["prompt"], negative_prompt=case["negative_prompt"],
                   num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                   width=case["width"], height=case["height"], latents=noise.clone(),
                   output_type="latent")
        latents = out.images
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return noise, latents, image, dict(pipe.scheduler.config)


def main():
    for name in PIPES:
        pipe = load_pipeline(name)
        pipe.set_progress_bar_config(disable=True)
        base = pipe.scheduler
        tensors, cases = {}, []
        for case in CASES:
            pipe.scheduler = base
            noise, latents, image, sched = run(pipe, case)
            n = case["name"]
            tensors[f"{n}.noise"] = noise.contiguous()
            tensors[f"{n}.latents"] = latents.contiguous()
            tensors[f"{n}.image"] = image.contiguous()
            # The scheduler config the run used (with diffusers' `_class_name`), as the engine
            # reads a scheduler_config.json.
            sched = {k: v for k, v in sched.items() if not k.startswith("_")}
            sched["_class_name"] = type(pipe.scheduler).__name__
            cases.append(dict(case, scheduler_config=sched))
            print(f"  {name}/{n}: latents max {latents.abs().max():.4f}, image max {image.abs().max():.4f}")
        save_file(tensors, os.path.join(pipe_dir(name), "pipeline_io.safetensors"))
        with open(os.path.join(pipe_dir(name), "pipeline_cases.json"), "w") as f:
            json.dump(cases, f, indent=1)
