#!/usr/bin/env python3
"""PyTorch reference of issue 8's GPU benchmark: times with torch, diffusers and peft the five
workloads (and attention, GroupNorm, LayerNorm, GEGLU, the convolution and the linear layers
alone at the UNet's shapes) that `cargo run --example gpu_bench -p cidm` times with burn, on
the same UNet config with random weights, and prints one line per measurement in the same
format with the prefix `torch`:

    torch NAME dtype=f16 device=cuda median_ms=49.300 min_ms=48.100 reps=10 [peak_mib=... mem=...
        [reserved_mib=...]]

The workloads (names as ours):
- unet_step_cfg_b2: one UNet step with classifier-free guidance, batch 2, SDPA attention.
- lora_train_step_b1: one LoRA training step (rank 4 on every cross-attention q/k/v/out via
  peft, batch 1, AdamW, global-norm clipping) as diffusers' train_text_to_image_lora.py does it:
  frozen UNet in the compute dtype, LoRA factors in f32, fp16 autocast for f16; with
  `torch.cuda.max_memory_allocated()` as peak_mib and `torch.cuda.max_memory_reserved()` as
  reserved_mib, what its caching allocator held at most, the like of ours' pool reading
  (process peak RSS on a CPU, no reserved_mib). Where peft is not installed
  (a GPU machine with torch and diffusers only), the same layer written in torch (`LoraLinear`,
  peft's forward and initialisation); the JSON record and the log say which ran.
- sample_dpmppN_cfg_b1: N-step DPMSolverMultistepScheduler (DPM-Solver++ 2M, SD 1.5's
  schedule) with guidance 7.5, batch 1, latents only (no VAE decode), as ours.
- ewa10_weights / ewa10_step_cfg_b2: elastic weight aggregation over 10 rank-4 tasks. It has
  no diffusers or peft equivalent (peft weights adapters per model, not per layer), so it is
  the same computation written in torch: each cross-attention projection becomes
  `base(x) + ((x D) * gates) U` with the 10 adapters stacked (rank 40), the per-layer
  weights are the `code` variant (cosine relations, psi with power 4) computed on the device.
- regional2_step_b4: regional cross-attention with 2 regions in one UNet call of 4 samples
  (unconditional, global, region 1, region 2), through an attention processor, then the
  noise composition of METHOD.md section 5.
- attn_qQ_kK_dD / attn_train_qQ_kK_dD: attention alone at each distinct shape of the UNet's
  attention layers (batch 2, standard-normal q, k, v): torch's scaled_dot_product_attention
  (flash or memory-efficient kernels on a GPU), forward under inference mode, and forward plus
  backward of sum(out * w). The `_plain` variants compute what ours' plain path does: scores,
  softmax and the product with v in f32 from upcast inputs, the scores materialised.
- gn_cC_SxS / gn_train_cC_SxS: GroupNorm then SiLU alone (F.group_norm, F.silu: what
  diffusers' ResnetBlock2D runs) at each distinct ResNet norm shape of the UNet (batch 2,
  standard-normal x, scale around 1 and shift around 0), forward under inference mode, and
  forward plus backward of sum(out * w) for the gradients of x, scale and shift.
- ln_tT_dD / ln_train_tT_dD: LayerNorm alone (F.layer_norm, eps 1e-5: the norms of
  diffusers' BasicTransformerBlock) at each distinct transformer input of the UNet (batch 2,
  T rows of D values, standard-normal x, scale around 1 and shift around 0), forward under
  inference mode, and forward plus backward of sum(out * w).
- geglu_tT_dW / geglu_train_tT_dW: GEGLU alone (diffusers' GEGLU after its projection:
  `h, g = x.chunk(2, -1); h * F.gelu(g)`) on each distinct feed-forward input of the UNet
  (batch 2, T rows of W = 2 x 4 x the block's width, standard-normal x), forward under
  inference mode, and forward plus backward of sum(out * w).
- conv_cC_SxS / conv_train_cC_SxS: the ResNet blocks' 3x3 convolution alone (F.conv2d,
  padding 1, C channels in and out) at each level of the UNet (batch 2, standard-normal x,
  weights of variance 1 / fan-in), forward under inference mode, and forward plus backward
  of sum(out * w) for x's gradient (the weight frozen, as LoRA training keeps it). Ours has
  these records on Flex only (the CPU convolution).
- linear_tT_iI_oO / linear_train_tT_iI_oO: the transformer blocks' linear layers alone
  (F.linear with a bias, I features in and O out) at each distinct transformer input of the
  UNet: the attention's projection (D to D), the feed-forward's projection (D to 8 D) and its
  output (4 D to D) (batch 2, T rows, standard-normal x, weights of variance 1 / I), forward
  under inference mode, and forward plus backward of sum(out * w) for x's gradient (the
  weight frozen). Ours has these records on Flex only (the CPU linear layer).

Usage (device cuda when available, else cpu):

    python tools/gpu_bench_reference.py                 # SD 1.5 config, f16 and f32 on cuda
    python tools/gpu_bench_reference.py --tiny --reps 3 # the tiny config, e.g. on a CPU
    python tools/gpu_bench_reference.py --unet-config unet.json  # the config ours prints

With `--profile-dir DIR`, the UNet step and the LoRA step each run once more under
torch.profiler after their timing, written as DIR/torch_NAME_DTYPE.json (every operator with
the device time of the kernels it launched itself, CPU time on a CPU) for
`gpu_bench profile`, which compares them with ours' CubeCL kernel profile part by part, and
as DIR/torch_NAME_DTYPE.txt (torch's own table).

Requires torch and diffusers==0.42.1; peft where available.
"""

