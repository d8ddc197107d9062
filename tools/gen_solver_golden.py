#!/usr/bin/env python3
"""Golden full-loop sampler runs for the solver parity tests (offline, by hand; never in CI).

    v/bin/python tools/gen_solver_golden.py     # writes tests/golden/solvers/

For each case, diffusers' own loop runs (`set_timesteps`, `init_noise_sigma`,
`scale_model_input`, `step`) from a fixed standard-normal draw z, with either
- "toy": a closed-form Gaussian-mixture denoiser (data ~ Σ w_k N(μ_k, s_k² I) in 64 dims; its
  ε / x0 / v at the scheduler's current noise level are exact), evaluated in float64, or
- "unet": the `unet_ddpm_like` golden UNet2DModel (float32).
Each case file holds `z` (x_T = init_noise_sigma·z) and `expected` (the final sample); cases.json
lists the scheduler config, steps, model and diffusers' `timesteps` (the model's time at each call
of the loop) of every case; toy.safetensors the mixture. The UNet cases' expected samples move by
f32 rounding between torch versions: the committed ones of the cases before PNDM were written by an
earlier torch and kept.
"""
import json
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler,
                       HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler,
                       UNet2DModel)
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "solvers")
CLASSES = {c.__name__: c for c in [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                                   EulerAncestralDiscreteScheduler, HeunDiscreteScheduler,
                                   UniPCMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                                   FlowMatchHeunDiscreteScheduler, PNDMScheduler, LMSDiscreteScheduler]}

# Stable Diffusion 1.x's scheduler_config.json (runwayml/stable-diffusion-v1-5).
SD15_PNDM = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True,
                 steps_offset=1, set_alpha_to_one=False)
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

CASES = [
    # (name, class, config overrides, steps, model)
    ("ddim_default", "DDIMScheduler", {}, 10, "toy"),
    ("ddim_linspace_noclip_v", "DDIMScheduler", dict(timestep_spacing="linspace", clip_sample=False, prediction_type="v_prediction"), 12, "toy"),
    ("ddim_trailing_sample_scaled", "DDIMScheduler", dict(timestep_spacing="trailing", clip_sample=False, prediction_type="sample", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False), 8, "toy"),
    ("ddim_cosine_unet", "DDIMScheduler", dict(beta_schedule="squaredcos_cap_v2", clip_sample=False), 10, "unet"),
    ("euler_default", "EulerDiscreteScheduler", {}, 10, "toy"),
    ("euler_leading_v", "EulerDiscreteScheduler", dict(timestep_spacing="leading", prediction_type="v_prediction", steps_offset=1), 10, "toy"),
    ("euler_karras_unet", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), 8, "unet"),
    ("heun_default", "HeunDiscreteScheduler", {}, 8, "toy"),
    ("heun_trailing_unet", "HeunDiscreteScheduler", dict(timestep_spacing="trailing"), 6, "unet"),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {}, 10, "toy"),
    ("dpmpp_2m_heun_v", "DPMSolverMultistepScheduler", dict(solver_type="heun", prediction_type="v_prediction"), 10, "toy"),
    ("dpmpp_3m_25", "DPMSolverMultistepScheduler", dict(solver_order=3), 25, "toy"),
    ("dpmpp_1", "DPMSolverMultistepScheduler", dict(solver_order=1), 10, "toy"),
    ("dpm_noise_sigma_min", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min", solver_order=3), 12, "toy"),
    ("dpmpp_2m_karras_euler_final", "DPMSolverMultistepScheduler", dict(use_karras_sigmas=True, euler_at_final=True, lower_order_final=False), 20, "toy"),
    ("dpmpp_cosine_clipped_leading", "DPMSolverMultistepScheduler", dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1, timestep_spacing="leading"), 10, "toy"),
    ("dpmpp_trailing_sample", "DPMSolverMultistepScheduler", dict(timestep_spacing="trailing", prediction_type="sample", final_sigmas_type="sigma_min"), 10, "toy"),
    ("dpmpp_2m_unet", "DPMSolverMultistepScheduler", {}, 10, "unet"),
    ("unipc_default", "UniPCMultistepScheduler", {}, 10, "toy"),
    # (bh1, predict_x0=False and lower_order_final=False give NaN or a singular solve in
    # diffusers at a final σ of 0: not goldens.)
    ("unipc_3_20", "UniPCMultistepScheduler", dict(solver_order=3), 20, "toy"),
    ("unipc_v", "UniPCMultistepScheduler", dict(prediction_type="v_prediction"), 12, "toy"),
    ("unipc_karras_leading", "UniPCMultistepScheduler", dict(use_karras_sigmas=True, timestep_spacing="leading", disable_corrector=[2]), 10, "toy"),
    ("unipc_3_unet", "UniPCMultistepScheduler", dict(solver_order=3), 10, "unet"),
    ("flow_euler", "FlowMatchEulerDiscreteScheduler", {}, 10, "toy"),
    ("flow_euler_shift3", "FlowMatchEulerDiscreteScheduler", dict(shift=3.0), 12, "toy"),
    ("flow_heun", "FlowMatchHeunDiscreteScheduler", {}, 8, "toy"),
    ("dpmpp_lu_lambdas", "DPMSolverMultistepScheduler", dict(use_lu_lambdas=True), 12, "toy"),
    # Appended after the cases above so that their draws (one generator, in order) are unchanged.
    ("pndm_sd15", "PNDMScheduler", SD15_PNDM, 10, "toy"),
    ("pndm_sd15_25", "PNDMScheduler", SD15_PNDM, 25, "toy"),
    ("pndm_sd15_1", "PNDMScheduler", SD15_PNDM, 1, "toy"),
    ("pndm_sd15_2", "PNDMScheduler", SD15_PNDM, 2, "toy"),
    ("pndm_sd15_unet", "PNDMScheduler", SD15_PNDM, 10, "unet"),
    ("pndm_prk", "PNDMScheduler", {}, 10, "toy"),
    ("pndm_prk_4", "PNDMScheduler", {}, 4, "toy"),
    # T/N odd (111): PRK's half step h = 55 puts t − h and the next half time apart.
    ("pndm_prk_9_linspace_v", "PNDMScheduler", dict(timestep_spacing="linspace", prediction_type="v_prediction"), 9, "toy"),
    ("pndm_prk_unet", "PNDMScheduler", dict(beta_schedule="squaredcos_cap_v2"), 8, "unet"),
    ("pndm_v_alpha_one", "PNDMScheduler", dict(SD_BETAS, skip_prk_steps=True, prediction_type="v_prediction", set_alpha_to_one=True), 12, "toy"),
    ("pndm_linspace_7", "PNDMScheduler", dict(skip_prk_steps=True, timestep_spacing="linspace"), 7, "toy"),
    ("pndm_trailing_v", "PNDMScheduler", dict(SD_BETAS, skip_prk_steps=True, timestep_spacing="trailing", prediction_type="v_prediction"), 9, "toy"),
    ("lms_default", "LMSDiscreteScheduler", {}, 10, "toy"),
    ("lms_sd", "LMSDiscreteScheduler", dict(SD_BETAS), 25, "toy"),
    ("lms_karras", "LMSDiscreteScheduler", dict(SD_BETAS, use_karras_sigmas=True), 12, "toy"),
    ("lms_leading_v", "LMSDiscreteScheduler", dict(timestep_spacing="leading", steps_offset=1, prediction_type="v_prediction"), 10, "toy"),
    ("lms_trailing_sample", "LMSDiscreteScheduler", dict(timestep_spacing="trailing", prediction_type="sample"), 8, "toy"),
    ("lms_2", "LMSDiscreteScheduler", dict(SD_BETAS), 2, "toy"),
    ("lms_unet", "LMSDiscreteScheduler", {}, 10, "unet"),
]


