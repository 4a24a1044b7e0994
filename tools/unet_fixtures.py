"""Golden values for cidm-diffusion's UNet parity tests, made with diffusers.

Writes tiny random UNets in diffusers layout (an SD1-style one with conv projections and one
head count for all blocks, an SD2-style one with linear projections, a per-block head list,
two transformer blocks in one layer and non-default timestep embedding options), their inputs
and diffusers' outputs, under crates/cidm-diffusion/tests/fixtures/. Everything is seeded, so
re-running reproduces the committed files.

    pip install torch diffusers==0.42.1 safetensors numpy
    python tools/unet_fixtures.py
"""

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "crates" / "cidm-diffusion" / "tests" / "fixtures"

CONFIGS = {
    "sd1": dict(
        sample_size=16,
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=4,
        norm_num_groups=8,
    ),
    "sd2": dict(
        sample_size=16,
        block_out_channels=(16, 32, 48),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=20,
        attention_head_dim=(2, 4, 4),
        transformer_layers_per_block=(1, 1, 2),
        use_linear_projection=True,
        upcast_attention=True,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_num_groups=8,
    ),
}


def randomize(model: UNet2DConditionModel, generator: torch.Generator) -> None:
    """Default init leaves norms at identity; perturb them so that every parameter matters."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn(param.shape, generator=generator))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for index, (name, config) in enumerate(CONFIGS.items()):
        torch.manual_seed(index)
        generator = torch.Generator().manual_seed(100 + index)
        model = UNet2DConditionModel(**config).eval()
        randomize(model, generator)
        root = OUT / f"{name}-model"
        model.save_pretrained(root / "unet", safe_serialization=True)
        (root / "model_index.json").write_text(
            json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}, indent=2)
        )
        d = config["cross_attention_dim"]
        cases = {
            # Two samples with different timesteps, one resolution divisible by 4.
            "even": (torch.randn(2, 4, 16, 12, generator=generator), torch.tensor([10.0, 981.0]), torch.randn(2, 7, d, generator=generator)),
            # Odd sizes exercise the upsampler's target size (9 -> 5 -> 3 -> 5 -> 9).
            "odd": (torch.randn(1, 4, 9, 11, generator=generator), torch.tensor([500.0]), torch.randn(1, 5, d, generator=generator)),
        }
        tensors = {}
        with torch.no_grad():
            for case, (sample, t, context) in cases.items():
                out = model(sample, t, encoder_hidden_states=context).sample
                tensors[f"{case}.sample"] = sample
                tensors[f"{case}.timesteps"] = t
                tensors[f"{case}.context"] = context
                tensors[f"{case}.out"] = out
        save_file(tensors, OUT / f"{name}-io.safetensors")
        if name == "sd2":
            # Reduced-precision files of the same weights, as diffusers and plain safetensors write them.
            bf16 = {k: v.bfloat16().contiguous() for k, v in model.state_dict().items()}
            save_file(bf16, root / "unet" / "diffusion_pytorch_model.bf16.safetensors")
            model.half().save_pretrained(root / "unet", safe_serialization=True, variant="fp16")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