import argparse
import inspect
import json
import math
import re
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

try:
    from peft import LoraConfig
except ImportError:  # torch and diffusers only: add_lora falls back to LoraLinear
    LoraConfig = None

TOKENS = 77
GUIDANCE = 7.5
TIMESTEP = 500
RANK = 4
TASKS = 10
CONCEPT_ROWS = 2
EWA_ALPHA = 0.8  # EwaConfig::default().alpha (the released code's)
REGION_ALPHA = 0.1  # RegionalConfig::default().alpha
COSINE_EPS = 1e-8
CROSS_ATTENTION_TARGETS = r".*attn2\.(to_q|to_k|to_v|to_out\.0)$"

# diffusers' UNet2DConditionModel defaults are SD 1.5's except these two.
SD15 = {"sample_size": 64, "cross_attention_dim": 768}
# `--config tiny` of examples/gpu_bench.rs: SD 1.5's structure at widths 32/32/64/64.
TINY = {
    **SD15,
    "sample_size": 16,
    "cross_attention_dim": 32,
    "block_out_channels": [32, 32, 64, 64],
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
DTYPES = {"f16": torch.float16, "f32": torch.float32}


class Bench:
    """Device, dtype, sizes and the timing loop shared by the workloads."""

    def __init__(self, config, device, dtype_name, warmup, reps, profile_dir=None):
        self.config = config
        self.profile_dir = profile_dir
        self.device = torch.device(device)
        self.dtype_name = dtype_name
        self.dtype = DTYPES[dtype_name]
        self.warmup = warmup
        self.reps = reps
        self.latent = config["sample_size"]
        self.text_dim = config["cross_attention_dim"]

    def unet(self):
        """A UNet of the config with diffusers' random initialisation, in the compute dtype."""
        with torch.device(self.device):
            model = UNet2DConditionModel.from_config(self.config)
        return model.to(self.dtype)

    def randn(self, *shape, dtype=None):
        return torch.randn(*shape, device=self.device, dtype=dtype or self.dtype)

    def latents(self, batch):
        return self.randn(batch, self.config.get("in_channels", 4), self.latent, self.latent)

    def text(self, batch):
        return self.randn(batch, TOKENS, self.text_dim)

    def timestep(self):
        return torch.tensor([TIMESTEP], device=self.device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, work):
        """Median and minimum ms of `reps` timed runs after `warmup` untimed ones."""
        for _ in range(self.warmup):
            work()
        self.sync()
        times = []
        for _ in range(self.reps):
            start = time.perf_counter()
            work()
            self.sync()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), min(times)

    def profile(self, name, work):
        """With a profile directory: one more run of `work` under torch.profiler, its
        operators written as JSON for `gpu_bench profile`. An operator's own time is that of
        the kernels it launched itself, not its children's, so the operators add up to the
        run's device time (CPU time on a CPU, where there are no kernels)."""
        if not self.profile_dir:
            return
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            work()
            self.sync()
        averages = prof.key_averages()
        ops = []
        for event in averages:
            if event.device_type != DeviceType.CPU:
                continue
            us = event.self_device_time_total if cuda else event.self_cpu_time_total
            if us > 0:
                ops.append({"name": event.key, "ms": us / 1e3, "calls": event.count})
        stem = f"{self.profile_dir}/torch_{name}_{self.dtype_name}"
        with open(f"{stem}.json", "w") as f:
            json.dump({"workload": name, "dtype": self.dtype_name, "device": self.device.type,
                       "time": "device" if cuda else "cpu", "ops": ops}, f, indent=1)
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        with open(f"{stem}.txt", "w") as f:
            f.write(averages.table(sort_by=sort, row_limit=40))

    def line(self, name, timing, memory=None):
        median, fastest = timing
        text = (
            f"torch {name} dtype={self.dtype_name} device={self.device.type} "
            f"median_ms={median:.3f} min_ms={fastest:.3f} reps={self.reps}"
        )
        if memory is not None:
            text += f" peak_mib={memory[0]:.1f} mem={memory[1]}"
            if memory[2] is not None:
                text += f" reserved_mib={memory[2]:.1f}"
        print(text, flush=True)
        return {"name": name, "dtype": self.dtype_name, "device": self.device.type,
                "median_ms": median, "min_ms": fastest, "reps": self.reps,
                "peak_mib": memory[0] if memory else None,
                "mem": memory[1] if memory else None,
                "reserved_mib": memory[2] if memory else None}


