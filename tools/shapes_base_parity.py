"""Golden latents for the shapes-world base model, made with diffusers.

Loads the committed base model (assets/shapes-base, written by
`cargo run -p cidm-pretrain --example pretrain_base`) with diffusers'
StableDiffusionPipeline (local files only, no safety checker), draws initial latents from a
seeded torch generator, and runs two prompts with classifier-free guidance (7.5) for 10 steps
of DPM-Solver++ 2M (the model's own scheduler) and of DDIM (built from the same config). It
stores the initial latents and diffusers' final latents in a safetensors fixture that
crates/cidm-pretrain/tests/shapes_base.rs compares `cidm`'s pipeline with.

    pip install torch numpy safetensors diffusers==0.42.1 transformers
    python tools/shapes_base_parity.py [model dir] [output file]

Defaults are relative to the repository: assets/shapes-base and
crates/cidm-pretrain/tests/fixtures/shapes-base-parity.safetensors.
"""

import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red star on the left", "a blue ring in the center"]
STEPS = 10
GUIDANCE = 7.5
SEED = 0


def main() -> None:
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "shapes-base"
    out = (Path(sys.argv[2]) if len(sys.argv) > 2
           else ROOT / "crates" / "cidm-pretrain" / "tests" / "fixtures" / "shapes-base-parity.safetensors")
    pipe = StableDiffusionPipeline.from_pretrained(
        str(model), safety_checker=None, requires_safety_checker=False, local_files_only=True,
        dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler), type(pipe.scheduler)
    size = pipe.vae.config.sample_size
    f = pipe.vae_scale_factor
    channels = pipe.unet.config.in_channels
    generator = torch.Generator().manual_seed(SEED)
    init = torch.randn((len(PROMPTS), channels, size // f, size // f), generator=generator)
    tensors = {"latents.init": init.contiguous()}
    schedulers = {"dpm": pipe.scheduler, "ddim": DDIMScheduler.from_config(pipe.scheduler.config)}
    for name, scheduler in schedulers.items():
        pipe.scheduler = scheduler
        with torch.no_grad():
            latents = pipe(PROMPTS, height=size, width=size, num_inference_steps=STEPS,
                           guidance_scale=GUIDANCE, latents=init.clone(), output_type="latent").images
        tensors[f"{name}.latents"] = latents.contiguous()
        print(f"{name}: final latents mean {latents.mean():.4f} std {latents.std():.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"prompts": "|".join(PROMPTS), "steps": str(STEPS),
                                           "guidance": str(GUIDANCE)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
