//! The backend seam carries the whole forward: a second backend (here one that records each op
//! and hands it to the CPU backend) plugged into `Model::with_backend` gives the same logits bit
//! for bit as `Model::new`, and the model calls the ops in the forward's order, layer by layer,
//! with the rows each needs.

use std::path::Path;
use std::sync::Mutex;

use dsv4_cache::{BlockBudget, CacheDtypes, ModelCacheSchema, DEFAULT_BLOCK_SIZE};
use dsv4_runtime::backend::{
    AttentionAt, Backend, CpuBackend, CpuSeqCache, FreeMemory, ModelConstants, OpError, SampleCut,
    Sublayer,
};
use dsv4_runtime::engine::sampler::SamplingParams;
use dsv4_runtime::{
    generate, CudaBackend, GenerateRequest, Linears, LoadedCheckpoint, Logits, Model, ModelWeights,
    Numerics, WeightsError,
};

/// The CPU backend, with a log of the ops called on it, and optionally a device memory of
/// `device_free` bytes free.
#[derive(Default)]
struct Recording {
    cpu: CpuBackend,
    log: Mutex<Vec<String>>,
    device_free: Option<u64>,
}

impl Recording {
    fn note(&self, op: String) {
        self.log.lock().expect("log").push(op);
    }
}

impl Backend for Recording {
    type Weights<'w> = ModelWeights<'w>;
    type SeqCache = CpuSeqCache;

    fn upload<'w>(&self, loaded: &'w LoadedCheckpoint) -> Result<ModelWeights<'w>, WeightsError> {
        self.note("upload".into());
        self.cpu.upload(loaded)
    }

    fn free_memory(&self) -> Option<FreeMemory> {
        match self.device_free {
            Some(bytes) => Some(FreeMemory {
                bytes,
                memory: "device",
            }),
            None => FreeMemory::host(),
        }
    }

    fn new_seq_cache(
        &self,
        schema: &ModelCacheSchema,
        paged_bytes: u64,
    ) -> Result<CpuSeqCache, OpError> {
        self.cpu.new_seq_cache(schema, paged_bytes)
    }

    fn snapshot(&self, seq: &CpuSeqCache, paged_bytes: u64) -> Result<CpuSeqCache, OpError> {
        self.cpu.snapshot(seq, paged_bytes)
    }

    fn embed(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        tokens: &[u32],
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("embed {}", tokens.len()));
        self.cpu.embed(w, k, tokens, seq)
    }

    fn hc_pre(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        sublayer: Sublayer,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("hc_pre {sublayer:?} from {from}"));
        self.cpu.hc_pre(w, k, sublayer, from, seq)
    }

    fn attention(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        at: AttentionAt,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("attention {} from {}", at.layer, at.first_output));
        self.cpu.attention(w, k, at, seq)
    }

    fn moe(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        layer: usize,
        tokens: &[u32],
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("moe {layer} of {}", tokens.len()));
        self.cpu.moe(w, k, layer, tokens, seq)
    }

    fn hc_post(
        &self,
        k: &ModelConstants,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("hc_post from {from}"));
        self.cpu.hc_post(k, from, seq)
    }

    fn head(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        self.note(format!("head from {from}"));
        self.cpu.head(w, k, from, seq)
    }

    fn read_logits(&self, seq: &CpuSeqCache, out: &mut Vec<f32>) -> Result<(), OpError> {
        self.note("read_logits".into());
        self.cpu.read_logits(seq, out)
    }

    fn sample(
        &self,
        seq: &mut CpuSeqCache,
        vocab: usize,
        cut: &SampleCut,
        draw: Option<f64>,
    ) -> Result<Option<u32>, OpError> {
        self.note(format!(
            "sample {}",
            if draw.is_some() { "draw" } else { "argmax" }
        ));
        self.cpu.sample(seq, vocab, cut, draw)
    }
}

/// The model over `loaded` on the CPU backend, exact numerics, default cache dtypes.
fn cpu_model(loaded: &LoadedCheckpoint) -> Model<'_> {
    model_on(CpuBackend, loaded)
}

/// The same on `backend`.
fn model_on<B: Backend>(backend: B, loaded: &LoadedCheckpoint) -> Model<'_, B> {
    let weights = backend.upload(loaded).expect("uploads");
    Model::with_backend(
        backend,
        &loaded.config,
        weights,
        Numerics::Exact,
        CacheDtypes::default(),
        DEFAULT_BLOCK_SIZE,
    )
    .expect("model")
}

