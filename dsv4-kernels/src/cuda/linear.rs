//! Launchers of `csrc/linear.cu`: `y = W·x` on weights read in place as stored, the twins of
//! [`crate::panel::PackedLinear::forward`] and [`crate::grouped::grouped_linear`].
//!
//! `x` holds `tokens` rows of `inp` f32 and `y` receives `tokens` rows of `out` f32. One token
//! goes through the GEMV kernel (`linear`), a chunk of tokens through the tiled one
//! (`linear_tiled`); [`linear`] picks, one launch either way. The grouped projection (wo_a,
//! docs/model.md §4.3) reads ONE stored weight `[G·out, inp]`, uploaded as the checkpoint holds
//! it ([`GroupedWeight`]); group `g` is its rows `g·out .. (g+1)·out`, applied to the `g`-th slab
//! of `tokens × inp` inputs into the `g`-th slab of `tokens × out` parts: the layout of
//! `grouped_linear`'s `inputs` and `parts`.
//!
//! The kernels read with vector loads when `inp` is a multiple of 32 and the weight's elements
//! and `x` start 16-byte aligned (device allocations do; an `x` at an odd offset into one may
//! not), otherwise element by element: the same results, slower. No scratch memory; at most
//! 65 535 groups, and 65 535 · 32 tokens for the tiled kernels.

use super::twins::{Check, Rng, StoredWeight};
use super::weights::{DeviceWeight, Format, ScaleKind};
use super::{dim, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::linear::{LinearView, LinearWeight, Scales};
use crate::panel::{Pack, PackedLinear};

/// Output rows per block of the GEMV kernels, one warp each.
const GEMV_ROWS: usize = 4;
/// Outputs × tokens per block of the tiled kernels, and their threads.
const TILE_ROWS: usize = 64;
const TILE_TOKENS: usize = 32;
const TILE_THREADS: u32 = 256;
/// The most blocks a launch may have in y and z.
const GRID_YZ: usize = 65_535;

/// A stored weight `[groups · rows, inp]` applied group by group: group `g` is rows
/// `g·rows .. (g+1)·rows` (the checkpoint's `wo_a`, one tensor, uploaded once).
#[derive(Debug)]
pub struct GroupedWeight {
    /// The whole weight, `[groups · rows(), inp]`.
    pub weight: DeviceWeight,
    /// Groups (G).
    pub groups: usize,
}

impl GroupedWeight {
    /// `weight` split into `groups` groups of equal rows.
    pub fn new(weight: DeviceWeight, groups: usize) -> Result<Self, DeviceError> {
        if groups == 0 || !weight.out.is_multiple_of(groups) {
            return Err(error(
                "grouped_linear",
                format!("{} rows do not split into {groups} groups", weight.out),
            ));
        }
        Ok(Self { weight, groups })
    }

    /// Uploads a stored `[groups · rows, inp]` weight as it is.
    pub fn upload(gpu: &Gpu, view: &LinearView, groups: usize) -> Result<Self, DeviceError> {
        Self::new(DeviceWeight::upload(gpu, view)?, groups)
    }

    /// Output rows per group.
    pub fn rows(&self) -> usize {
        self.weight.out / self.groups
    }
}

/// Which of the two product kernels a launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// The GEMV kernel (`linear`, `grouped_linear`): rows one after another, meant for one.
    Gemv,
    /// The tiled kernel (`linear_tiled`, `grouped_linear_tiled`), for a chunk.
    Tiled,
}

impl Product {
    /// The kernel for `tokens` rows: the GEMV for one, the tiled product for more.
    pub fn for_tokens(tokens: usize) -> Self {
        if tokens == 1 {
            Self::Gemv
        } else {
            Self::Tiled
        }
    }

    /// The other one.
    pub fn other(self) -> Self {
        match self {
            Self::Gemv => Self::Tiled,
            Self::Tiled => Self::Gemv,
        }
    }

