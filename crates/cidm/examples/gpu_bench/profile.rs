//! Kernel profiles of one workload, ours against the reference's, summed by the part of the
//! network they belong to: where the GPU time of a UNet step or a LoRA step goes, and which
//! part is furthest behind PyTorch (what to make faster next).
//!
//! Ours comes from CubeCL's profiler: run a GPU build of `gpu_bench` in a directory holding a
//! `cubecl.toml` with `[profiling.logger] level = "basic"` and a `file`, and every device sync
//! logs a table of the kernels that ran since the previous one, each timed on the device
//! (kernels are then run one at a time, so a profiled run is slower than a timed one; the
//! kernel times are what count). The last table of a run with `--reps 1` is one repetition.
//! The reference writes its `torch.profiler` table as JSON (`gpu_bench_reference.py
//! --profile-dir`): every operator with the device time of the kernels it launched itself
//! (CPU time when it runs on a CPU). `tools/gpu_bench.sh --profile` does both.
//!
//! Output, one line per part and then the largest entries of each side:
//!
//! `profile unet_step_cfg_b2 dtype=f16 part=conv cidm_ms=12.300 cidm_calls=66 torch_ms=4.100 torch_calls=66 ratio=3.00`
//! `top cidm unet_step_cfg_b2 dtype=f16 rank=1 ms=12.300 calls=66 share=31% name="DirectConv2dKernel"`

use std::path::Path;

use serde::Deserialize;

use crate::error::{BenchError, Result};

/// A part of the network that kernels (ours) or operators (the reference's) are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Attention: ours' flash kernels (and the plain path's, when it runs), torch's SDPA.
    Attention,
    /// Convolutions, forward and backward.
    Conv,
    /// Matrix products: the linear layers (projections, feed-forward) and plain attention's.
    Matmul,
    /// Reductions: GroupNorm and LayerNorm (torch: the whole norm; ours: the fused group-norm
    /// and layer-norm kernels, and the statistics of a plain norm, whose normalising
    /// arithmetic counts as elementwise), sums, means, the loss.
    Norm,
    /// Elementwise arithmetic and activations, fused or not, and the optimizer's updates.
    Elementwise,
    /// Memory layout: copies, casts, concatenation, slicing, fills.
    Layout,
    /// Anything else.
    Other,
}

impl Part {
    /// Every part, in output order.
    pub const ALL: [Part; 7] = [
        Part::Attention,
        Part::Conv,
        Part::Matmul,
        Part::Norm,
        Part::Elementwise,
        Part::Layout,
        Part::Other,
    ];

    /// The part of one of our kernels, by its CubeCL name (as the profiler prints it, e.g.
    /// `DirectConv2dKernel | CudaRuntime`). Convolutions come before matrix products: cubek's
    /// implicit-GEMM convolutions launch as `MatmulEntry` with convolution types among its
    /// generic arguments (`SimpleConv`, `BiasStageFamily`). `SumSplitsKernel` counts as
    /// attention: it adds up the flash backward's key/value partial sums (megabytes), and
    /// also the layer norm's weight-gradient partial sums (kilobytes). The `top` lines print
    /// the names, so a kernel this sorts wrongly shows there.
    pub fn of_kernel(name: &str) -> Part {
        let name = name.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        if has(&["flash", "attention", "sumsplits"]) {
            Part::Attention
        } else if has(&["conv", "im2col", "col2im", "biasstage"]) {
            Part::Conv
        } else if has(&["matmul", "gemm"]) {
            Part::Matmul
        } else if has(&["reduce", "groupnorm", "layernorm"]) {
            Part::Norm
        } else if has(&[
            "copy",
            "slice",
            "cat",
            "gather",
            "scatter",
            "select",
            "contiguous",
            "cast",
            "fill",
            "repeat",
            "permute",
            "transpose",
        ]) {
            Part::Layout
        } else if has(&[
            "elemwise", "binop", "unary", "scalar", "clamp", "fuse", "mask",
        ]) {
            Part::Elementwise
        } else {
            Part::Other
        }
    }