/// The ops of one forward of `t` tokens over `layers` layers, as the model must call them.
fn expected_ops(layers: usize, t: usize, which: Logits) -> Vec<String> {
    let mut ops = vec![format!("embed {t}")];
    for i in 0..layers {
        let first = match which {
            Logits::Last if i + 1 == layers => t - 1,
            _ => 0,
        };
        ops.extend([
            format!("hc_pre Attention({i}) from 0"),
            format!("attention {i} from {first}"),
            format!("hc_post from {first}"),
            format!("hc_pre Moe({i}) from {first}"),
            format!("moe {i} of {}", t - first),
            format!("hc_post from {first}"),
        ]);
    }
    let head = match which {
        Logits::All => 0,
        Logits::Last => t - 1,
    };
    ops.push(format!("head from {head}"));
    ops.push("read_logits".into());
    ops
}

#[test]
fn a_second_backend_gets_the_same_logits_through_the_same_ops() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    let loaded = LoadedCheckpoint::open(&dir).expect("fixture loads");
    let config = &loaded.config;
    let cpu = cpu_model(&loaded);
    let model = model_on(Recording::default(), &loaded);
    let layers = config.num_hidden_layers;
    let tokens = [5, 17, 3, 99, 42];
    for which in [Logits::All, Logits::Last] {
        let mut cpu_state = cpu.new_request(tokens.len()).expect("request");
        let mut state = model.new_request(tokens.len()).expect("request");
        let want = cpu
            .forward(&tokens, &mut cpu_state, which)
            .expect("forward");
        model.backend().log.lock().expect("log").clear();
        let got = model.forward(&tokens, &mut state, which).expect("forward");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{which:?}");
        let ops = model.backend().log.lock().expect("log").clone();
        assert_eq!(ops, expected_ops(layers, tokens.len(), which), "{which:?}");
    }
}

/// Generation samples through the seam, where the logits are: each step is a `sample` op with a
/// draw, and no logits are read back to the host; the tokens are the CPU backend's.
#[test]
fn generation_samples_through_the_seam_without_reading_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    let loaded = LoadedCheckpoint::open(&dir).expect("fixture loads");
    let request = GenerateRequest {
        prompt_ids: vec![5, 17, 3, 99],
        max_new_tokens: 6,
        sampling: SamplingParams {
            temperature: 1.1,
            top_k: 30,
            top_p: 0.9,
            seed: 8,
        },
        stops: Vec::new(),
        prefill_chunk: 3,
        sharing: Default::default(),
    };
    let cpu = cpu_model(&loaded);
    let want = generate(&cpu, None, &request, |_| {}).expect("generates");
    let model = model_on(Recording::default(), &loaded);
    let got = generate(&model, None, &request, |_| {}).expect("generates");
    assert_eq!(got.generated_ids, want.generated_ids);
    let ops = model.backend().log.lock().expect("log").clone();
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!(count("read_logits"), 0, "{ops:?}");
    // One sample per generated token, plus the one that ended on EOS if any.
    assert!(count("sample draw") >= got.generated_ids.len(), "{ops:?}");
    assert_eq!(count("sample argmax"), 0, "{ops:?}");
}

/// A request whose cache the backend's memory cannot hold is refused before anything is
/// allocated, in one line naming that memory and `dsv4 plan`; one that fits is made.
#[test]
fn a_request_larger_than_the_backends_memory_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    let loaded = LoadedCheckpoint::open(&dir).expect("fixture loads");
    let schema = ModelCacheSchema::new(&loaded.config, CacheDtypes::default(), DEFAULT_BLOCK_SIZE)
        .expect("schema");
    // Exactly what an 8-token request takes.
    let free = BlockBudget::new(&schema, 8, 1, 0)
        .expect("budget")
        .total_bytes;
    let backend = Recording {
        device_free: Some(free),
        ..Recording::default()
    };
    let model = model_on(backend, &loaded);
    let message = match model.new_request(4096) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a 4096-token request fitted in {free} bytes"),
    };
    assert!(
        message.contains(&format!("{free} bytes of device memory")),
        "{message}"
    );
    assert!(message.contains("dsv4 plan"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(model.new_request(8).is_ok());
}

/// Loading for a backend that uploads weights as stored (CUDA) makes no packed copy of the
/// linears in host memory; binding that load for the CPU kernels is refused with the tensor
/// named, not run on missing panels.
#[test]
fn a_checkpoint_loaded_as_stored_holds_no_packed_copy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    let packed = LoadedCheckpoint::open(&dir).expect("fixture loads");
    assert!(packed.packed.bytes() > 0);
    let linears = CudaBackend::sim().linears();
    assert_eq!(linears, Linears::AsStored);
    let stored =
        LoadedCheckpoint::open_with_progress(&dir, linears, |_, _| {}).expect("fixture loads");
    assert_eq!(stored.packed.bytes(), 0);
    let message = match ModelWeights::bind(&stored) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the CPU kernels bound linears that were never packed"),
    };
    assert!(message.contains("were not packed at load"), "{message}");
}