    /// Its kernel's name, plain or grouped.
    pub fn kernel(self, grouped: bool) -> &'static str {
        match (self, grouped) {
            (Self::Gemv, false) => "linear",
            (Self::Tiled, false) => "linear_tiled",
            (Self::Gemv, true) => "grouped_linear",
            (Self::Tiled, true) => "grouped_linear_tiled",
        }
    }
}

/// `y = W·x` for `tokens` rows of `x`: the GEMV kernel for one token, the tiled kernel for more.
pub fn linear(
    gpu: &Gpu,
    w: &DeviceWeight,
    x: DevicePtr,
    y: DevicePtr,
    tokens: usize,
) -> Result<(), DeviceError> {
    linear_with(gpu, Product::for_tokens(tokens), w, x, y, tokens)
}

/// [`linear`] with the kernel `product`.
pub fn linear_with(
    gpu: &Gpu,
    product: Product,
    w: &DeviceWeight,
    x: DevicePtr,
    y: DevicePtr,
    tokens: usize,
) -> Result<(), DeviceError> {
    launch(gpu, product.kernel(false), w, 1, x, y, tokens)
}

/// `parts[g] = W_g · inputs[g]` for every group, `inputs` `G × tokens × inp`, `parts`
/// `G × tokens × rows`: the GEMV kernel for one token, the tiled kernel for more.
pub fn grouped_linear(
    gpu: &Gpu,
    w: &GroupedWeight,
    inputs: DevicePtr,
    parts: DevicePtr,
    tokens: usize,
) -> Result<(), DeviceError> {
    grouped_linear_with(gpu, Product::for_tokens(tokens), w, inputs, parts, tokens)
}

/// [`grouped_linear`] with the kernel `product`.
pub fn grouped_linear_with(
    gpu: &Gpu,
    product: Product,
    w: &GroupedWeight,
    inputs: DevicePtr,
    parts: DevicePtr,
    tokens: usize,
) -> Result<(), DeviceError> {
    let kernel = product.kernel(true);
    launch(gpu, kernel, &w.weight, w.groups, inputs, parts, tokens)
}

fn error(kernel: &str, message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: kernel.to_string(),
        message,
    }
}

/// Checks that `w`'s buffers hold its shape in its format.
fn check_weight(kernel: &str, w: &DeviceWeight) -> Result<(), DeviceError> {
    let (out, inp) = (w.out, w.inp);
    let elements = out
        .checked_mul(inp)
        .ok_or_else(|| error(kernel, format!("weight {out}×{inp} is too large")))?;
    let (data, scales) = match w.format {
        Format::F32 => (elements * 4, 0),
        Format::Bf16 | Format::F16 => (elements * 2, 0),
        Format::Fp8Block => (elements, out.div_ceil(128) * inp.div_ceil(128)),
        Format::Fp4Group => {
            if !inp.is_multiple_of(32) {
                return Err(error(
                    kernel,
                    format!("FP4 rows of {inp} inputs are not whole groups of 32"),
                ));
            }
            (elements / 2, out * (inp / 32))
        }
    };
    if w.data.len() < data {
        return Err(error(
            kernel,
            format!(
                "weight {out}×{inp} needs {data} bytes, its buffer holds {}",
                w.data.len()
            ),
        ));
    }
    if scales > 0 {
        let need = scales
            * match w.scale_kind {
                ScaleKind::E8m0 => 1,
                ScaleKind::F32 => 4,
            };
        let have = w.scales.as_ref().map_or(0, |s| s.len());
        if have < need {
            return Err(error(
                kernel,
                format!("weight {out}×{inp} needs {need} bytes of scales, it has {have}"),
            ));
        }
    }
    Ok(())
}

