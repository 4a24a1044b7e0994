"""Golden values for cidm-diffusion's scheduler parity tests, made with diffusers.

Writes crates/cidm-diffusion/tests/fixtures/schedulers.safetensors: diffusers' alphas_cumprod
for several beta schedules, full DDIM and DPM-Solver++ step traces (the initial sample, fixed
model outputs from a noisy oracle, and every prev_sample), DDPM add_noise / get_velocity results, and a
length + checksum of the timesteps that `set_timesteps` produces for every step count of
several spacing configurations. The safetensors metadata key "cases" holds a JSON description
of every case (the config passed to diffusers and, for traces, the config diffusers saves).

All random data comes from numpy's seeded PCG64 generator, so re-running reproduces the file
(up to the last bit of diffusers' float32 arithmetic, which can depend on the CPU's SIMD width).

    pip install torch diffusers==0.42.1 safetensors numpy
    python tools/scheduler_fixtures.py
"""

import json
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "crates" / "cidm-diffusion" / "tests" / "fixtures"

SCHEDULERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}

SD15 = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
LINEAR = dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
COSINE = dict(beta_schedule="squaredcos_cap_v2")

SCHEDULES = {
    "sd15": dict(SD15),
    "linear": dict(LINEAR),
    "cosine": dict(COSINE),
    "scaled_linear_t777": dict(SD15, num_train_timesteps=777),
}

# name: (scheduler, num_inference_steps, config)
TRACES = {
    "ddim_sd15_leading_50": (
        "ddim",
        50,
        dict(SD15, steps_offset=1, set_alpha_to_one=False, clip_sample=False),
    ),
    "ddim_linear_linspace_clip_20": ("ddim", 20, dict(LINEAR, timestep_spacing="linspace")),
    "ddim_sd21_v_trailing_25": (
        "ddim",
        25,
        dict(
            SD15,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            steps_offset=1,
            set_alpha_to_one=False,
            clip_sample=False,
        ),
    ),
    "ddim_sample_clip_12": (
        "ddim",
        12,
        dict(LINEAR, prediction_type="sample", clip_sample_range=1.5),
    ),
    "ddim_cosine_v_10": (
        "ddim",
        10,
        dict(COSINE, prediction_type="v_prediction", clip_sample=False),
    ),
    "dpm_sd15_linspace_25": ("dpm", 25, dict(SD15, steps_offset=1)),
    "dpm_sd15_leading_20": ("dpm", 20, dict(SD15, timestep_spacing="leading", steps_offset=1)),
    "dpm_v_trailing_10": (
        "dpm",
        10,
        dict(SD15, prediction_type="v_prediction", timestep_spacing="trailing"),
    ),
    # 14 and 15 steps: either side of diffusers' `lower_order_final` threshold.
    "dpm_sigma_min_14": ("dpm", 14, dict(SD15, final_sigmas_type="sigma_min")),
    "dpm_sigma_min_15": ("dpm", 15, dict(SD15, final_sigmas_type="sigma_min")),
    "dpm_no_lower_order_final_10": (
        "dpm",
        10,
        dict(SD15, final_sigmas_type="sigma_min", lower_order_final=False),
    ),
    "dpm_order1_8": ("dpm", 8, dict(LINEAR, solver_order=1)),
    "dpm_sample_euler_at_final_16": (
        "dpm",
        16,
        dict(LINEAR, prediction_type="sample", final_sigmas_type="sigma_min", euler_at_final=True),
    ),
    "dpm_linear_50": ("dpm", 50, dict(LINEAR)),
}

# name: config; add_noise / get_velocity on a batch with one timestep per sample.
DDPM = {
    "sd15": dict(SD15),
    "linear": dict(LINEAR),
    "cosine": dict(COSINE),
}
DDPM_TIMESTEPS = [0, 1, 500, 998, 999]

# name: (scheduler, config); every num_inference_steps in 1..=num_train_timesteps.
GRIDS = {
    "ddim_leading_offset1": ("ddim", dict(steps_offset=1)),
    "ddim_trailing": ("ddim", dict(timestep_spacing="trailing")),
    "ddim_linspace": ("ddim", dict(timestep_spacing="linspace")),
    "ddim_trailing_t777": ("ddim", dict(timestep_spacing="trailing", num_train_timesteps=777)),
    "dpm_linspace": ("dpm", dict()),
    "dpm_leading_offset1": ("dpm", dict(timestep_spacing="leading", steps_offset=1)),
    "dpm_trailing": ("dpm", dict(timestep_spacing="trailing")),
    "dpm_leading_t777": ("dpm", dict(timestep_spacing="leading", num_train_timesteps=777)),
}

LATENT = (2, 2, 3, 3)
ORACLE_NOISE = 0.1


