"""Golden values for the end-to-end text-to-image parity test, made with diffusers.

Builds a tiny random Stable Diffusion pipeline in diffusers layout (tokenizer, CLIP text
encoder, UNet, VAE, scheduler config, model_index.json) under
crates/cidm-diffusion/tests/fixtures/pipeline-model/, runs diffusers' StableDiffusionPipeline
on given initial latents with classifier-free guidance and a negative prompt, with DDIM and
with DPM-Solver++ 2M, and stores the initial latents, diffusers' final latents and decoded
image in pipeline-io.safetensors. The tokenizer is the real CLIP BPE (tests/fixtures/
clip-tokenizer, made by tools/clip_fixtures.py) cut to its first merges, so that the text
encoder's vocabulary stays small.

    pip install torch diffusers==0.42.1 transformers safetensors numpy
    python tools/clip_fixtures.py      # once, for the CLIP vocabulary
    python tools/pipeline_fixtures.py
"""

import json
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "crates" / "cidm-diffusion" / "tests" / "fixtures"
OUT = FIXTURES / "pipeline-model"
MERGES = 488  # 512 byte tokens + 488 merges + 2 specials = a 1002-token vocabulary
PROMPT = "a photo of a red star on the left"
NEGATIVE = "blurry, low quality"
STEPS = 6
GUIDANCE = 7.5


def small_tokenizer(folder: Path) -> CLIPTokenizer:
    """The real CLIP BPE restricted to its first MERGES merges (a valid BPE of its own)."""
    source = FIXTURES / "clip-tokenizer"
    vocab = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    merges = (source / "merges.txt").read_text(encoding="utf-8").split("\n")[1 : MERGES + 1]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    tokens = [token for token, _ in by_id[:512]] + ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def randomize_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn(param.shape, generator=generator))


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(7)
    tokenizer = small_tokenizer(OUT / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=len(tokenizer) - 2,
        eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
    )).eval()
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=16,
    ).eval()
    for model in (text_encoder, unet, vae):
        randomize_norms(model, generator)
    # Stable Diffusion 1.5's scheduler settings.
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(OUT, safe_serialization=True)
    # Run what a user of the directory gets: the pipeline as diffusers loads it from disk.
    pipe = StableDiffusionPipeline.from_pretrained(OUT, safety_checker=None, requires_safety_checker=False)
    scheduler = pipe.scheduler

    init = torch.randn(2, 4, 8, 8, generator=generator)
    tensors = {"latents.init": init}
    with torch.no_grad():
        for name, sched in {"ddim": scheduler, "dpm": DPMSolverMultistepScheduler.from_config(scheduler.config)}.items():
            pipe.scheduler = sched
            common = dict(prompt=[PROMPT, "a blue ring"], negative_prompt=[NEGATIVE, ""], num_inference_steps=STEPS,
                          guidance_scale=GUIDANCE, height=16, width=16, latents=init.clone())
            tensors[f"{name}.latents"] = pipe(output_type="latent", **common).images
            tensors[f"{name}.image"] = torch.from_numpy(pipe(output_type="np", **common).images.copy())
    save_file({k: v.contiguous() for k, v in tensors.items()}, FIXTURES / "pipeline-io.safetensors",
              metadata={"prompt": PROMPT, "prompt2": "a blue ring", "negative": NEGATIVE, "steps": str(STEPS),
                        "guidance": str(GUIDANCE)})
    print("wrote", OUT)


if __name__ == "__main__":
    main()
