//! `dsv4 bench`: prefill and decode throughput on a checkpoint, and decode's effective weight
//! bandwidth (weight bytes read per token × tokens/s) beside the machine's memory bandwidth,
//! measured in the same run.

use std::path::PathBuf;
use std::time::Instant;

use crate::bandwidth::{device_copy_runs, median, triad_runs};
use anyhow::{bail, Result};
use clap::Args;
use dsv4_model::ParamReport;
use dsv4_runtime::engine::sampler::{Sampler, SamplingParams};
use dsv4_runtime::{threads, Backend, Model, Request};
use serde::Serialize;

use crate::engine_args::EngineArgs;
use crate::progress::open_checkpoint;
use crate::run::{set_threads, Device, OpenDevice};
use crate::units::binary;

/// Flags of `dsv4 bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Checkpoint directory.
    #[arg(long, value_name = "DIR")]
    weights: PathBuf,
    /// Prompt tokens to prefill.
    #[arg(long, value_name = "N", default_value_t = 512)]
    prompt_len: usize,
    /// Tokens to decode after the prompt.
    #[arg(long, value_name = "N", default_value_t = 32)]
    gen: usize,
    /// Prompt tokens per prefill chunk.
    #[arg(long, value_name = "N", default_value_t = 512)]
    prefill_chunk: usize,
    /// Worker threads [default: all cores; at most 1024].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Backend.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    #[command(flatten)]
    engine: EngineArgs,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// What `dsv4 bench` measured.
#[derive(Debug, Serialize)]
struct BenchReport {
    /// Where the model ran: `cpu`, or the device's name.
    device: String,
    /// What the bandwidth was measured with: the host's triad or the device's copy kernel.
    bandwidth_measure: &'static str,
    threads: usize,
    /// The instruction set the CPU kernels run with.
    cpu_kernels: &'static str,
    prompt_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens: usize,
    decode_tokens_per_s: f64,
    weight_bytes_per_token: u64,
    effective_bandwidth_gb_per_s: f64,
    /// Median of 5 triads before and 5 after the timed work.
    measured_memory_bandwidth_gb_per_s: f64,
    /// The fastest of those triads.
    best_memory_bandwidth_gb_per_s: f64,
    bandwidth_ratio: f64,
}

