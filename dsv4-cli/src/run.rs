//! `dsv4 run`: generate text from a prompt, streaming it as it is produced, ending with a line
//! of timings. Without `--weights` it runs the built-in demo model and says so.

use dsv4_model::shown_path;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dsv4_cache::Sharing;
use dsv4_runtime::{
    generate, Backend, ChatRequest, CpuBackend, GenerateRequest, Linears, ReasoningEffort,
    ThinkingMode, Tokenizer,
};
use serde::Serialize;

use crate::assets::write_demo_model;
use crate::engine_args::EngineArgs;
use crate::ids::parse_ids;
use crate::input::read_input;
use crate::progress::open_checkpoint;
use crate::sampling_args::SamplingArgs;

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// The CUDA backend on GPU 0 (a build with `--features cuda`).
    Cuda,
    /// The CUDA backend with its kernels compiled for this CPU: a testing device, slow.
    CudaSim,
}

/// What `--device cuda-sim` says when it starts.
pub const CUDA_SIM_NOTE: &str = "--device cuda-sim: the CUDA backend with its kernels compiled for this CPU, a testing device (slow, and nothing about GPU speed)";

impl Device {
    /// The backend it names, made once per command and before anything loads, so a missing
    /// GPU is refused first; `cuda-sim` says what it is.
    pub fn open(self) -> Result<OpenDevice> {
        Ok(match self {
            Device::Cpu => OpenDevice::Cpu,
            Device::Cuda => OpenDevice::Cuda(dsv4_runtime::CudaBackend::new()?),
            Device::CudaSim => {
                eprintln!("{CUDA_SIM_NOTE}");
                OpenDevice::Cuda(dsv4_runtime::CudaBackend::sim())
            }
        })
    }
}

/// A `--device` opened: the backend a command runs on.
pub enum OpenDevice {
    /// The CPU backend.
    Cpu,
    /// The CUDA backend, on a GPU or on `cuda-sim`.
    Cuda(dsv4_runtime::CudaBackend),
}

impl OpenDevice {
    /// What loading a checkpoint should do with its linears for this backend.
    pub fn linears(&self) -> Linears {
        match self {
            OpenDevice::Cpu => CpuBackend.linears(),
            OpenDevice::Cuda(backend) => backend.linears(),
        }
    }
}

/// Runs `$body` with `$model` bound to the model over `$loaded` on the opened device `$device`
/// (each arm its own backend type, the body generic code written once).
#[macro_export]
macro_rules! on_device {
    ($device:expr, $engine:expr, $loaded:expr, |$model:ident| $body:expr) => {
        match $device {
            $crate::run::OpenDevice::Cpu => {
                let $model = $engine.model_on(dsv4_runtime::CpuBackend, $loaded)?;
                $body
            }
            $crate::run::OpenDevice::Cuda(backend) => {
                let $model = $engine.model_on(backend.clone(), $loaded)?;
                $body
            }
        }
    };
}

/// Flags of `dsv4 run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Checkpoint directory [default: the built-in demo model, trained on the King James Bible].
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// Prompt text, tokenized as is (no BOS added, as the tokenizer config asks).
    #[arg(long, value_name = "TEXT", group = "input")]
    prompt: Option<String>,
    /// A file holding the prompt text (`-`: standard input), for prompts too long for a flag.
    #[arg(long, value_name = "FILE", group = "input")]
    prompt_file: Option<PathBuf>,
    /// Prompt token ids, comma-separated, used verbatim.
    #[arg(long, value_name = "1,2,3", group = "input")]
    prompt_ids: Option<String>,
    /// A file of prompt token ids separated by whitespace or commas (`-`: standard input).
    #[arg(long, value_name = "FILE", group = "input")]
    prompt_ids_file: Option<PathBuf>,
    /// A user message, formatted with DeepSeek-V4's chat encoding (BOS, User/Assistant turns).
    #[arg(long, value_name = "TEXT", group = "input")]
    chat: Option<String>,
    /// System prompt for --chat.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Thinking mode for --chat (the assistant turn opens with <think>).
    #[arg(long)]
    thinking: bool,
    /// Most tokens to generate.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text appears (repeatable).
    #[arg(long, value_name = "STR")]
    stop: Vec<String>,
    /// Prompt tokens per prefill chunk.
    #[arg(long, value_name = "N", default_value_t = 512)]
    prefill_chunk: usize,
    /// Backend.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Worker threads [default: all cores; at most 1024].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
    /// One JSON object on stdout instead of streamed text.
    #[arg(long)]
    json: bool,
}

/// The JSON document of a run.
#[derive(Serialize)]
struct RunOutput<'a> {
    model: &'a str,
    #[serde(flatten)]
    generation: &'a dsv4_runtime::Generation,
}

/// Most worker threads `--threads` accepts: more than any machine's cores, and a mistyped count
/// fails at once (999999 threads had not started after 30 s).
const MAX_THREADS: usize = 1024;

/// Sets the worker count of the global thread pool.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads 0: expected at least 1");
        }
        if n > MAX_THREADS {
            bail!("--threads {n}: at most {MAX_THREADS}");
        }
        dsv4_runtime::threads::set_workers(n)
            .map_err(|e| anyhow::anyhow!("cannot start the worker threads: {e}"))?;
    }
    Ok(())
}

/// Where a generating command's model is: `--weights DIR`, or without it the built-in demo
/// model written to a temporary directory (kept for as long as this lives).
pub struct ModelDir {
    path: PathBuf,
    /// How the model is named in output.
    pub label: String,
    _demo: Option<tempfile::TempDir>,
}