def guided(noise):
    uncond, cond = noise.chunk(2)
    return uncond + GUIDANCE * (cond - uncond)


def peak_memory(bench):
    """(peak MiB, how it was read, the caching allocator's peak reservation in MiB or None)."""
    if bench.device.type == "cuda":
        return (torch.cuda.max_memory_allocated(bench.device) / 2**20, "cuda_max_allocated",
                torch.cuda.max_memory_reserved(bench.device) / 2**20)
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss", None


class LoraLinear(torch.nn.Module):
    """peft's LoRA `Linear` without peft: `base(x) + lora_B(lora_A(x)) * alpha / r` with the
    input cast to the factors' dtype, `lora_A` (down) Kaiming-uniform and `lora_B` (up) zero
    as peft initialises them, no dropout."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        device = base.weight.device
        self.base = base
        self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False, device=device)
        self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False, device=device)
        torch.nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        torch.nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype))) * self.scale


def add_lora(unet):
    """Rank-4 LoRA on every cross-attention projection, through diffusers' peft integration or,
    without peft, as `LoraLinear` on the modules peft would pick (full-name regex match).
    Returns which of the two ran."""
    if LoraConfig is not None:
        unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=CROSS_ATTENTION_TARGETS))
        return "peft"
    targets = [(name, module) for name, module in unet.named_modules()
               if isinstance(module, torch.nn.Linear) and re.fullmatch(CROSS_ATTENTION_TARGETS, name)]
    for name, module in targets:
        parent, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent), child, LoraLinear(module, RANK, RANK))
    return "torch"


def lora_train_step(bench):
    """diffusers' LoRA recipe: frozen UNet in the compute dtype, f32 factors, autocast."""
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(bench.device)
    unet = bench.unet()
    unet.requires_grad_(False)
    lora = add_lora(unet)
    print(f"# LoRA layers through {lora}", file=sys.stderr, flush=True)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    noisy, target = bench.latents(1), bench.latents(1)
    text, t = bench.text(1), bench.timestep()
    autocast = bench.dtype == torch.float16

    def step():
        with torch.autocast(bench.device.type, dtype=torch.float16, enabled=autocast):
            prediction = unet(noisy, t, encoder_hidden_states=text).sample
        loss = F.mse_loss(prediction.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    unet.train()
    record = bench.line("lora_train_step_b1", bench.measure(step), peak_memory(bench))
    record["lora"] = lora
    bench.profile("lora_train_step_b1", step)
    return record


def unet_step_cfg(bench, unet, name="unet_step_cfg_b2"):
    latents, text, t = bench.latents(2), bench.text(2), bench.timestep()

    def step():
        guided(unet(latents, t, encoder_hidden_states=text).sample)

    record = bench.line(name, bench.measure(step))
    bench.profile(name, step)
    return record


def sd15_dpm_solver():
    """SD 1.5's scheduler_config.json schedule under DPM-Solver++ 2M (diffusers defaults)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", steps_offset=1, solver_order=2,
        algorithm_type="dpmsolver++",
    )


def sampling(bench, unet, steps):
    scheduler = sd15_dpm_solver()
    noise, text = bench.latents(1), bench.text(2)

    def run():
        scheduler.set_timesteps(steps, device=bench.device)
        latents = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise_pred = guided(unet(model_input, t, encoder_hidden_states=text).sample)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
        return latents

    return bench.line(f"sample_dpmpp{steps}_cfg_b1", bench.measure(run))


class GatedLinear(torch.nn.Module):
    """`base(x) + ((x D) * gates) U`: the stacked adapters of all tasks with per-sample or
    shared gates `[batch or 1, total_rank]`, as the core's `AdaptableLinear` computes it."""

    def __init__(self, base, total_rank):
        super().__init__()
        self.base = base
        weight = base.weight
        self.down = torch.nn.Parameter(
            torch.randn(base.in_features, total_rank, device=weight.device, dtype=weight.dtype)
            / math.sqrt(base.in_features), requires_grad=False)
        self.up = torch.nn.Parameter(
            torch.randn(total_rank, base.out_features, device=weight.device, dtype=weight.dtype)
            * 0.01, requires_grad=False)
        self.gates = None

    def forward(self, x, gates=None):
        gates = self.gates if gates is None else gates
        return self.base(x) + ((x @ self.down) * gates[:, None, :]) @ self.up


def cross_attention_layers(unet):
    """The attn2 modules in the workspace's stable order: down, mid, up blocks."""
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    found = [(name, m) for name, m in unet.named_modules() if name.endswith("attn2")]
    found.sort(key=lambda item: rank[item[0].split(".")[0]])
    return [m for _, m in found]


class EwaModel:
    """A UNet with 10 rank-4 tasks stacked into gated projections, random task embeddings
    `[tasks, layers, 2, dim]` and one prompt's layer embeddings `[layers, 77, dim]`."""

    def __init__(self, bench):
        self.bench = bench
        self.unet = bench.unet().eval()
        self.layers = cross_attention_layers(self.unet)
        for attn in self.layers:
            for name in ("to_q", "to_k", "to_v"):
                setattr(attn, name, GatedLinear(getattr(attn, name), TASKS * RANK))
            attn.to_out[0] = GatedLinear(attn.to_out[0], TASKS * RANK)
        count = len(self.layers)
        self.tasks = bench.randn(TASKS, count, CONCEPT_ROWS, bench.text_dim)
        self.prompt = bench.randn(count, TOKENS, bench.text_dim)

    def projections(self, layer):
        attn = self.layers[layer]
        return (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0])

    def gates(self, prompt):
        """`code` weights per layer (mean over a task's concept rows of the best cosine over
        the prompt's rows, psi with power 4) as gates `[layers, tasks * rank]`."""
        p = F.normalize(prompt.float(), dim=-1, eps=COSINE_EPS)
        e = F.normalize(self.tasks.float(), dim=-1, eps=COSINE_EPS)
        cosine = torch.einsum("lpd,tlrd->ltrp", p, e)
        relations = cosine.amax(dim=-1).mean(dim=-1)
        scale = relations.abs().amax(dim=-1, keepdim=True)
        powered = (relations / scale.clamp_min(torch.finfo(torch.float32).tiny)) ** 4
        weights = powered / powered.sum(dim=-1, keepdim=True)
        gates = EWA_ALPHA * weights.repeat_interleave(RANK, dim=-1)
        return gates.to(self.bench.dtype)

    def set_gates(self, gates):
        for layer in range(len(self.layers)):
            for projection in self.projections(layer):
                projection.gates = gates[layer:layer + 1]