/// Launches `kernel` (one of the four) over `groups` groups of `w.out / groups` rows.
fn launch(
    gpu: &Gpu,
    kernel: &'static str,
    w: &DeviceWeight,
    groups: usize,
    x: DevicePtr,
    y: DevicePtr,
    tokens: usize,
) -> Result<(), DeviceError> {
    check_weight(kernel, w)?;
    // Rows of the whole weight are 32-bit in the kernels.
    dim(w.out)?;
    let rows = w.out / groups.max(1);
    if tokens == 0 || rows == 0 {
        return Ok(());
    }
    let tiled = kernel.ends_with("_tiled");
    let token_tiles = if tiled {
        tokens.div_ceil(TILE_TOKENS)
    } else {
        1
    };
    if groups > GRID_YZ || token_tiles > GRID_YZ {
        return Err(error(
            kernel,
            format!("{groups} groups of {tokens} tokens exceed the grid"),
        ));
    }
    let config = if tiled {
        LaunchConfig {
            grid: [
                dim(rows.div_ceil(TILE_ROWS))?,
                dim(token_tiles)?,
                dim(groups)?,
            ],
            block: [TILE_THREADS, 1, 1],
            shared_bytes: 0,
        }
    } else {
        LaunchConfig {
            grid: [dim(rows.div_ceil(GEMV_ROWS))?, dim(groups)?, 1],
            block: [dim(32 * GEMV_ROWS)?, 1, 1],
            shared_bytes: 0,
        }
    };
    let p = w.params();
    let (out, inp, tokens) = (dim(rows)?, dim(w.inp)?, dim(tokens)?);
    let [format, scale_kind, data, scales] = p.as_params();
    // SAFETY: the weight's buffers hold its shape (checked above); the kernel reads
    // `groups × tokens × inp` floats at `x` and writes `groups × tokens × rows` at `y`, which
    // the caller's buffers hold.
    unsafe {
        gpu.launch(
            kernel,
            config,
            &[
                format, scale_kind, data, scales, &out, &inp, &x, &y, &tokens,
            ],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Twins.

/// A twin failure that is not a device's (a CPU weight that does not pack).
fn twin_error(e: impl std::fmt::Display) -> DeviceError {
    error("linear", format!("CPU twin: {e}"))
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::F32 => "f32",
        Format::Bf16 => "bf16",
        Format::F16 => "f16",
        Format::Fp8Block => "fp8",
        Format::Fp4Group => "fp4",
    }
}

/// A stored weight for the twins and the scale bytes it owns when they are f32 (random
/// multipliers in [2^-7, 2^-5), not powers of two).
struct TwinWeight {
    stored: StoredWeight,
    f32_scales: Option<Vec<u8>>,
}

impl TwinWeight {
    fn new(rng: &mut Rng, format: Format, out: usize, inp: usize, f32_scales: bool) -> Self {
        let stored = StoredWeight::random(rng, format, out, inp);
        let f32_scales = (f32_scales && !stored.scales.is_empty()).then(|| {
            (0..stored.scales.len())
                .flat_map(|_| ((1.5 + 0.5 * rng.uniform()) / 128.0).to_le_bytes())
                .collect()
        });
        Self { stored, f32_scales }
    }

    fn view(&self) -> LinearView<'_> {
        let mut view = self.stored.view();
        if let Some(bytes) = &self.f32_scales {
            view.weight = match view.weight {
                LinearWeight::Fp8Block { q, .. } => LinearWeight::Fp8Block {
                    q,
                    scales: Scales::F32(bytes),
                },
                LinearWeight::Fp4Group { packed, .. } => LinearWeight::Fp4Group {
                    packed,
                    scales: Scales::F32(bytes),
                },
                other => other,
            };
        }
        view
    }

    fn name(&self) -> String {
        let s = &self.stored;
        let scales = if self.f32_scales.is_some() {
            " f32-scaled"
        } else {
            ""
        };
        format!("{}{scales} {}×{}", format_name(s.format), s.out, s.inp)
    }
}

/// Rows `first .. first + rows` of `view` packed as the CPU's panel kernels read them, applied
/// to `x` (`tokens × inp`): the CPU twin.
fn cpu_forward(
    view: &LinearView,
    first: usize,
    rows: usize,
    x: &[f32],
) -> Result<Vec<f32>, DeviceError> {
    let mut spec = view.packed_spec();
    spec.out = rows;
    let mut bytes = vec![0u8; spec.len()];
    view.pack_rows_into(first, &spec, &mut bytes)
        .map_err(twin_error)?;
    let linear = PackedLinear::new(spec, &bytes).map_err(twin_error)?;
    let tokens = x.len().checked_div(view.inp).unwrap_or(0);
    let mut y = vec![0.0f32; tokens * rows];
    linear.forward(x, &mut y);
    Ok(y)
}

/// Rows `first .. first + rows` of `view` applied to `x` in f64 on the exact weights.
fn f64_forward(view: &LinearView, first: usize, rows: usize, x: &[f32]) -> Vec<f32> {
    let inp = view.inp;
    let tokens = x.len().checked_div(inp).unwrap_or(0);
    let mut y = vec![0.0f32; tokens * rows];
    let mut row = vec![0.0f32; inp];
    for r in 0..rows {
        view.row(first + r, &mut row);
        for t in 0..tokens {
            let dot: f64 = row
                .iter()
                .zip(&x[t * inp..(t + 1) * inp])
                .map(|(&w, &v)| f64::from(w) * f64::from(v))
                .sum();
            y[t * rows + r] = dot as f32;
        }
    }
    y
}

/// Inputs whose products with `view`'s rows are about unit size: uniform in ±a with
/// a = √3 / (rms(W) · √inp), rms(W) from its first rows (NaN weights left out).
fn unit_inputs(rng: &mut Rng, view: &LinearView, n: usize) -> Vec<f32> {
    let mut row = vec![0.0f32; view.inp];
    let (mut squares, mut count) = (0.0f64, 0usize);
    for o in 0..view.out.min(16) {
        view.row(o, &mut row);
        for &v in row.iter().filter(|v| v.is_finite()) {
            squares += f64::from(v) * f64::from(v);
            count += 1;
        }
    }
    let rms = (squares / count.max(1) as f64).sqrt().max(1e-30);
    let a = (3.0f64.sqrt() / (rms * (view.inp.max(1) as f64).sqrt())) as f32;
    rng.values(n, a)
}

/// What each twin is held to.
///
/// Kernel against CPU twin (or f64): both sum in f32, in different orders (the kernels: 8-input
/// chunks by fused multiply-adds, then trees over threads and warps; the CPU: a sequential
/// fused multiply-add per input within blocks of 128), so each output differs by f32 rounding of
/// partial sums about as large as the outputs (unit by construction): a few 2^-24·√inp, under
/// 1e-5 at inp = 16384.
const TOLERANCE: f32 = 1e-5;

/// Kernel against kernel (GEMV and tiled on the same rows): the same products summed in the
/// same order, so the same bits (a token's result must not depend on its chunk).
const BETWEEN: f32 = 0.0;

/// One weight of the linear twins: format, shape, the token counts it is run at, and whether
/// its scales are f32 and its inputs misaligned.
struct Case {
    format: Format,
    out: usize,
    inp: usize,
    tokens: &'static [usize],
    f32_scales: bool,
    x_unaligned: bool,
}

/// The four kernels against their CPU twins at V4-Flash's shapes and odd ones, in every stored
/// format; GEMV against tiled on the same rows.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    let plain = |format, out, inp, tokens| Case {
        format,
        out,
        inp,
        tokens,
        f32_scales: false,
        x_unaligned: false,
    };
    let f32_scaled = |format, out, inp, tokens| Case {
        f32_scales: true,
        ..plain(format, out, inp, tokens)
    };
    let unaligned = |format, out, inp, tokens| Case {
        x_unaligned: true,
        ..plain(format, out, inp, tokens)
    };
    let cases = [
        plain(Format::F32, 1, 1, &[1, 2]),
        plain(Format::F32, 3, 7, &[1, 3]),
        // hc_attn_fn: [(2 + n)·n, n·D].
        plain(Format::F32, 24, 16384, &[1, 4]),
        // ffn.gate [E, D]; indexer.weights_proj [Hi, D].
        plain(Format::Bf16, 256, 4096, &[1, 7]),
        plain(Format::Bf16, 64, 4096, &[3]),
        plain(Format::Bf16, 1, 4096, &[1, 2]),
        plain(Format::Bf16, 3, 7, &[1, 5]),
        plain(Format::Bf16, 96, 520, &[33]),
        unaligned(Format::Bf16, 64, 256, &[1, 3]),
        plain(Format::F16, 100, 96, &[1, 3]),
        plain(Format::F16, 65, 33, &[1, 2]),
        // wq_a [Rq, D].
        plain(Format::Fp8Block, 1024, 4096, &[1, 5]),
        plain(Format::Fp8Block, 200, 300, &[1, 3]),
        plain(Format::Fp8Block, 129, 257, &[1, 33]),
        plain(Format::Fp8Block, 1, 128, &[1, 2]),
        f32_scaled(Format::Fp8Block, 256, 384, &[1, 4]),
        unaligned(Format::Fp8Block, 130, 256, &[1, 3]),
        // An expert's w1 [I, D].
        plain(Format::Fp4Group, 2048, 4096, &[1]),
        plain(Format::Fp4Group, 33, 96, &[1, 2]),
        plain(Format::Fp4Group, 7, 32, &[1, 40]),
        f32_scaled(Format::Fp4Group, 70, 160, &[1, 3]),
        unaligned(Format::Fp4Group, 64, 256, &[1, 3]),
    ];
    for case in cases {
        let (out, inp) = (case.out, case.inp);
        let weight = TwinWeight::new(rng, case.format, out, inp, case.f32_scales);
        let view = weight.view();
        let device = DeviceWeight::upload(gpu, &view)?;
        for &tokens in case.tokens {
            let x = unit_inputs(rng, &view, tokens * inp);
            // 4 bytes off: x is not 16-byte aligned, and the kernels read it element by element.
            let skew = if case.x_unaligned { 4 } else { 0 };
            let name = format!(
                "{} T={tokens}{}",
                weight.name(),
                if case.x_unaligned { " x unaligned" } else { "" }
            );
            checks.extend(linear_checks(gpu, &device, &view, &x, tokens, skew, &name)?);
        }
    }
    // A NaN byte makes its row's outputs NaN, as in the CPU's kernels.
    {
        let mut stored = StoredWeight::random(rng, Format::Fp8Block, 37, 300);
        stored.data[3 * 300 + 5] = 0x7f;
        stored.data[20 * 300 + 299] = 0xff;
        let view = stored.view();
        let device = DeviceWeight::upload(gpu, &view)?;
        for tokens in [1, 3] {
            let x = unit_inputs(rng, &view, tokens * 300);
            let name = format!("fp8 37×300 NaN bytes T={tokens}");
            checks.extend(linear_checks(gpu, &device, &view, &x, tokens, 0, &name)?);
        }
    }
    // (format, groups, rows per group, inp, token counts).
    let grouped: &[(Format, usize, usize, usize, &[usize])] = &[
        // wo_a [G·Ro, H·Dh/G] at its real G and inputs, 128 of its 1024 rows per group.
        (Format::Fp8Block, 8, 128, 4096, &[1, 3]),
        (Format::Fp8Block, 3, 100, 300, &[1, 5]),
        (Format::Bf16, 2, 5, 7, &[1, 2]),
        (Format::Fp4Group, 4, 33, 64, &[1, 33]),
        (Format::F32, 1, 9, 40, &[1, 2]),
    ];
    for &(format, groups, rows, inp, token_counts) in grouped {
        let weight = TwinWeight::new(rng, format, groups * rows, inp, false);
        let view = weight.view();
        let device = GroupedWeight::upload(gpu, &view, groups)?;
        for &tokens in token_counts {
            let inputs = unit_inputs(rng, &view, groups * tokens * inp);
            let name = format!("{} G={groups}×{rows} T={tokens}", format_name(format),);
            checks.extend(grouped_checks(gpu, &device, &view, &inputs, tokens, &name)?);
        }
    }
    Ok(checks)
}