impl ModelDir {
    /// `weights`, or the demo model (trained here on the King James Bible), saying so on
    /// stderr.
    pub fn open(weights: Option<&std::path::Path>) -> Result<Self> {
        if let Some(dir) = weights {
            return Ok(Self {
                path: dir.to_path_buf(),
                label: shown_path(dir),
                _demo: None,
            });
        }
        let demo = tempfile::tempdir().context("cannot create a directory for the demo model")?;
        write_demo_model(demo.path()).context("cannot write the demo model")?;
        eprintln!(
            "no --weights given: running the built-in demo model, a 5.25M-parameter DeepSeek-V4-architecture model trained here on the King James Bible with its own 2048-token tokenizer (tests/quality); it knows that text and nothing else"
        );
        Ok(Self {
            path: demo.path().to_path_buf(),
            label: "demo (trained on the King James Bible)".to_string(),
            _demo: Some(demo),
        })
    }

    /// The checkpoint directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The directory's `tokenizer.json`, checked against the model's vocabulary; `None` when
    /// there is none.
    pub fn tokenizer(&self, vocab_size: usize) -> Result<Option<Tokenizer>> {
        let path = self.path.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let tokenizer = Tokenizer::from_file(&path)?;
        tokenizer.check_fits(vocab_size)?;
        Ok(Some(tokenizer))
    }
}

/// Runs `dsv4 run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let mut sharing = args.engine.sharing.checked(args.device == Device::Cpu)?;
    let device = args.device.open()?;
    set_threads(args.threads)?;
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk 0: expected at least 1");
    }
    // Everything a flag can get wrong is refused before the weights load.
    if args.chat.is_none() && (args.system.is_some() || args.thinking) {
        bail!("--system and --thinking shape a chat prompt: give --chat TEXT, or drop them");
    }
    if args.thinking && !sharing.is_none() {
        // As the policy's seed says: thinking-mode requests keep every layer's cache.
        eprintln!("--thinking: the cache-sharing policy is not applied to thinking-mode requests");
        sharing = Sharing::default();
    }
    let sampling = args.sampling.params()?;
    let prompt_text = match &args.prompt_file {
        Some(path) => Some(read_input(path, "a prompt")?),
        None => args.prompt.clone(),
    };
    let given_ids = match (&args.prompt_ids, &args.prompt_ids_file) {
        (Some(text), _) => Some(parse_ids(text)?),
        (None, Some(path)) => Some(parse_ids(&read_input(path, "an id list")?)?),
        (None, None) => None,
    };
    let model_dir = ModelDir::open(args.weights.as_deref())?;
    let (dir, label) = (model_dir.path(), model_dir.label.clone());
    let loaded = open_checkpoint(dir, device.linears())?;
    let config = &loaded.config;
    let tokenizer = model_dir.tokenizer(config.vocab_size)?;
    let prompt_ids = match (prompt_text, given_ids, &args.chat) {
        (_, Some(ids), _) => ids,
        (Some(text), _, _) => match &tokenizer {
            Some(t) => t.encode(&text)?,
            None => bail!(
                "--prompt needs a tokenizer: no tokenizer.json in {}; use --prompt-ids",
                shown_path(dir)
            ),
        },
        (_, _, Some(user)) => match &tokenizer {
            Some(t) => {
                let request = ChatRequest {
                    system: args.system.as_deref(),
                    user,
                    mode: if args.thinking {
                        ThinkingMode::Thinking
                    } else {
                        ThinkingMode::Chat
                    },
                    effort: ReasoningEffort::Default,
                };
                request.encode(t)?.ids
            }
            None => bail!(
                "--chat needs a tokenizer: no tokenizer.json in {}",
                shown_path(dir)
            ),
        },
        _ => {
            bail!("give one of --prompt, --prompt-file, --prompt-ids, --prompt-ids-file or --chat")
        }
    };
    if let Some(&id) = prompt_ids
        .iter()
        .find(|&&id| id as usize >= config.vocab_size)
    {
        bail!(
            "prompt token id {id} is out of range: the model's vocabulary has {} ids",
            config.vocab_size
        );
    }
    let request = GenerateRequest {
        prompt_ids,
        max_new_tokens: args.max_new_tokens,
        sampling,
        stops: args.stop.clone(),
        prefill_chunk: args.prefill_chunk,
        sharing,
    };
    let mut stdout = std::io::stdout();
    let streaming = !args.json && tokenizer.is_some();
    let on_text = |piece: &str| {
        if streaming {
            // A closed pipe ends the output, not the run.
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    };
    let generation = crate::on_device!(&device, args.engine, &loaded, |model| {
        generate(&model, tokenizer.as_ref(), &request, on_text)?
    });
    if args.json {
        let output = RunOutput {
            model: &label,
            generation: &generation,
        };
        println!("{}", serde_json::to_string(&output)?);
    } else {
        if tokenizer.is_none() {
            let ids: Vec<String> = generation
                .generated_ids
                .iter()
                .map(u32::to_string)
                .collect();
            print!("{}", ids.join(" "));
        }
        println!();
    }
    if generation.finish_reason == dsv4_runtime::FinishReason::Context {
        eprintln!(
            "stopped: the model's context of {} tokens is full",
            config.max_position_embeddings
        );
    }
    let t = &generation.timings;
    eprintln!(
        "[{} prompt tokens, prefill {:.1} tok/s; {} generated, decode {:.1} tok/s; finish: {}]",
        t.prompt_tokens,
        t.prefill_tokens_per_s,
        generation.generated_ids.len(),
        t.decode_tokens_per_s,
        serde_json::to_value(generation.finish_reason)?
            .as_str()
            .unwrap_or("?")
    );
    Ok(())
}
