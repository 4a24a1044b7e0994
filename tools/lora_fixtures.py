"""Golden values for cidm-lora's parity tests, made with diffusers and peft.

Uses the tiny SD1-style UNet of crates/cidm-diffusion/tests/fixtures/sd1-model (written by
tools/unet_fixtures.py) and writes, under crates/cidm-lora/tests/fixtures/:

- peft-lora.safetensors: a peft LoRA (rank 4, alpha 8, to_q/to_k/to_v/to_out.0 of every
  cross-attention, lora_A from peft's Kaiming init, lora_B set to random values so that the
  adapter changes the output), saved as diffusers' `save_lora_weights` saves a peft state dict,
  with the peft config in the `lora_adapter_metadata` header entry;
- kohya-lora.safetensors: the same adapter with kohya keys and per-module `.alpha` scalars;
  one module stores alpha 4 with its lora_up doubled (the same function), so that loaders
  must honour per-module alphas;
- lora-io.safetensors: fixed inputs, the base UNet's output, peft's output with the LoRA
  (`peft.out`), and diffusers' output with rust-lora.safetensors loaded through
  `load_lora_weights`' loader (`rust.out`).

rust-lora.safetensors is written by the Rust test `rust_written_file` (run it with
CIDM_LORA_BLESS=1 to rewrite it); this script checks that diffusers loads it with the rank,
alpha and targets it declares and records diffusers' output with it. So the order after a
change of the Rust writer is: bless the Rust file, run this script, run the Rust tests.

    pip install torch diffusers==0.42.1 peft safetensors numpy
    python tools/lora_fixtures.py
"""

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "crates" / "cidm-diffusion" / "tests" / "fixtures" / "sd1-model" / "unet"
OUT = ROOT / "crates" / "cidm-lora" / "tests" / "fixtures"
TARGETS = ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
RANK, ALPHA = 4, 8
# The kohya module whose alpha is stored as ALPHA / 2 with its up factor doubled.
HALVED_ALPHA_MODULE = "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_v"
# What the Rust test declares for rust-lora.safetensors.
RUST_RANK, RUST_ALPHA = 2, 3


def load_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(MODEL).eval()


def inputs() -> dict:
    generator = torch.Generator().manual_seed(2024)
    return {
        "sample": torch.randn(2, 4, 8, 8, generator=generator),
        "timesteps": torch.tensor([10.0, 700.0]),
        "context": torch.randn(2, 5, 24, generator=generator),
    }


def run(unet: UNet2DConditionModel, io: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(io["sample"], io["timesteps"], encoder_hidden_states=io["context"]).sample


def peft_lora(io: dict, tensors: dict) -> None:
    """Adds the peft LoRA, records its output and writes the peft and kohya files."""
    torch.manual_seed(0)
    unet = load_unet()
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    tensors["peft.out"] = run(unet, io)

    state = get_peft_model_state_dict(unet)
    metadata = unet.peft_config["default"].to_dict()
    # peft keeps target_modules as a set, whose order changes with Python's hash seed: sort it
    # so that re-running the script reproduces the committed file byte for byte.
    metadata["target_modules"] = sorted(metadata["target_modules"])
    StableDiffusionPipeline.save_lora_weights(
        OUT,
        unet_lora_layers=state,
        unet_lora_adapter_metadata=metadata,
        weight_name="peft-lora.safetensors",
    )

    kohya = {}
    for key, value in state.items():
        module, factor = key.rsplit(".lora_", 1)
        stem = "lora_unet_" + module.replace(".", "_")
        alpha = ALPHA
        if module == HALVED_ALPHA_MODULE:
            alpha = ALPHA / 2
            if factor.startswith("B"):
                value = value * 2
        if factor.startswith("A"):
            kohya[f"{stem}.lora_down.weight"] = value.contiguous()
            kohya[f"{stem}.alpha"] = torch.tensor(float(alpha))
        else:
            kohya[f"{stem}.lora_up.weight"] = value.contiguous()
    assert f"lora_unet_{HALVED_ALPHA_MODULE.replace('.', '_')}.alpha" in kohya, "module to halve is missing"
    save_file(kohya, OUT / "kohya-lora.safetensors")


def rust_lora(io: dict, tensors: dict) -> None:
    """Loads the Rust-written file as diffusers' `load_lora_weights` does, checks the rank, alpha
    and factors diffusers injected, and records the output."""
    path = OUT / "rust-lora.safetensors"
    if not path.exists():
        print(f"{path.name} is missing: run the Rust test rust_written_file with CIDM_LORA_BLESS=1 first")
        return
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    unet = load_unet()
    # What `StableDiffusionPipeline.load_lora_weights` does, without building a whole pipeline.
    state, network_alphas, metadata = StableDiffusionPipeline.lora_state_dict(
        str(OUT), weight_name=path.name, return_lora_metadata=True
    )
    StableDiffusionPipeline.load_lora_into_unet(
        state, network_alphas, unet, adapter_name="rust", metadata=metadata
    )
    config = unet.peft_config["rust"]
    assert (config.r, config.lora_alpha) == (RUST_RANK, RUST_ALPHA), (config.r, config.lora_alpha)
    loaded = get_peft_model_state_dict(unet, adapter_name="rust")
    assert len(loaded) == len(keys), f"diffusers injected {len(loaded)} factors, the file has {len(keys)}"
    with safe_open(path, "pt") as f:
        for key, value in loaded.items():
            assert torch.equal(value, f.get_tensor(f"unet.{key}")), key
    print(f"diffusers loaded {path.name}: r={config.r}, lora_alpha={config.lora_alpha}, {len(keys)} factors")
    tensors["rust.out"] = run(unet, io)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    io = inputs()
    tensors = dict(io)
    tensors["base.out"] = run(load_unet(), io)
    peft_lora(io, tensors)
    rust_lora(io, tensors)
    for name in ("peft.out", "rust.out"):
        if name in tensors:
            change = (tensors[name] - tensors["base.out"]).abs().max().item()
            print(f"{name}: max change from the base output {change:.3f}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "lora-io.safetensors")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
