"""Golden values for cidm-diffusion's CLIP tokenizer and text-encoder parity tests.

Writes under crates/cidm-diffusion/tests/fixtures/:

- clip-tokenizer/: the real CLIP BPE vocabulary (49408 tokens) as vocab.json + merges.txt, built
  from the `bpe_simple_vocab_16e6.txt.gz` that open-clip-torch ships, exactly as OpenAI CLIP's
  SimpleTokenizer and Hugging Face's openai/clip-vit-large-patch14 do; plus the
  tokenizer_config.json and special_tokens_map.json of the Stable Diffusion 1.5 tokenizer folder.
- clip-tokenizer-sd2-config/: the two config files of an SD 2.x tokenizer folder (pad token `!`);
  the tests pair them with the vocabulary above.
- clip-tokenizer-cases.json: transformers' CLIPTokenizer ids for awkward prompts, padded and
  truncated to 77 as diffusers calls it, for the SD 1.5 folder, the SD 2.x configs, and the SD 1.5
  folder after adding the concept tokens `<dog1>` and `<cat2>`.
- clip-quick-model/, clip-gelu-model/: tiny random CLIPTextModels in diffusers layout
  (model_index.json + text_encoder/{config.json, model.safetensors}); the quick one with the
  tensor names transformers 5 writes (no `text_model.` prefix), the gelu one with the names of
  the Stable Diffusion checkpoints (`text_model.` prefix) and the int64
  `text_model.embeddings.position_ids` buffer that older checkpoints store.
- clip-quick-io.safetensors, clip-gelu-io.safetensors: input ids and transformers' outputs
  (last_hidden_state, and diffusers' clip_skip 1 and 2: hidden_states[-(k+1)] through
  final_layer_norm).

Everything is seeded, so re-running reproduces the committed files.

    pip install torch transformers open-clip-torch safetensors numpy
    python tools/clip_fixtures.py

open-clip-torch is only read for its vocabulary file (located without importing the package), so
`pip install --no-deps open-clip-torch` is enough.
"""

import gzip
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

OUT = Path(__file__).resolve().parent.parent / "crates" / "cidm-diffusion" / "tests" / "fixtures"
MAX_LENGTH = 77

PROMPTS = [
    "a photo of a dog",
    "A PHOTO of a Dog, in the SNOW!!!",
    "Hello,world...how's it going? (fine) [ok] {x} <y>",
    "  leading and trailing spaces  ",
    "multiple   spaces\n\nnew\tlines\r\nand tabs",
    "caf\u00e9 na\u00efve \u00dcn\u00efc\u00f6d\u00e9 \u00c5ngstr\u00f6m",
    "decomposed e\u0301 vs composed \u00e9",
    "emoji \U0001f436\U0001f680 ok \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u6771\u4eac\u306e\u5199\u771f \u0444\u043e\u0442\u043e \u0635\u0648\u0631\u0629",
    "numbers 12345 3.14 1,000,000 2nd 10x",
    "it's they're we've I'm you'll he'd don't",
    "IT'S LOUD, ISN'T IT",
    "wow! a!b ?!? ...",
    "nbsp\u00a0ideographic\u3000nel\u0085line\u2028zwsp\u200bbom\ufeffend",
    "<|startoftext|> a <|endoftext|> b <|ENDOFTEXT|> c",
    "a <dog1> dog next to <cat2>",
    "a painting of a dog in the style of van gogh, trending on artstation, " * 6,
    "",
]

ADDED = ["<dog1>", "<cat2>"]
ADDED_PROMPTS = [
    "a photo of a <dog1> dog",
    "a<dog1>dog<cat2>cat",
    "A <DOG1> Dog And <Cat2>",
    "<dog1><dog1> <cat2>",
    "<dog1 > is not <dog1>",
    "a <dog1> dog " * 30,
]


def bytes_to_unicode() -> dict:
    """GPT-2's reversible byte to printable-character table, as CLIP's SimpleTokenizer has it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
    bs += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_vocabulary(folder: Path) -> None:
    """vocab.json + merges.txt from open_clip's merge list, in OpenAI CLIP's token order."""
    package = Path(importlib.util.find_spec("open_clip").origin).parent
    lines = gzip.open(package / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    folder.mkdir(parents=True, exist_ok=True)
    encoder = {token: i for i, token in enumerate(vocab)}
    (folder / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    body = "\n".join(" ".join(m) for m in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + body + "\n", encoding="utf-8")


def added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_configs(folder: Path, pad: str) -> None:
    """tokenizer_config.json and special_tokens_map.json as the SD 1.5 / 2.x folders have them."""
    typed = lambda content: {"__type": "AddedToken", **added_token(content)}
    config = {
        "add_prefix_space": False,
        "bos_token": typed("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": typed("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": typed("<|endoftext|>"),
    }
    special = {
        "bos_token": added_token("<|startoftext|>"),
        "eos_token": added_token("<|endoftext|>"),
        "pad_token": pad,
        "unk_token": added_token("<|endoftext|>"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def encode_cases(tokenizer: CLIPTokenizer, prompts: list) -> list:
    """ids as diffusers' encode_prompt asks for them, and whether truncation dropped tokens."""
    cases = []
    for prompt in prompts:
        ids = tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
        full = tokenizer(prompt)["input_ids"]
        assert len(ids) == MAX_LENGTH
        cases.append({"prompt": prompt, "ids": ids, "truncated": len(full) > MAX_LENGTH})
    return cases


