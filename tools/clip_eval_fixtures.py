"""Golden values for the CLIP vision model, the CLIPModel loader, CLIP image preprocessing and
the paper's CLIP metrics (image alignment IA, text alignment TA).

Writes:

- crates/cidm-diffusion/tests/fixtures/clip-vit-model/: a tiny random transformers `CLIPModel`
  directory as `save_pretrained` writes it (config.json with text_config and vision_config,
  model.safetensors with `text_model.*`, `vision_model.*`, `visual_projection.weight`,
  `text_projection.weight`, `logit_scale`), its `preprocessor_config.json` (a CLIP image
  processor with a 32-pixel shortest edge and a 32x32 crop) and tokenizer files: the small CLIP
  BPE of tests/fixtures/pipeline-model/tokenizer (made by tools/pipeline_fixtures.py).
- crates/cidm-diffusion/tests/fixtures/clip-vit-io.safetensors: for five small images, the RGB
  bytes after transformers' RGB conversion (alpha composited onto white), the preprocessed
  pixel values, the projected image embeddings; for a list of prompts, the token ids and the
  projected text embeddings; the logit scale.
- crates/cidm-eval/tests/fixtures/: the five images as PNG, three "generated" ones with .txt
  captions beside them and two "references", and clip-metrics.json with IA and TA (x100) as
  the paper defines them, computed here from transformers' embeddings.

The image processor is transformers' PIL backend (`CLIPImageProcessorPil`, what
`CLIPImageProcessor` was before transformers 5): Pillow's bicubic resampling is what OpenAI
CLIP's own preprocessing uses, so the paper's numbers were measured with it. The images cover
a downscale in both directions, an upscale, an RGBA image with partial transparency and a
grayscale image.

Everything is seeded, so re-running reproduces the committed files.

    pip install torch transformers safetensors numpy pillow
    python tools/pipeline_fixtures.py     # once, for the small tokenizer
    python tools/clip_eval_fixtures.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
CORE_FIXTURES = ROOT / "crates" / "cidm-diffusion" / "tests" / "fixtures"
EVAL_FIXTURES = ROOT / "crates" / "cidm-eval" / "tests" / "fixtures"
MODEL = CORE_FIXTURES / "clip-vit-model"
TOKENIZER = CORE_FIXTURES / "pipeline-model" / "tokenizer"
TOKENIZER_FILES = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"]
MAX_LENGTH = 77
CROP = 32

# name -> (folder, caption or None); captions use the concept word `<dog1>`, which the metric
# replaces by its class word before encoding, as the paper's TA does.
IMAGES = {
    "gradient": ("generated", "a photo of a <dog1> on the grass"),
    "rings": ("generated", "a <dog1> wearing a red hat"),
    "gray": ("generated", "a pencil drawing of a <dog1>"),
    "stripes": ("references", None),
    "blobs": ("references", None),
}
CLASS_WORDS = {"<dog1>": "dog"}
EXTRA_PROMPTS = ["", "a dog " * 40]


def make_images(rng: np.random.Generator) -> dict:
    """Small deterministic test images: smooth ramps with sharp edges and noise, so that
    resampling differences would show."""
    y, x = np.mgrid[0:70, 0:45]
    gradient = np.stack([x * 255 // 44, y * 255 // 69, ((x // 5 + y // 7) % 2) * 200 + 20], axis=-1)
    gradient = np.clip(gradient + rng.integers(-12, 13, gradient.shape), 0, 255).astype(np.uint8)

    y, x = np.mgrid[0:50, 0:80]
    radius = np.hypot(x - 40, y - 25)
    rings = np.zeros((50, 80, 4), np.uint8)
    rings[..., 0] = (np.sin(radius / 3) * 120 + 128).astype(np.uint8)
    rings[..., 1] = (x * 3).clip(0, 255)
    rings[..., 2] = 255 - (y * 5).clip(0, 255)
    rings[..., 3] = np.clip(255 - radius * 6, 0, 255).astype(np.uint8)  # opaque centre, clear corners

    y, x = np.mgrid[0:24, 0:24]
    gray = ((x * 11 + y * 7) % 256).astype(np.uint8)

    y, x = np.mgrid[0:40, 0:40]
    stripes = np.stack([(x % 8 < 4) * 255, np.full_like(x, 90), (y * 6).clip(0, 255)], axis=-1).astype(np.uint8)

    blobs = rng.integers(0, 256, (32, 64, 3)).astype(np.uint8)
    blobs[8:24, 16:48] = [250, 30, 60]
    return {
        "gradient": Image.fromarray(gradient, "RGB"),
        "rings": Image.fromarray(rings, "RGBA"),
        "gray": Image.fromarray(gray, "L"),
        "stripes": Image.fromarray(stripes, "RGB"),
        "blobs": Image.fromarray(blobs, "RGB"),
    }


def randomize(model: CLIPModel, generator: torch.Generator) -> None:
    """Default init leaves norms at identity and biases at zero; perturb them so that every
    parameter matters, and give the embeddings a spread like a trained model's."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                continue
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "embedding" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def build_model(vocab_size: int, bos: int, eos: int) -> CLIPModel:
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
            bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            image_size=CROP, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    # Seed 16: the first from 11 whose caption cosines take both signs (main asserts it), so
    # that the test exercises the clamp of max(cos, 0).
    randomize(model, torch.Generator().manual_seed(16))
    return model


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    MODEL.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER / name, MODEL / name)
    tokenizer = CLIPTokenizer.from_pretrained(MODEL)
    model = build_model(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    model.save_pretrained(MODEL, safe_serialization=True)
    processor = CLIPImageProcessorPil(size={"shortest_edge": CROP}, crop_size={"height": CROP, "width": CROP})
    processor.save_pretrained(MODEL)
    # What a user of the directory gets: everything as loaded back from disk.
    model = CLIPModel.from_pretrained(MODEL).eval()
    processor = CLIPImageProcessorPil.from_pretrained(MODEL)

    images = make_images(np.random.default_rng(5))
    tensors = {"logit_scale": model.logit_scale.detach().reshape(1)}
    for folder in ["generated", "references"]:
        shutil.rmtree(EVAL_FIXTURES / folder, ignore_errors=True)
        (EVAL_FIXTURES / folder).mkdir(parents=True)
    embeds = {}
    for name, image in images.items():
        folder, caption = IMAGES[name]
        image.save(EVAL_FIXTURES / folder / f"{name}.png")
        if caption is not None:
            (EVAL_FIXTURES / folder / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        image = Image.open(EVAL_FIXTURES / folder / f"{name}.png")
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            embed = model.get_image_features(pixel_values=pixels).pooler_output
        tensors[f"{name}.rgb"] = torch.from_numpy(processor.convert_to_rgb(image).astype(np.float32))
        tensors[f"{name}.pixel_values"] = pixels
        tensors[f"{name}.image_embeds"] = embed
        embeds[name] = embed[0].numpy().astype(np.float64)

    captions = [IMAGES[name][1] for name in IMAGES if IMAGES[name][1] is not None]
    for word, class_word in CLASS_WORDS.items():
        captions = [c.replace(word, class_word) for c in captions]
    prompts = captions + EXTRA_PROMPTS
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
    tensors["prompts.ids"] = ids.to(torch.float32)  # exact below 2^24
    tensors["prompts.text_embeds"] = text
    save_file({k: v.contiguous() for k, v in tensors.items()}, CORE_FIXTURES / "clip-vit-io.safetensors",
              # One metadata key: safetensors writes several in hash order, so bytes would vary.
              metadata={"lists": json.dumps({"prompts": prompts, "images": list(IMAGES)})})

    generated = [name for name in IMAGES if IMAGES[name][0] == "generated"]
    references = [name for name in IMAGES if IMAGES[name][0] == "references"]
    gen = unit(np.stack([embeds[n] for n in generated]))
    ref = unit(np.stack([embeds[n] for n in references]))
    txt = unit(text[: len(captions)].numpy().astype(np.float64))
    pair_cos = gen @ ref.T
    text_cos = np.sum(gen * txt, axis=-1)
    assert (text_cos > 0).any() and (text_cos < 0).any(), f"want both signs to exercise max(cos, 0): {text_cos}"
    metrics = {
        "class_words": CLASS_WORDS,
        "generated": generated,
        "references": references,
        "prompts": captions,
        "image_alignment": float(100 * pair_cos.mean()),
        "image_alignment_per_image": [float(100 * v) for v in pair_cos.mean(axis=1)],
        "text_alignment": float(100 * np.mean(2.5 * np.maximum(text_cos, 0))),
        "text_cosine_per_image": [float(v) for v in text_cos],
    }
    (EVAL_FIXTURES / "clip-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