def randn(rng: np.random.Generator, shape) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def oracle(scheduler, config: dict, t, sample: torch.Tensor, clean: torch.Tensor, rng) -> torch.Tensor:
    """A model output that points the sample at a fixed random clean latent, plus seeded noise.

    Independent random outputs would make the samples grow by 15x to 500x over a trace (each
    step extrapolates a clean sample from unrelated noise); this keeps them at the scale of real
    latents while the added noise (std ORACLE_NOISE) still makes every output, and so the
    second-order history term, differ from step to step.
    """
    a = scheduler.alphas_cumprod[t].double()
    x, x0 = sample.double(), clean.double()
    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    exact = {
        "epsilon": eps,
        "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0,
        "sample": x0,
    }[config.get("prediction_type", "epsilon")]
    return exact.float() + ORACLE_NOISE * randn(rng, sample.shape)


def checksum(timesteps: np.ndarray) -> int:
    """Order-sensitive integer digest of a timestep list: sum of (i + 1) * t_i."""
    weights = np.arange(1, len(timesteps) + 1, dtype=np.int64)
    digest = int((weights * timesteps.astype(np.int64)).sum())
    assert abs(digest) < 2**31, "checksums are stored as int32"
    return digest


def usable(kind: str, timesteps: np.ndarray, num_train_timesteps: int) -> bool:
    """Whether diffusers' list is one a correct implementation can run.

    Trailing spacing sometimes yields one step too many ending in -1, leading spacing with an
    offset can reach num_train_timesteps, and DPM-Solver++ with a repeated first timestep starts
    at its second occurrence and then runs off the end of its sigmas: cidm-diffusion reports
    all of these as errors instead of reproducing them.
    """
    in_range = timesteps.min() >= 0 and timesteps.max() < num_train_timesteps
    first_unique = kind != "dpm" or (timesteps == timesteps[0]).sum() == 1
    return bool(in_range and first_unique)


def main() -> None:
    rng = np.random.default_rng(20240607)
    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, dict] = {"schedules": {}, "traces": {}, "ddpm": {}, "grids": {}}

    for name, config in SCHEDULES.items():
        scheduler = DDPMScheduler(**config)
        tensors[f"schedule/{name}/alphas_cumprod"] = scheduler.alphas_cumprod.clone()
        cases["schedules"][name] = {"config": config}

    for name, (kind, steps, config) in TRACES.items():
        scheduler = SCHEDULERS[kind](**config)
        scheduler.set_timesteps(steps)
        sample = randn(rng, LATENT)
        clean = randn(rng, LATENT)
        tensors[f"trace/{name}/sample0"] = sample
        model_outputs, samples = [], []
        for t in scheduler.timesteps:
            model_output = oracle(scheduler, config, t, sample, clean, rng)
            sample = scheduler.step(model_output, t, sample).prev_sample
            model_outputs.append(model_output)
            samples.append(sample)
        tensors[f"trace/{name}/timesteps"] = scheduler.timesteps.clone()
        tensors[f"trace/{name}/model_outputs"] = torch.stack(model_outputs)
        tensors[f"trace/{name}/samples"] = torch.stack(samples)
        cases["traces"][name] = {
            "scheduler": kind,
            "num_inference_steps": steps,
            "config": config,
            "diffusers_config": scheduler.to_json_string(),
        }

    for name, config in DDPM.items():
        scheduler = DDPMScheduler(**config)
        batch = (len(DDPM_TIMESTEPS),) + LATENT[1:]
        original, noise = randn(rng, batch), randn(rng, batch)
        timesteps = torch.tensor(DDPM_TIMESTEPS, dtype=torch.int64)
        prefix = f"ddpm/{name}"
        tensors[f"{prefix}/original"] = original
        tensors[f"{prefix}/noise"] = noise
        tensors[f"{prefix}/noisy"] = scheduler.add_noise(original, noise, timesteps)
        tensors[f"{prefix}/velocity"] = scheduler.get_velocity(original, noise, timesteps)
        cases["ddpm"][name] = {"config": config, "timesteps": DDPM_TIMESTEPS}

    for name, (kind, config) in GRIDS.items():
        scheduler = SCHEDULERS[kind](**config)
        train = scheduler.config.num_train_timesteps
        lengths, checksums, usable_flags = [], [], []
        for steps in range(1, train + 1):
            scheduler.set_timesteps(steps)
            timesteps = scheduler.timesteps.numpy()
            lengths.append(len(timesteps))
            checksums.append(checksum(timesteps))
            usable_flags.append(usable(kind, timesteps, train))
        tensors[f"grid/{name}/len"] = torch.tensor(lengths, dtype=torch.int32)
        tensors[f"grid/{name}/checksum"] = torch.tensor(checksums, dtype=torch.int32)
        tensors[f"grid/{name}/usable"] = torch.tensor(usable_flags, dtype=torch.uint8)
        cases["grids"][name] = {"scheduler": kind, "config": config}

    OUT.mkdir(parents=True, exist_ok=True)
    metadata = {
        "cases": json.dumps(cases, sort_keys=True),
        "diffusers_version": diffusers.__version__,
        "latent_shape": json.dumps(LATENT),
    }
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    save_file(tensors, OUT / "schedulers.safetensors", metadata=metadata)


if __name__ == "__main__":
    main()
