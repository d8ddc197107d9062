#!/usr/bin/env python3
"""Golden img2img-style (SDEdit) scheduler runs: diffusers' schedulers started mid-schedule as
`StableDiffusionImg2ImgPipeline` starts them (offline, by hand; never in CI).

    v/bin/python tools/gen_sdedit_golden.py     # writes tests/golden/sdedit/

For each case: `set_timesteps(N)`; the pipeline's `get_timesteps(N, strength)` (t_start =
N - min(int(N*strength), N), `timesteps[t_start*order:]`, `set_begin_index(t_start*order)` where
the class has it); x = `add_noise(x0, z, timesteps[:1])`; then diffusers' own loop
(`scale_model_input`, `step`) over the kept timesteps with the closed-form Gaussian-mixture
("toy") model of tools/gen_solver_golden.py (the same mixture, tests/golden/solvers/toy.safetensors).
Each case file holds `x0`, `z` and `expected` (the final sample); cases.json the scheduler
config, steps, strength, t_start and the kept `timesteps`. Deterministic schedulers only (the
ancestral ones draw per step).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_solver_golden import CLASSES, ROOT, SD15_PNDM, SD_BETAS, Toy, noise_level  # noqa: E402

OUT = os.path.join(ROOT, "sdedit")

CASES = [
    # (name, class, config overrides, steps, strength)
    ("ddim_sd_075", "DDIMScheduler", dict(SD_BETAS, set_alpha_to_one=False, steps_offset=1, clip_sample=False), 10, 0.75),
    ("ddim_v_trailing_03", "DDIMScheduler", dict(timestep_spacing="trailing", prediction_type="v_prediction", clip_sample=False), 10, 0.3),
    ("euler_sd_05", "EulerDiscreteScheduler", dict(SD_BETAS, timestep_spacing="leading", steps_offset=1), 10, 0.5),
    ("euler_karras_1", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), 8, 1.0),
    ("heun_05", "HeunDiscreteScheduler", {}, 8, 0.5),
    ("heun_trailing_v_09", "HeunDiscreteScheduler", dict(timestep_spacing="trailing", prediction_type="v_prediction"), 10, 0.9),
    ("dpmpp_2m_075", "DPMSolverMultistepScheduler", {}, 10, 0.75),
    ("dpmpp_3m_06", "DPMSolverMultistepScheduler", dict(solver_order=3), 20, 0.6),
    ("dpmpp_2m_karras_04", "DPMSolverMultistepScheduler", dict(use_karras_sigmas=True), 12, 0.4),
    ("dpm_3_sigma_min_05", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min", solver_order=3), 12, 0.5),
    ("unipc_075", "UniPCMultistepScheduler", {}, 10, 0.75),
    ("unipc_3_05", "UniPCMultistepScheduler", dict(solver_order=3), 20, 0.5),
    ("unipc_v_karras_03", "UniPCMultistepScheduler", dict(prediction_type="v_prediction", use_karras_sigmas=True), 12, 0.3),
    ("lms_sd_075", "LMSDiscreteScheduler", dict(SD_BETAS), 10, 0.75),
    ("lms_karras_05", "LMSDiscreteScheduler", dict(SD_BETAS, use_karras_sigmas=True), 12, 0.5),
    ("lms_2_of_10", "LMSDiscreteScheduler", {}, 10, 0.2),
    ("pndm_sd15_075", "PNDMScheduler", SD15_PNDM, 10, 0.75),
    ("pndm_sd15_03", "PNDMScheduler", SD15_PNDM, 10, 0.3),
    ("pndm_sd15_0", "PNDMScheduler", SD15_PNDM, 10, 0.0),
    ("pndm_sd15_1", "PNDMScheduler", SD15_PNDM, 10, 1.0),
    # The Runge-Kutta start (12 evaluations) with cuts inside and after it.
    ("pndm_prk_09", "PNDMScheduler", {}, 10, 0.9),
    ("pndm_prk_05", "PNDMScheduler", {}, 10, 0.5),
    ("pndm_prk_03", "PNDMScheduler", {}, 10, 0.3),
    ("pndm_prk_01_v", "PNDMScheduler", dict(prediction_type="v_prediction"), 10, 0.1),
]


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    toy = Toy(torch.Generator().manual_seed(7))  # the means of tests/golden/solvers/toy.safetensors
    gen = torch.Generator().manual_seed(19)
    index = []
    for name, cls, over, steps, strength in CASES:
        sched = CLASSES[cls](**over)
        cfg = dict(sched.config)
        cfg["_class_name"] = cls
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_") or k == "_class_name"}
        shape = (2, 1, 8, 8)
        # A clean sample near the mixture's first component, and the start noise.
        x0 = (toy.means[0].float().reshape(1, 1, 8, 8) + 0.2 * torch.randn(shape, generator=gen))
        z = torch.randn(shape, generator=gen)
        sched.set_timesteps(steps)
        init = min(int(steps * strength), steps)
        t_start = max(steps - init, 0)
        timesteps = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        x = sched.add_noise(x0, z, timesteps[:1].repeat(shape[0]))
        pred = sched.config.get("prediction_type")
        for t in timesteps:
            inp = sched.scale_model_input(x, t)
            a, s = noise_level(sched, t)
            with torch.no_grad():
                out = toy(inp, a, s, pred)
            x = sched.step(out, t, x).prev_sample
        save_file({"x0": x0.contiguous(), "z": z.contiguous(), "expected": x.float().contiguous()},
                  os.path.join(OUT, f"{name}.safetensors"))
        index.append(dict(name=name, config=json.loads(json.dumps(cfg, default=float)), steps=steps,
                          strength=strength, t_start=t_start, timesteps=[float(t) for t in timesteps]))
        print(f"{name}: t_start {t_start}, {len(timesteps)} calls, max|x| {x.abs().max():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
