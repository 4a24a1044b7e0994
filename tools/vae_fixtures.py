"""Golden values for cidm-diffusion's AutoencoderKL parity tests, made with diffusers.

Writes, under crates/cidm-diffusion/tests/fixtures/:

- vae-model/: a tiny random AutoencoderKL in diffusers layout (three blocks of distinct widths,
  two ResNets per encoder block, norms perturbed so that they matter, SD3-style scaling and
  shift factors so that both are exercised);
- vae-deprecated-model/: the same weights under the deprecated attention names many SD 1.x VAE
  files still use (`query`, `key`, `value`, `proj_attn`), the encoder's as 1x1-conv-shaped
  `[c, c, 1, 1]` tensors as the original LDM conversion left them, the decoder's as `[c, c]`;
- vae-io.safetensors: inputs and diffusers' outputs: the posterior's mean and clamped logvar
  for a non-square and an odd-sized image, the decoder's output for non-square latents, the
  scaled latents and pipeline decode the pipelines compute, and diffusers' u8 RGB conversion.

Everything is seeded, so re-running reproduces the committed files.

    pip install torch diffusers==0.42.1 safetensors numpy
    python tools/vae_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "crates" / "cidm-diffusion" / "tests" / "fixtures"

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 12, 16),
    layers_per_block=2,
    norm_num_groups=4,
    latent_channels=4,
    sample_size=32,
    # Stable Diffusion 3's values: a shift as well as a scale.
    scaling_factor=1.5305,
    shift_factor=0.0609,
)

# Current diffusers name -> deprecated name of the mid-block attention projections.
DEPRECATED = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def randomize(model: AutoencoderKL, generator: torch.Generator) -> None:
    """Default init leaves norms at identity; perturb them so that every parameter matters."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn(param.shape, generator=generator))


def deprecated_state_dict(model: AutoencoderKL, conv_prefixes: tuple[str, ...]) -> dict:
    """The model's weights under the deprecated attention names; weights of attentions under
    `conv_prefixes` get the 1x1-conv shape `[c, c, 1, 1]`."""
    renamed = {}
    for key, value in model.state_dict().items():
        for new, old in DEPRECATED.items():
            marker = f".attentions.0.{new}."
            if marker in key:
                key = key.replace(marker, f".attentions.0.{old}.")
                if key.endswith(".weight") and key.startswith(conv_prefixes):
                    value = value[:, :, None, None]
        renamed[key] = value.contiguous()
    return renamed


def check_inverse_of_diffusers(model: AutoencoderKL) -> None:
    """diffusers' own loader maps the linear-shaped deprecated names back to the current ones."""
    renamed = deprecated_state_dict(model, conv_prefixes=())
    fixed = model._fix_state_dict_keys_on_load(dict(renamed))
    assert sorted(fixed) == sorted(model.state_dict()), "renaming is not diffusers' inverse"


def write_model(root: Path) -> None:
    (root / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}, indent=2)
    )


def rgb_bytes(images: torch.Tensor) -> torch.Tensor:
    """diffusers' image processor output as PIL images, back to `[batch, h, w, 3]` values 0..255."""
    pil = VaeImageProcessor().postprocess(images, output_type="pil")
    return torch.from_numpy(np.stack([np.asarray(p) for p in pil]).astype(np.float32))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(100)
    model = AutoencoderKL(**CONFIG).eval()
    randomize(model, generator)
    check_inverse_of_diffusers(model)

    root = OUT / "vae-model"
    model.save_pretrained(root / "vae", safe_serialization=True)
    write_model(root)
    old = OUT / "vae-deprecated-model"
    (old / "vae").mkdir(parents=True, exist_ok=True)
    (old / "vae" / "config.json").write_text((root / "vae" / "config.json").read_text())
    save_file(deprecated_state_dict(model, ("encoder.",)), old / "vae" / "diffusion_pytorch_model.safetensors")
    write_model(old)

    scale, shift = CONFIG["scaling_factor"], CONFIG["shift_factor"]
    tensors = {}
    with torch.no_grad():
        # Non-square (24 x 20 -> 6 x 5) and odd (19 x 13 -> 4 x 3 through the padding-0
        # downsamplers) images.
        for case, shape in {"even": (2, 3, 24, 20), "odd": (1, 3, 19, 13)}.items():
            image = torch.rand(shape, generator=generator) * 2 - 1
            posterior = model.encode(image).latent_dist
            tensors[f"encode.{case}.image"] = image
            tensors[f"encode.{case}.mean"] = posterior.mean
            tensors[f"encode.{case}.logvar"] = posterior.logvar
        # What a training step or img2img does with the posterior: sample with given noise,
        # then shift and scale (SD3 pipelines; SD 1.x has no shift).
        posterior = model.encode(tensors["encode.even.image"]).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        tensors["latents.noise"] = noise
        tensors["latents.scaled"] = (posterior.mean + posterior.std * noise - shift) * scale

        latents = torch.randn(2, 4, 5, 7, generator=generator)
        decoded = model.decode(latents).sample
        tensors["decode.latents"] = latents
        tensors["decode.image"] = decoded
        # The pipelines' decode of scaled latents: latents / scaling_factor + shift_factor.
        tensors["pipeline.image"] = model.decode(latents / scale + shift).sample

    edges = torch.linspace(-1.5, 1.5, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    tensors["rgb.edges"] = edges
    tensors["rgb.edges.bytes"] = rgb_bytes(edges)
    tensors["rgb.decoded.bytes"] = rgb_bytes(decoded)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "vae-io.safetensors")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