    /// The part of one of torch's operators, by its profiler name (e.g.
    /// `aten::cudnn_convolution`).
    pub fn of_operator(name: &str) -> Part {
        let name = name.to_ascii_lowercase();
        let base = name.rsplit("::").next().unwrap_or(&name);
        let has = |words: &[&str]| words.iter().any(|w| base.contains(w));
        let is = |names: &[&str]| names.contains(&base);
        if has(&["attention", "flash", "fmha"]) {
            Part::Attention
        } else if has(&["conv"]) {
            Part::Conv
        } else if is(&[
            "mm",
            "addmm",
            "bmm",
            "baddbmm",
            "addbmm",
            "matmul",
            "linear",
            "_addmm_activation",
        ]) {
            Part::Matmul
        } else if has(&["norm"])
            || is(&[
                "sum",
                "mean",
                "var",
                "std",
                "var_mean",
                "amax",
                "amin",
                "max",
                "min",
                "mse_loss",
                "mse_loss_backward",
            ])
        {
            Part::Norm
        } else if has(&["copy", "memcpy", "memset"])
            || is(&[
                "cat",
                "clone",
                "contiguous",
                "to",
                "index",
                "index_select",
                "slice",
                "slice_backward",
                "fill_",
                "zero_",
                "zeros",
                "zeros_like",
                "ones",
                "full",
                "stack",
                "repeat",
                "repeat_interleave",
            ])
        {
            Part::Layout
        } else if base.starts_with("_foreach_")
            || base.starts_with("_fused_")
            || is(&[
                "add",
                "add_",
                "sub",
                "sub_",
                "mul",
                "mul_",
                "div",
                "div_",
                "neg",
                "exp",
                "pow",
                "sqrt",
                "rsqrt",
                "silu",
                "silu_backward",
                "gelu",
                "gelu_backward",
                "sigmoid",
                "tanh",
                "where",
                "clamp",
                "clamp_min",
                "lerp_",
                "addcmul_",
                "addcdiv_",
                "_softmax",
                "_softmax_backward_data",
                "sin",
                "cos",
                "threshold_backward",
            ])
        {
            Part::Elementwise
        } else {
            Part::Other
        }
    }

    /// The name printed in `part=`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Attention => "attention",
            Part::Conv => "conv",
            Part::Matmul => "matmul",
            Part::Norm => "norm",
            Part::Elementwise => "elementwise",
            Part::Layout => "layout",
            Part::Other => "other",
        }
    }
}

/// One kernel (ours) or operator (torch) of a profile: its total time and how often it ran.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    /// Kernel or operator name.
    pub name: String,
    /// Total time over its calls, in milliseconds.
    pub ms: f64,
    /// Number of calls.
    pub calls: u64,
}

/// The reference's profile file (`gpu_bench_reference.py --profile-dir`).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchProfile {
    /// Operators with their own (not their children's) time.
    pub ops: Vec<Entry>,
}

/// The entries of the last kernel table in a CubeCL profiling log. Rows look like
/// `| MatmulEntry | TensorArgs | CudaRuntime | 41.95ms | 56 | 14 % |`: the name holds
/// ` | ` itself, so the row is split from the right; names are shortened ([`short_name`]).
pub fn parse_cubecl_log(text: &str) -> Result<Vec<Entry>> {
    let start = text
        .rfind("|⎺")
        .ok_or_else(|| BenchError::Profile("no kernel table in the CubeCL log".into()))?;
    let mut entries = Vec::new();
    for line in text[start..].lines().skip(1) {
        if line.starts_with("|⎯") {
            return Ok(entries);
        }
        let Some(row) = line
            .strip_prefix("| ")
            .and_then(|l| l.trim_end().strip_suffix(" |"))
        else {
            continue;
        };
        let mut cells = row.rsplitn(4, " | ").map(str::trim);
        let (Some(_ratio), Some(calls), Some(duration), Some(name)) =
            (cells.next(), cells.next(), cells.next(), cells.next())
        else {
            continue;
        };
        // The header row and the total row are not kernels.
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        if name == "Total" {
            continue;
        }
        entries.push(Entry {
            name: short_name(name),
            ms: parse_duration_ms(duration)?,
            calls,
        });
    }
    Err(BenchError::Profile(
        "the last kernel table of the CubeCL log is cut off".into(),
    ))
}