/// `linear` (the launcher's pick) against the CPU twin and f64, and the other kernel against it.
fn linear_checks(
    gpu: &Gpu,
    device: &DeviceWeight,
    view: &LinearView,
    x: &[f32],
    tokens: usize,
    skew: usize,
    name: &str,
) -> Result<Vec<Check>, DeviceError> {
    let out = view.out;
    let device_x = gpu.alloc(skew + x.len() * 4)?;
    device_x.write_at(skew, &super::f32_bytes(x))?;
    let device_y = gpu.zeros(tokens * out * 4)?;
    let other_y = gpu.zeros(tokens * out * 4)?;
    let x_ptr = device_x.at(skew);
    linear(gpu, device, x_ptr, device_y.ptr(), tokens)?;
    let product = Product::for_tokens(tokens);
    linear_with(gpu, product.other(), device, x_ptr, other_y.ptr(), tokens)?;
    let (picked, other) = (product.kernel(false), product.other().kernel(false));
    let got = device_y.read_f32(tokens * out)?;
    let cpu = cpu_forward(view, 0, out, x)?;
    Ok(vec![
        Check::new(picked, name.to_string(), &got, &cpu, TOLERANCE),
        Check::new(
            picked,
            format!("{name} vs f64"),
            &got,
            &f64_forward(view, 0, out, x),
            TOLERANCE,
        ),
        Check::new(
            other,
            format!("{name} vs {picked}"),
            &other_y.read_f32(tokens * out)?,
            &got,
            BETWEEN,
        ),
    ])
}