def ewa_weights(bench, model):
    return bench.line("ewa10_weights", bench.measure(lambda: model.set_gates(model.gates(model.prompt))))


def ewa_step_cfg(bench, model):
    latents, text, t = bench.latents(2), bench.text(2), bench.timestep()

    def step():
        model.set_gates(model.gates(model.prompt))
        guided(model.unet(latents, t, encoder_hidden_states=text).sample)

    return bench.line("ewa10_step_cfg_b2", bench.measure(step))


def box_mask(box, size):
    """Cells wholly inside `box` (x0, y0, x1, y1 in [0, 1]) of a size x size grid, as the
    regions crate rounds them: start up, end down."""
    x0, y0, x1, y1 = box
    rows = range(math.ceil(y0 * size - 1e-9), math.floor(y1 * size + 1e-9))
    cols = range(math.ceil(x0 * size - 1e-9), math.floor(x1 * size + 1e-9))
    mask = torch.zeros(size, size)
    mask[rows.start:rows.stop, cols.start:cols.stop] = 1.0
    return mask


class RegionalAttention:
    """Regional cross-attention of one layer: the sample's own attention (global gates), and
    for region u, attention to u's text through u's gates, replacing the output inside u's
    box for the samples u applies to (global: all regions; region u's sample: u alone),
    overlaps averaged."""

    def __init__(self, model, layer, regions):
        self.model, self.layer, self.regions = model, layer, regions
        self.masks = {}

    def mask(self, u, positions):
        size = math.isqrt(positions)
        key = (u, size)
        if key not in self.masks:
            box = self.regions["boxes"][u]
            self.masks[key] = box_mask(box, size).reshape(1, -1, 1).to(
                self.model.bench.device, self.model.bench.dtype)
        return self.masks[key]

    @staticmethod
    def attend(attn, x, context, gates=None):
        q = attn.to_q(x, gates)
        k = attn.to_k(context, gates)
        v = attn.to_v(context, gates)
        batch, heads = x.shape[0], attn.heads
        q, k, v = (s.view(batch, -1, heads, s.shape[-1] // heads).transpose(1, 2) for s in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, heads * q.shape[-1])
        return attn.to_out[1](attn.to_out[0](out, gates))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = self.attend(attn, hidden_states, encoder_hidden_states)
        total = torch.zeros_like(out)
        count = torch.zeros_like(out[..., :1])
        for u, (text, gates) in enumerate(zip(self.regions["texts"], self.regions["gates"])):
            samples = [1, 2 + u]
            mask = self.mask(u, hidden_states.shape[1])
            region = self.attend(attn, hidden_states[samples], text.expand(len(samples), -1, -1),
                                 gates[self.layer:self.layer + 1])
            total[samples] += region * mask
            count[samples] += mask
        return torch.where(count > 0, total / count.clamp_min(1.0), out)


def compose_noise(noise, masks):
    """E* = alpha E + (1 - alpha) mean_u E_u inside the boxes, E outside (METHOD.md 5)."""
    uncond, cond, regions = noise[:1], noise[1:2], noise[2:]
    full = uncond + GUIDANCE * (cond - uncond)
    per_region = uncond + GUIDANCE * (regions - uncond)
    covered = masks.sum(dim=0, keepdim=True)
    mean = (per_region * masks).sum(dim=0, keepdim=True) / covered.clamp_min(1.0)
    return torch.where(covered > 0, REGION_ALPHA * full + (1 - REGION_ALPHA) * mean, full)


def regional_step(bench, model):
    boxes = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
    equal = torch.full((len(model.layers), TASKS * RANK), EWA_ALPHA / TASKS,
                       device=bench.device, dtype=bench.dtype)
    model.set_gates(equal)
    regions = {"boxes": boxes, "texts": [bench.text(1) for _ in boxes], "gates": [equal for _ in boxes]}
    for layer, attn in enumerate(model.layers):
        attn.set_processor(RegionalAttention(model, layer, regions))
    masks = torch.stack([box_mask(b, bench.latent) for b in boxes]).unsqueeze(1).to(bench.device, bench.dtype)
    latents, t = bench.latents(1), bench.timestep()
    # Region samples run on the global text outside their box, as ours' batch does.
    uncond, prompt = bench.text(1), bench.text(1)
    text = torch.cat([uncond, *(prompt for _ in range(len(boxes) + 1))])

    def step():
        noise = model.unet(latents.expand(len(boxes) + 2, -1, -1, -1), t, encoder_hidden_states=text).sample
        compose_noise(noise, masks)

    return bench.line("regional2_step_b4", bench.measure(step))


def config_value(config, key):
    """A UNet config entry, or diffusers' default when the config leaves it out."""
    if key in config:
        return config[key]
    return inspect.signature(UNet2DConditionModel.__init__).parameters[key].default


def attention_shapes(config):
    """(heads, len_q, len_k, head_dim) of each distinct attention of the UNet, in ours' order:
    every down block with cross-attention and the mid block, self- then cross-attention."""
    channels = config_value(config, "block_out_channels")
    blocks = len(channels)
    heads = config_value(config, "num_attention_heads") or config_value(config, "attention_head_dim")
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * blocks
    down = config_value(config, "down_block_types")
    levels = [b for b, kind in enumerate(down) if kind.startswith("CrossAttn")] + [blocks - 1]
    shapes = []
    for b in levels:
        pixels = (config["sample_size"] >> b) ** 2
        for len_k in (pixels, TOKENS):
            shape = (heads[b], pixels, len_k, channels[b] // heads[b])
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def plain_attention(q, k, v):
    """Ours' plain path: upcast to f32, materialised scores and softmax, output in q's dtype."""
    scale = q.shape[-1] ** -0.5
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


def attention(bench, shape):
    """The four records of one attention shape: SDPA and plain, forward and training."""
    heads, len_q, len_k, head_dim = shape
    name = f"q{len_q}_k{len_k}_d{head_dim}"
    q, k, v = (bench.randn(2, heads, n, head_dim) for n in (len_q, len_k, len_k))
    weight = bench.randn(2, heads, len_q, head_dim)
    records = []
    for suffix, attend in (("", F.scaled_dot_product_attention), ("_plain", plain_attention)):
        with torch.inference_mode():
            records.append(bench.line(f"attn_{name}{suffix}", bench.measure(lambda: attend(q, k, v))))
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def train():
            # Fresh gradients each time, as ours: no accumulation into .grad.
            torch.autograd.grad((attend(*leaves) * weight).sum(), leaves)

        records.append(bench.line(f"attn_train_{name}{suffix}", bench.measure(train)))
    return records


def norm_shapes(config):
    """(channels, side) of each distinct ResNet norm shape of the UNet, in ours' order: every
    block's output channels at its resolution, then the first ResNet of the last up block
    (the second block's channels and the first's skip, concatenated, at full resolution)."""
    channels = config_value(config, "block_out_channels")
    side = config["sample_size"]
    found = [(c, side >> b) for b, c in enumerate(channels)]
    if len(channels) >= 2:
        found.append((channels[0] + channels[1], side))
    shapes = []
    for shape in found:
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def group_norm(bench, shape):
    """The two records of one norm shape: GroupNorm then SiLU, forward and training."""
    channels, side = shape
    groups = config_value(bench.config, "norm_num_groups")
    eps = config_value(bench.config, "norm_eps")
    name = f"c{channels}_{side}x{side}"
    x = bench.randn(2, channels, side, side)
    gamma = 1 + 0.5 * bench.randn(channels)
    beta = 0.5 * bench.randn(channels)
    weight = bench.randn(2, channels, side, side)

    def norm(x, gamma, beta):
        return F.silu(F.group_norm(x, groups, gamma, beta, eps))

    with torch.inference_mode():
        records = [bench.line(f"gn_{name}", bench.measure(lambda: norm(x, gamma, beta)))]
    leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]

    def train():
        torch.autograd.grad((norm(*leaves) * weight).sum(), leaves)

    records.append(bench.line(f"gn_train_{name}", bench.measure(train)))
    return records


def transformer_shapes(config):
    """(tokens, dim) of each distinct transformer input of the UNet, in ours' order: every
    down block with cross-attention, then the mid block."""
    channels = config_value(config, "block_out_channels")
    down = config_value(config, "down_block_types")
    levels = [b for b, kind in enumerate(down) if kind.startswith("CrossAttn")] + [len(channels) - 1]
    shapes = []
    for b in levels:
        shape = ((config["sample_size"] >> b) ** 2, channels[b])
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def layer_norm(bench, shape):
    """The two records of one transformer input: LayerNorm, forward and training."""
    tokens, dim = shape
    name = f"t{tokens}_d{dim}"
    x = bench.randn(2, tokens, dim)
    gamma = 1 + 0.5 * bench.randn(dim)
    beta = 0.5 * bench.randn(dim)
    weight = bench.randn(2, tokens, dim)

    def norm(x, gamma, beta):
        return F.layer_norm(x, (dim,), gamma, beta, 1e-5)

    with torch.inference_mode():
        records = [bench.line(f"ln_{name}", bench.measure(lambda: norm(x, gamma, beta)))]
    leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]

    def train():
        torch.autograd.grad((norm(*leaves) * weight).sum(), leaves)

    records.append(bench.line(f"ln_train_{name}", bench.measure(train)))
    return records


def geglu(bench, shape):
    """The two records of one feed-forward input: GEGLU, forward and training."""
    tokens, dim = shape
    width = 2 * 4 * dim
    name = f"t{tokens}_d{width}"
    x = bench.randn(2, tokens, width)
    weight = bench.randn(2, tokens, width // 2)

    def act(x):
        hidden, gate = x.chunk(2, dim=-1)
        return hidden * F.gelu(gate)

    with torch.inference_mode():
        records = [bench.line(f"geglu_{name}", bench.measure(lambda: act(x)))]
    leaf = x.clone().requires_grad_()

    def train():
        torch.autograd.grad((act(leaf) * weight).sum(), [leaf])

    records.append(bench.line(f"geglu_train_{name}", bench.measure(train)))
    return records


def conv_shapes(config):
    """(channels, side) of each distinct level of the UNet, in ours' order: every block's
    output channels at its resolution."""
    channels = config_value(config, "block_out_channels")
    side = config["sample_size"]
    shapes = []
    for shape in [(c, side >> b) for b, c in enumerate(channels)]:
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def conv(bench, shape):
    """The two records of one level: the ResNets' 3x3 convolution (channels in and out,
    padding 1), forward and training with the weight frozen (x's gradient), as LoRA trains."""
    channels, side = shape
    name = f"c{channels}_{side}x{side}"
    x = bench.randn(2, channels, side, side)
    kernel = bench.randn(channels, channels, 3, 3) * (1.0 / (9 * channels)) ** 0.5
    bias = 0.1 * bench.randn(channels)
    weight = bench.randn(2, channels, side, side)
    with torch.inference_mode():
        records = [bench.line(f"conv_{name}", bench.measure(lambda: F.conv2d(x, kernel, bias, padding=1)))]
    leaf = x.clone().requires_grad_()

    def train():
        torch.autograd.grad((F.conv2d(leaf, kernel, bias, padding=1) * weight).sum(), [leaf])

    records.append(bench.line(f"conv_train_{name}", bench.measure(train)))
    return records


def linear_shapes(config):
    """(tokens, in, out) of each distinct linear layer of the transformer blocks, in ours'
    order: per transformer input, the attention's projection, the feed-forward's projection
    and its output."""
    shapes = []
    for tokens, dim in transformer_shapes(config):
        for d_in, d_out in [(dim, dim), (dim, 8 * dim), (4 * dim, dim)]:
            if (tokens, d_in, d_out) not in shapes:
                shapes.append((tokens, d_in, d_out))
    return shapes


def linear(bench, shape):
    """The two records of one linear layer: forward and training with the weight frozen
    (x's gradient), as LoRA trains the UNet's projections."""
    tokens, d_in, d_out = shape
    name = f"t{tokens}_i{d_in}_o{d_out}"
    x = bench.randn(2, tokens, d_in)
    kernel = bench.randn(d_out, d_in) * (1.0 / d_in) ** 0.5
    bias = 0.1 * bench.randn(d_out)
    weight = bench.randn(2, tokens, d_out)
    with torch.inference_mode():
        records = [bench.line(f"linear_{name}", bench.measure(lambda: F.linear(x, kernel, bias)))]
    leaf = x.clone().requires_grad_()

    def train():
        torch.autograd.grad((F.linear(leaf, kernel, bias) * weight).sum(), [leaf])

    records.append(bench.line(f"linear_train_{name}", bench.measure(train)))
    return records


def run_dtype(config, device, dtype_name, args):
    bench = Bench(config, device, dtype_name, args.warmup, args.reps, args.profile_dir)
    only = set(args.only.split(",")) if args.only else None
    selected = lambda w: only is None or w in only
    records = []
    if selected("train"):
        records.append(lora_train_step(bench))
    with torch.inference_mode():
        if selected("step") or selected("sample") or selected("compile"):
            unet = bench.unet().eval()
            if selected("step"):
                records.append(unet_step_cfg(bench, unet))
            if selected("sample"):
                records.append(sampling(bench, unet, args.sampling_steps))
            if args.compile and selected("compile"):
                compiled = torch.compile(unet)
                records.append(unet_step_cfg(bench, compiled, "unet_step_cfg_b2_compiled"))
            del unet
        if selected("ewa-weights") or selected("ewa") or selected("regional"):
            model = EwaModel(bench)
            if selected("ewa-weights"):
                records.append(ewa_weights(bench, model))
            if selected("ewa"):
                records.append(ewa_step_cfg(bench, model))
            if selected("regional"):
                records.append(regional_step(bench, model))
    if selected("attention"):
        for shape in attention_shapes(config):
            records += attention(bench, shape)
    if selected("group-norm"):
        for shape in norm_shapes(config):
            records += group_norm(bench, shape)
    if selected("layer-norm"):
        for shape in transformer_shapes(config):
            records += layer_norm(bench, shape)
    if selected("geglu"):
        for shape in transformer_shapes(config):
            records += geglu(bench, shape)
    if selected("conv"):
        for shape in conv_shapes(config):
            records += conv(bench, shape)
    if selected("linear"):
        for shape in linear_shapes(config):
            records += linear(bench, shape)
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny config (ours' --config tiny)")
    parser.add_argument("--unet-config", help="a diffusers unet config.json (ours' --print-config)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtypes", help="comma-separated f16,f32 (default: both on cuda, f32 on cpu)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--only", help="comma-separated: train,step,sample,ewa-weights,ewa,regional,attention,group-norm,layer-norm,geglu,conv,linear,compile")
    parser.add_argument("--compile", action="store_true",
                        help="also time the UNet step under torch.compile (unet_step_cfg_b2_compiled)")
    parser.add_argument("--json", help="also write the records to this file")
    parser.add_argument("--profile-dir",
                        help="profile the UNet step and the LoRA step once more into this directory")
    args = parser.parse_args()
    if args.reps < 1 or args.sampling_steps < 1:
        parser.error("--reps and --sampling-steps must be at least 1")

    if args.unet_config:
        with open(args.unet_config) as f:
            config = json.load(f)
    else:
        config = TINY if args.tiny else SD15
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = (args.dtypes or ("f16,f32" if device == "cuda" else "f32")).split(",")
    if any(d not in DTYPES for d in dtypes):
        parser.error(f"--dtypes takes f16 and f32, got {args.dtypes}")
    if device == "cuda":
        # Measure what the hardware does in each dtype: no TF32 for f32 (as the figure).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        # diffusers' random initialisation yields subnormal activations, which x86 CPUs
        # compute in microcode (6-14x slower for the tiny UNet step here); flushing them
        # measures the framework instead. GPUs compute them at full speed, so no flag there.
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__} on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device == "cuda" else ""),
          file=sys.stderr, flush=True)
    records = []
    for dtype_name in dtypes:
        records += run_dtype(config, device, dtype_name, args)
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": device, "config": config,
                       "warmup": args.warmup, "records": records}, f, indent=2)


if __name__ == "__main__":
    main()