/// `name` without the segments that say nothing about the kernel: the runtime
/// (`CudaRuntime`) and the placeholders of CubeCL's generic launch arguments (`__Lhs`,
/// `DynamicSize`, ...), which make a matmul's name several hundred characters long.
fn short_name(name: &str) -> String {
    let noise = |segment: &&str| {
        segment.ends_with("Runtime")
            || segment.starts_with("__")
            || ["DynamicScalar", "DynamicSize", "Option", "()"].contains(segment)
    };
    let kept: Vec<&str> = name.split(" | ").filter(|s| !noise(s)).collect();
    kept.join(" | ")
}

/// Milliseconds of a `Duration` as Rust's `Debug` prints it: `41.953197ms`, `80.491µs`,
/// `1.2s`, `900ns`.
pub fn parse_duration_ms(text: &str) -> Result<f64> {
    let units = [
        ("ns", 1e-6),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
    ];
    units
        .iter()
        .find_map(|(unit, scale)| {
            let value = text.strip_suffix(unit)?.parse::<f64>().ok()?;
            Some(value * scale)
        })
        .ok_or_else(|| BenchError::Profile(format!("not a duration: {text:?}")))
}

/// One part's totals on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct PartTotals {
    /// The part (`None` for the total over all parts).
    pub part: Option<Part>,
    /// Our time, ms, and kernel calls.
    pub cidm: (f64, u64),
    /// The reference's time, ms, and operator calls.
    pub torch: (f64, u64),
}

/// The totals of every part that either side spent time in, then the total over all.
pub fn by_part(cidm: &[Entry], torch: &[Entry]) -> Vec<PartTotals> {
    let sum = |entries: &[Entry], classify: fn(&str) -> Part, part: Option<Part>| {
        entries
            .iter()
            .filter(|e| part.is_none_or(|p| classify(&e.name) == p))
            .fold((0.0, 0), |(ms, calls), e| (ms + e.ms, calls + e.calls))
    };
    let totals = |part| PartTotals {
        part,
        cidm: sum(cidm, Part::of_kernel, part),
        torch: sum(torch, Part::of_operator, part),
    };
    Part::ALL
        .into_iter()
        .map(|p| totals(Some(p)))
        .filter(|t| t.cidm.0 > 0.0 || t.torch.0 > 0.0)
        .chain([totals(None)])
        .collect()
}

/// The summary lines of one workload's two profiles: per part, then the `top` largest
/// entries of each side.
pub fn summary(
    workload: &str,
    dtype: &str,
    cidm: &[Entry],
    torch: &[Entry],
    top: usize,
) -> Vec<String> {
    let mut lines: Vec<String> = by_part(cidm, torch)
        .into_iter()
        .map(|t| {
            let part = t.part.map_or("total", Part::name);
            let mut line = format!(
                "profile {workload} dtype={dtype} part={part} cidm_ms={:.3} cidm_calls={} \
                 torch_ms={:.3} torch_calls={}",
                t.cidm.0, t.cidm.1, t.torch.0, t.torch.1
            );
            if t.torch.0 > 0.0 {
                line += &format!(" ratio={:.2}", t.cidm.0 / t.torch.0);
            }
            line
        })
        .collect();
    for (side, entries) in [("cidm", cidm), ("torch", torch)] {
        let total: f64 = entries.iter().map(|e| e.ms).sum();
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        for (rank, e) in sorted.into_iter().take(top).enumerate() {
            lines.push(format!(
                "top {side} {workload} dtype={dtype} rank={} ms={:.3} calls={} share={:.0}% \
                 name={:?}",
                rank + 1,
                e.ms,
                e.calls,
                100.0 * e.ms / total.max(f64::MIN_POSITIVE),
                e.name
            ));
        }
    }
    lines
}