/// `grouped_linear` (the launcher's pick) against the CPU twin and f64, and the other kernel
/// against it.
fn grouped_checks(
    gpu: &Gpu,
    device: &GroupedWeight,
    view: &LinearView,
    inputs: &[f32],
    tokens: usize,
    name: &str,
) -> Result<Vec<Check>, DeviceError> {
    let (groups, rows, inp) = (device.groups, device.rows(), view.inp);
    let n = groups * tokens * rows;
    let device_x = gpu.upload_f32(inputs)?;
    let device_y = gpu.zeros(n * 4)?;
    let other_y = gpu.zeros(n * 4)?;
    grouped_linear(gpu, device, device_x.ptr(), device_y.ptr(), tokens)?;
    let product = Product::for_tokens(tokens);
    let (x, y) = (device_x.ptr(), other_y.ptr());
    grouped_linear_with(gpu, product.other(), device, x, y, tokens)?;
    let (picked, other) = (product.kernel(true), product.other().kernel(true));
    let got = device_y.read_f32(n)?;
    // The twin: one packed linear per group's rows, as the runtime loads wo_a.
    let mut packed = Vec::new();
    for g in 0..groups {
        let mut spec = view.packed_spec();
        spec.out = rows;
        let mut bytes = vec![0u8; spec.len()];
        view.pack_rows_into(g * rows, &spec, &mut bytes)
            .map_err(twin_error)?;
        packed.push((spec, bytes));
    }
    let weights = packed
        .iter()
        .map(|(spec, bytes)| PackedLinear::new(*spec, bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(twin_error)?;
    let mut cpu = vec![0.0f32; n];
    crate::grouped::grouped_linear(&weights, inputs, &mut cpu);
    let mut exact = Vec::with_capacity(n);
    for (g, input) in inputs.chunks(tokens * inp).enumerate() {
        exact.extend(f64_forward(view, g * rows, rows, input));
    }
    Ok(vec![
        Check::new(picked, name.to_string(), &got, &cpu, TOLERANCE),
        Check::new(picked, format!("{name} vs f64"), &got, &exact, TOLERANCE),
        Check::new(
            other,
            format!("{name} vs {picked}"),
            &other_y.read_f32(n)?,
            &got,
            BETWEEN,
        ),
    ])
}