def tokenizer_fixtures() -> None:
    folder = OUT / "clip-tokenizer"
    write_vocabulary(folder)
    write_configs(folder, "<|endoftext|>")
    write_configs(OUT / "clip-tokenizer-sd2-config", "!")

    sd15 = CLIPTokenizer.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["vocab.json", "merges.txt"]:
            shutil.copy(folder / name, Path(tmp) / name)
        write_configs(Path(tmp), "!")
        sd2 = CLIPTokenizer.from_pretrained(tmp)
    assert sd2.pad_token_id == 0

    extended = CLIPTokenizer.from_pretrained(folder)
    extended.add_tokens(ADDED)
    added_ids = extended.convert_tokens_to_ids(ADDED)
    assert added_ids == [49408, 49409]

    cases = {
        "sd15": encode_cases(sd15, PROMPTS),
        "sd2": encode_cases(sd2, PROMPTS),
        "added": {"tokens": ADDED, "ids": added_ids, "cases": encode_cases(extended, ADDED_PROMPTS + PROMPTS)},
    }
    (OUT / "clip-tokenizer-cases.json").write_text(one_case_per_line(cases), encoding="utf-8")


def one_case_per_line(value, indent: str = "") -> str:
    """JSON with objects and lists of objects spread out, and each case on one line."""
    inner = indent + " "
    if isinstance(value, dict) and "prompt" not in value:
        items = [f"{inner}{json.dumps(k)}: {one_case_per_line(v, inner)}" for k, v in value.items()]
        text = "{\n" + ",\n".join(items) + "\n" + indent + "}"
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        text = "[\n" + ",\n".join(inner + one_case_per_line(v, inner) for v in value) + "\n" + indent + "]"
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text + ("\n" if not indent else "")


MODELS = {
    "quick": dict(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=16,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=999,
    ),
    "gelu": dict(
        vocab_size=600,
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=12,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    ),
}


def randomize(model: CLIPTextModel, generator: torch.Generator) -> None:
    """Default init leaves norms at identity and biases at zero; perturb them so that every
    parameter matters, and give the embeddings a spread like a trained model's."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "embedding" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def final_norm(model: CLIPTextModel) -> torch.nn.LayerNorm:
    """The final layer norm (transformers 5 dropped the `text_model` wrapper module)."""
    return model.text_model.final_layer_norm if hasattr(model, "text_model") else model.final_layer_norm


def model_fixtures() -> None:
    for index, (name, config) in enumerate(MODELS.items()):
        torch.manual_seed(index)
        generator = torch.Generator().manual_seed(200 + index)
        model = CLIPTextModel(CLIPTextConfig(**config)).eval()
        randomize(model, generator)
        root = OUT / f"clip-{name}-model"
        folder = root / "text_encoder"
        model.save_pretrained(folder, safe_serialization=True)
        if name == "gelu":
            # transformers 5 saves names without the `text_model.` prefix; the Stable Diffusion
            # checkpoints have it, and older ones also store the int64 `position_ids` buffer,
            # which loaders must accept and ignore. This fixture has that older layout.
            weights = {f"text_model.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
            weights["text_model.embeddings.position_ids"] = torch.arange(config["max_position_embeddings"]).unsqueeze(0)
            save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        (root / "model_index.json").write_text(
            json.dumps({"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"]}, indent=2) + "\n"
        )
        vocab, positions = config["vocab_size"], config["max_position_embeddings"]
        tensors = {}
        # A short batch of two prompts and one prompt of the full context length.
        for case, shape in [("short", (2, 7)), ("full", (1, positions))]:
            ids = torch.randint(0, vocab, shape, generator=generator)
            ids[:, 0] = config["bos_token_id"]
            ids[:, -1] = config["eos_token_id"]
            with torch.no_grad():
                out = model(ids, output_hidden_states=True)
                tensors[f"{case}.ids"] = ids.to(torch.float32)  # exact below 2^24; the loader reads floats
                tensors[f"{case}.last_hidden_state"] = out.last_hidden_state
                for skip in (1, 2):
                    hidden = out.hidden_states[-(skip + 1)]
                    tensors[f"{case}.clip_skip_{skip}"] = final_norm(model)(hidden)
        save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / f"clip-{name}-io.safetensors")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer_fixtures()
    model_fixtures()


if __name__ == "__main__":
    main()