/// Runs `dsv4 bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    // Where the bandwidth the decode is judged against is measured: the host, or the device.
    type Measure = Box<dyn FnMut(usize) -> Result<Vec<f64>>>;
    args.engine.sharing.checked(args.device == Device::Cpu)?;
    let device = args.device.open()?;
    let (device_name, mut bandwidth): (Option<String>, Measure) = match &device {
        OpenDevice::Cpu => (None, Box::new(|runs| Ok(triad_runs(runs)))),
        OpenDevice::Cuda(backend) => {
            let gpu = backend.gpu().clone();
            // A GiB per copy on a GPU; cuda-sim copies in host memory, at host speed.
            let bytes = if args.device == Device::CudaSim {
                64 << 20
            } else {
                1 << 30
            };
            let name = gpu.name();
            let measure = move |runs| Ok(device_copy_runs(&gpu, runs, bytes)?);
            (Some(name), Box::new(measure))
        }
    };
    if args.prompt_len == 0 || args.gen < 2 {
        bail!("--prompt-len must be at least 1 and --gen at least 2");
    }
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk 0: expected at least 1");
    }
    set_threads(args.threads)?;
    let loaded = open_checkpoint(&args.weights, device.linears())?;
    let config = &loaded.config;
    let context = args.prompt_len.checked_add(args.gen);
    if context.is_none_or(|c| c > config.max_position_embeddings) {
        bail!(
            "--prompt-len {} + --gen {} exceeds the model's context of {} tokens",
            args.prompt_len,
            args.gen,
            config.max_position_embeddings
        );
    }
    // Bytes one decoded token reads: every dense weight, K of E routed experts, one embedding
    // row, counted from the tensors as stored.
    let weight_bytes_per_token = ParamReport::new(config, &loaded.report.manifest)
        .model
        .active_bytes;
    let mut triads = bandwidth(5)?;

    // A deterministic prompt spread over the vocabulary.
    let prompt: Vec<u32> = (0..args.prompt_len)
        .map(|i| ((i as u64 * 2_654_435_761) % config.vocab_size as u64) as u32)
        .collect();
    let (prefill, steps, decode) = crate::on_device!(&device, args.engine, &loaded, |model| {
        timed(&model, &prompt, args)?
    });
    triads.extend(bandwidth(5)?);

    // The median of the ten runs: this machine's typical bandwidth around the decode (the
    // best run is reported too).
    let measured = median(&triads);
    let best = triads.iter().copied().fold(0.0, f64::max);
    let decode_tokens_per_s = steps as f64 / decode;
    let effective = weight_bytes_per_token as f64 * decode_tokens_per_s;
    let (device, bandwidth_measure) = match &device_name {
        None => ("cpu".to_string(), "triad"),
        Some(name) => (name.clone(), "copy kernel"),
    };
    let report = BenchReport {
        device,
        bandwidth_measure,
        threads: threads::workers(),
        cpu_kernels: dsv4_runtime::kernel_instruction_set(),
        prompt_tokens: args.prompt_len,
        prefill_tokens_per_s: args.prompt_len as f64 / prefill,
        decode_tokens: steps,
        decode_tokens_per_s,
        weight_bytes_per_token,
        effective_bandwidth_gb_per_s: effective / 1e9,
        measured_memory_bandwidth_gb_per_s: measured / 1e9,
        best_memory_bandwidth_gb_per_s: best / 1e9,
        bandwidth_ratio: effective / measured,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("device                     {}", report.device);
        println!("threads                    {}", report.threads);
        println!("CPU kernels                {}", report.cpu_kernels);
        println!(
            "prefill                    {:.1} tok/s ({} tokens)",
            report.prefill_tokens_per_s, report.prompt_tokens
        );
        println!(
            "decode                     {:.2} tok/s ({} tokens after one warm-up step)",
            report.decode_tokens_per_s, report.decode_tokens
        );
        println!(
            "weights read per token     {} ({} B)",
            binary(report.weight_bytes_per_token),
            report.weight_bytes_per_token
        );
        println!(
            "effective weight bandwidth {:.2} GB/s",
            report.effective_bandwidth_gb_per_s
        );
        let label = format!("memory bandwidth ({})", report.bandwidth_measure);
        println!(
            "{label:<27}{:.2} GB/s, median of 5 runs before and 5 after (best {:.2} GB/s)",
            report.measured_memory_bandwidth_gb_per_s, report.best_memory_bandwidth_gb_per_s
        );
        println!(
            "ratio                      {:.1}% of the measured bandwidth",
            100.0 * report.bandwidth_ratio
        );
    }
    Ok(())
}

/// Prefill of `prompt` and greedy decode of `args.gen` tokens on `model`: the prefill's
/// seconds, the decode steps timed (the first, which warms caches and buffers, is not) and
/// their seconds. On a pool thread, as `generate` runs (see there).
fn timed<B: Backend>(
    model: &Model<B>,
    prompt: &[u32],
    args: &BenchArgs,
) -> Result<(f64, usize, f64)> {
    let sharing = args.engine.sharing.sharing();
    let mut request = Request::sharing(model, args.prompt_len + args.gen, sharing)?;
    threads::on_worker(|| -> Result<(f64, usize, f64)> {
        let start = Instant::now();
        request.feed(prompt, args.prefill_chunk)?;
        let prefill = start.elapsed().as_secs_f64();

        let mut sampler = Sampler::new(SamplingParams::greedy())?;
        // The first decode step warms caches and buffers; time the rest.
        let token = request.sample(&mut sampler)?;
        request.decode(token)?;
        let start = Instant::now();
        let steps = args.gen - 1;
        for _ in 0..steps {
            let token = request.sample(&mut sampler)?;
            request.decode(token)?;
        }
        Ok((prefill, steps, start.elapsed().as_secs_f64()))
    })
}