/// Reads the two profile files of one workload.
pub fn read(cubecl_log: &Path, torch_json: &Path) -> Result<(Vec<Entry>, Vec<Entry>)> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let cidm = parse_cubecl_log(&read(cubecl_log)?)?;
    let torch: TorchProfile = serde_json::from_str(&read(torch_json)?)?;
    Ok((cidm, torch.ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a real CubeCL log (wgpu, `gpu_bench --config tiny --only step --reps 1`,
    /// names shortened): a per-kernel line, then the summary table.
    const LOG: &str = "\
| 66.887µs   | CopyKernel | WgpuRuntime
|⎺⎺⎺⎺⎺⎺⎺⎺| 
| Name | Duration | Num Computed | Ratio |
|⎼⎼⎼⎼⎼⎼⎼⎼| 
| old table                          | 1ms          | 1            | 100 % |
|⎯⎯⎯⎯⎯⎯⎯⎯| 
| 80.491µs   | CopyKernel | WgpuRuntime
|⎺⎺⎺⎺⎺⎺⎺⎺| 
| Name                                 | Duration     | Num Computed | Ratio |
|⎼⎼⎼⎼⎼⎼⎼⎼| 
| DirectConv2dKernel | WgpuRuntime     | 76.508428ms  | 94           | 26 %  |
| MatmulEntry | FusedMatmulArgs | DynamicScalar | __Lhs | DynamicSize | __LhsSize | UnitMatmulFamily | Option | () | WgpuRuntime | 41.953197ms  | 56           | 14 %  |
| FlashForwardKernel | WgpuRuntime     | 35.352942ms  | 32           | 12 %  |
| ReduceKernelFused | WgpuRuntime      | 13.466259ms  | 108          | 4 %   |
| ElemwiseFuse | WgpuRuntime           | 31.077636ms  | 203          | 10 %  |
| CopyKernel | WgpuRuntime             | 12.415233ms  | 211          | 4 %   |
| KernelScalarBinop | AddOp | WgpuRuntime | 26.546µs     | 1            | 0 %   |
|⎼⎼⎼⎼⎼⎼⎼⎼| 
| Total                                | 290.947353ms | 1233         | 100 % |
|⎯⎯⎯⎯⎯⎯⎯⎯| 
";

    /// Every kernel row of the last table, with the runtime and the launch placeholders
    /// dropped from the name and the duration in ms; the header, total and older tables are
    /// skipped.
    #[test]
    fn parses_the_last_table() {
        let entries = parse_cubecl_log(LOG).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DirectConv2dKernel",
                "MatmulEntry | FusedMatmulArgs | UnitMatmulFamily",
                "FlashForwardKernel",
                "ReduceKernelFused",
                "ElemwiseFuse",
                "CopyKernel",
                "KernelScalarBinop | AddOp",
            ]
        );
        assert_eq!((entries[0].ms, entries[0].calls), (76.508428, 94));
        assert!((entries[6].ms - 0.026546).abs() < 1e-12);
    }

    /// A log without a table, or whose last table has no end, is an error, not an empty
    /// profile.
    #[test]
    fn incomplete_logs_are_errors() {
        assert!(parse_cubecl_log("| 1ms | CopyKernel | CudaRuntime\n").is_err());
        let cut = &LOG[..LOG.rfind("| Total").unwrap()];
        assert!(parse_cubecl_log(cut).is_err());
    }

    /// Each unit of `Duration`'s Debug output, and garbage rejected.
    #[test]
    fn durations() {
        let ms = |s| parse_duration_ms(s).unwrap();
        assert_eq!(ms("41.5ms"), 41.5);
        assert!((ms("80.491µs") - 0.080491).abs() < 1e-12);
        assert_eq!(ms("1.5s"), 1500.0);
        assert!((ms("900ns") - 0.0009).abs() < 1e-12);
        assert!(parse_duration_ms("12 parsecs").is_err());
    }

    /// Kernel names of burn-cubecl, cubek and cidm-kernels, and torch operator names (CUDA
    /// and CPU), land in the part they compute.
    #[test]
    fn parts() {
        let kernels = [
            ("FlashBackwardDkdvKernel", Part::Attention),
            ("SumSplitsKernel", Part::Attention),
            ("DirectConv2dKernel", Part::Conv),
            (
                "MatmulEntry | TensorArgs | SimpleMatmulFamily",
                Part::Matmul,
            ),
            (
                "MatmulEntry | TensorArgs | SimpleConv | BiasStageFamily",
                Part::Conv,
            ),
            ("ReduceKernelFused", Part::Norm),
            ("GroupNormStatsKernel", Part::Norm),
            ("GroupNormChannelSumsKernel", Part::Norm),
            ("LayerNormForwardKernel", Part::Norm),
            ("LayerNormParamPartialsKernel", Part::Norm),
            ("ElemwiseFuse", Part::Elementwise),
            ("KernelBinop | DivOp", Part::Elementwise),
            ("CopyKernelPack", Part::Layout),
            ("SliceAssignKernel", Part::Layout),
            ("PrngKernel", Part::Other),
        ];
        for (name, part) in kernels {
            assert_eq!(Part::of_kernel(name), part, "{name}");
        }
        let operators = [
            ("aten::_scaled_dot_product_flash_attention", Part::Attention),
            ("aten::_efficient_attention_backward", Part::Attention),
            ("aten::cudnn_convolution", Part::Conv),
            ("aten::convolution_backward", Part::Conv),
            ("aten::mkldnn_convolution", Part::Conv),
            ("aten::addmm", Part::Matmul),
            ("aten::mm", Part::Matmul),
            ("aten::native_group_norm", Part::Norm),
            ("aten::native_layer_norm_backward", Part::Norm),
            ("aten::mul", Part::Elementwise),
            ("aten::_foreach_addcdiv_", Part::Elementwise),
            ("aten::copy_", Part::Layout),
            ("aten::cat", Part::Layout),
            ("Memcpy HtoD (Pageable -> Device)", Part::Layout),
            ("aten::upsample_nearest2d", Part::Other),
        ];
        for (name, part) in operators {
            assert_eq!(Part::of_operator(name), part, "{name}");
        }
    }

    /// Parts add up per side; parts neither side spent time in are left out; the total
    /// comes last and sums everything.
    #[test]
    fn totals_by_part() {
        let entry = |name: &str, ms, calls| Entry {
            name: name.into(),
            ms,
            calls,
        };
        let cidm = [
            entry("DirectConv2dKernel", 6.0, 3),
            entry("ElemwiseFuse", 1.0, 10),
            entry("ElemwiseFuse2", 0.5, 2),
        ];
        let torch = [
            entry("aten::cudnn_convolution", 2.0, 3),
            entry("aten::add", 0.25, 4),
            entry("aten::addmm", 1.0, 1),
        ];
        let rows = by_part(&cidm, &torch);
        let parts: Vec<_> = rows.iter().map(|r| r.part).collect();
        assert_eq!(
            parts,
            [
                Some(Part::Conv),
                Some(Part::Matmul),
                Some(Part::Elementwise),
                None
            ]
        );
        assert_eq!(rows[0].cidm, (6.0, 3));
        assert_eq!(rows[1].cidm, (0.0, 0));
        assert_eq!(rows[2].cidm, (1.5, 12));
        assert_eq!(rows[2].torch, (0.25, 4));
        assert_eq!(rows[3].cidm, (7.5, 15));
        assert_eq!(rows[3].torch, (3.25, 8));

        let lines = summary("unet_step_cfg_b2", "f16", &cidm, &torch, 1);
        assert_eq!(
            lines[0],
            "profile unet_step_cfg_b2 dtype=f16 part=conv cidm_ms=6.000 cidm_calls=3 \
             torch_ms=2.000 torch_calls=3 ratio=3.00"
        );
        assert_eq!(
            lines[4],
            "top cidm unet_step_cfg_b2 dtype=f16 rank=1 ms=6.000 calls=3 share=80% \
             name=\"DirectConv2dKernel\""
        );
        assert_eq!(lines.len(), 6);
    }
}