class Toy:
    def __init__(self, gen):
        self.k, self.d = 3, 64
        self.means = (0.6 * torch.randn(self.k, self.d, generator=gen)).double()
        self.weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
        self.var = torch.tensor([0.04, 0.09, 0.01], dtype=torch.float64)

    def x0(self, x, alpha, sigma):
        x = x.reshape(x.shape[0], -1).double()
        v = alpha ** 2 * self.var + sigma ** 2  # [K]
        d2 = ((x[:, None, :] - alpha * self.means[None]) ** 2).sum(-1)  # [N, K]
        logr = self.weights.log()[None] - 0.5 * self.d * v.log()[None] - 0.5 * d2 / v[None]
        r = torch.softmax(logr, dim=1)
        post = self.means[None] + (alpha * self.var / v)[None, :, None] * (x[:, None, :] - alpha * self.means[None])
        return (r[:, :, None] * post).sum(1)

    def __call__(self, x, alpha, sigma, pred):
        shape = x.shape
        x0 = self.x0(x, alpha, sigma)
        xf = x.reshape(x.shape[0], -1).double()
        eps = (xf - alpha * x0) / sigma
        out = {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0,
               "flow_prediction": eps - x0}[pred]
        return out.reshape(shape).float()


def noise_level(s, t):
    """(alpha, sigma) of the marginal the scheduler's model input has at this step."""
    if isinstance(s, (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)):
        idx = s.step_index if s.step_index is not None else s.index_for_timestep(t)
        sig = float(s.sigmas[idx])
        return 1.0 - sig, sig
    if hasattr(s, "sigmas") and s.step_index is not None or isinstance(s, (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler)):
        idx = s.step_index if s.step_index is not None else s.index_for_timestep(t)
        sig = float(s.sigmas[idx])
        a = 1.0 / (sig * sig + 1.0) ** 0.5
        return a, sig * a
    abar = float(s.alphas_cumprod[int(t)])
    return abar ** 0.5, (1 - abar) ** 0.5


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    toy = Toy(gen)
    save_file({"means": toy.means.float(), "weights": toy.weights.float(), "variances": toy.var.float()},
              os.path.join(OUT, "toy.safetensors"))
    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval()
    index = []
    for name, cls, over, steps, model in CASES:
        sched = CLASSES[cls](**over)
        cfg = dict(sched.config)
        cfg["_class_name"] = cls
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_") or k == "_class_name"}
        shape = (2, 1, 8, 8) if model == "toy" else (2, 3, 16, 16)
        z = torch.randn(shape, generator=gen)
        sched.set_timesteps(steps)
        x = z * getattr(sched, "init_noise_sigma", 1.0)
        pred = sched.config.get("prediction_type", "flow_prediction")
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            with torch.no_grad():
                if model == "toy":
                    a, s = noise_level(sched, t)
                    out = toy(inp, a, s, pred)
                else:
                    out = unet(inp, t).sample
            x = sched.step(out, t, x).prev_sample
        save_file({"z": z.contiguous(), "expected": x.float().contiguous()}, os.path.join(OUT, f"{name}.safetensors"))
        index.append(dict(name=name, config=json.loads(json.dumps(cfg, default=float)), steps=steps, model=model,
                          timesteps=[float(t) for t in sched.timesteps]))
        print(f"{name}: max|x| {x.abs().max():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
