//! The CPU backend: weights packed at load into the kernels' panel layout (read as stored,
//! never dequantized whole), the request's cache and intermediates in host memory, every op one
//! of `dsv4-kernels`' (which split their work over the worker threads).

use dsv4_cache::{BlockPool, ModelCacheSchema};
use dsv4_kernels::ops::rms_norm;
use dsv4_kernels::sample::{sample_or_argmax, SampleCut};
use dsv4_kernels::scratch::zeroed;

use super::{AttentionAt, Backend, ModelConstants, OpError, SeqCache, Sublayer};
use crate::model::attention::{attention, AttentionStep, SavedSelection, Sharing};
use crate::model::load::LoadedCheckpoint;
use crate::model::moe::moe;
use crate::model::state::LayerState;
use crate::model::weights::{ModelWeights, WeightsError};
use crate::model::workspace::Workspace;
use dsv4_kernels::mhc::hc_pre;

/// The CPU backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// A request's cache in host memory (window rings, compressor tails, paged entries in pages of
/// its block pool) and the buffers its forward passes reuse, so a decode step allocates nothing
/// once they have grown.
#[derive(Debug)]
pub struct CpuSeqCache {
    /// Per decoder layer.
    pub layers: Vec<LayerState>,
    /// Where the paged streams take their pages.
    pub pool: BlockPool,
    workspace: Workspace,
    /// Each layer's role under the request's sharing policy.
    roles: Vec<Role>,
    /// What source layers saved for their readers in the current chunk, by layer.
    saved_windows: Vec<Vec<f32>>,
    saved_selections: Vec<SavedSelection>,
}

impl CpuSeqCache {
    /// A request's cache over `layers`, with fresh intermediates.
    fn new(layers: Vec<LayerState>, pool: BlockPool, roles: Vec<Role>) -> Self {
        let n = layers.len();
        Self {
            layers,
            pool,
            workspace: Workspace::default(),
            roles,
            saved_windows: (0..n).map(|_| Vec::new()).collect(),
            saved_selections: (0..n).map(|_| SavedSelection::default()).collect(),
        }
    }
}

/// A layer's place in its request's sharing policy, from the cache schema.
#[derive(Debug, Clone, Copy, Default)]
struct Role {
    /// The layer whose cache this one reads.
    kv_source: Option<usize>,
    /// The layer whose selection this one reuses.
    indexer_source: Option<usize>,
    /// Whether later layers read this one's cache.
    kv_readers: bool,
    /// Whether later layers reuse this one's selection.
    indexer_readers: bool,
}

impl Role {
    /// Every layer's role in `schema`.
    fn for_schema(schema: &ModelCacheSchema) -> Vec<Self> {
        let mut roles: Vec<Self> = schema
            .layers
            .iter()
            .map(|l| Self {
                kv_source: l.kv_source,
                indexer_source: l.indexer_source,
                ..Self::default()
            })
            .collect();
        for l in &schema.layers {
            if let Some(role) = l.kv_source.and_then(|s| roles.get_mut(s)) {
                role.kv_readers = true;
            }
            if let Some(role) = l.indexer_source.and_then(|s| roles.get_mut(s)) {
                role.indexer_readers = true;
            }
        }
        roles
    }
}

impl SeqCache for CpuSeqCache {
    fn bytes(&self) -> u64 {
        self.layers.iter().map(LayerState::bytes).sum()
    }
}

impl Backend for CpuBackend {
    type Weights<'w> = ModelWeights<'w>;
    type SeqCache = CpuSeqCache;

    fn upload<'w>(&self, loaded: &'w LoadedCheckpoint) -> Result<ModelWeights<'w>, WeightsError> {
        // The linears were packed for these kernels when the checkpoint was loaded.
        ModelWeights::bind(loaded)
    }

    fn new_seq_cache(
        &self,
        schema: &ModelCacheSchema,
        paged_bytes: u64,
    ) -> Result<CpuSeqCache, OpError> {
        Ok(CpuSeqCache::new(
            LayerState::for_schema(schema),
            BlockPool::with_budget(paged_bytes),
            Role::for_schema(schema),
        ))
    }

    fn snapshot(&self, seq: &CpuSeqCache, paged_bytes: u64) -> Result<CpuSeqCache, OpError> {
        Ok(CpuSeqCache::new(
            seq.layers.clone(),
            seq.pool.rebudgeted(paged_bytes),
            seq.roles.clone(),
        ))
    }

    fn embed(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        tokens: &[u32],
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let x = zeroed(&mut seq.workspace.x, tokens.len() * n * d);
        for (xt, &id) in x.chunks_mut(n * d).zip(tokens) {
            let (first, rest) = xt.split_at_mut(d);
            w.embed.row(id as usize, first);
            for stream in rest.chunks_mut(d) {
                stream.copy_from_slice(first);
            }
        }
        Ok(())
    }

    fn hc_pre(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        sublayer: Sublayer,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let (hc, norm) = match sublayer {
            Sublayer::Attention(i) => (&w.layers[i].hc_attn, &w.layers[i].attn_norm),
            Sublayer::Moe(i) => (&w.layers[i].hc_ffn, &w.layers[i].ffn_norm),
        };
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let ws = &mut seq.workspace;
        let x = &ws.x[from * n * d..];
        ws.mixes.compute(x, d, hc, k.hc);
        let h = zeroed(&mut ws.h, x.len() / n);
        for (t, (xt, ht)) in x.chunks(n * d).zip(h.chunks_mut(d)).enumerate() {
            hc_pre(xt, ws.mixes.get(t).pre, ht);
            rms_norm(ht, Some(norm), k.eps);
        }
        Ok(())
    }

    fn attention(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        at: AttentionAt,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let ws = &mut seq.workspace;
        let role = seq.roles.get(at.layer).copied().unwrap_or_default();
        // A source is a lower layer: it has run in this chunk and is only read.
        let (below, here) = seq.layers.split_at_mut(at.layer);
        let (windows_below, windows_here) = seq.saved_windows.split_at_mut(at.layer);
        let (selections_below, selections_here) = seq.saved_selections.split_at_mut(at.layer);
        let sharing = match (role.kv_source, role.indexer_source) {
            (Some(s), _) if s < at.layer => Sharing::KvMember {
                source: &below[s],
                window: &windows_below[s],
            },
            (None, Some(s)) if s < at.layer => Sharing::IndexerMember {
                selection: &selections_below[s],
            },
            _ if role.kv_readers || role.indexer_readers => Sharing::Source {
                window: role.kv_readers.then(|| &mut windows_here[0]),
                selection: role.indexer_readers.then(|| &mut selections_here[0]),
            },
            _ => Sharing::Alone,
        };
        let step = AttentionStep {
            ratio: at.ratio,
            p0: at.p0,
            first_output: at.first_output,
            state: &mut here[0],
            pool: &mut seq.pool,
            rope: at.rope,
            sharing,
        };
        let layer = &w.layers[at.layer];
        let (h, buffers, y) = (&ws.h, &mut ws.attention, &mut ws.y);
        attention(&layer.attn, h, step, k.attention, k.numerics, buffers, y)?;
        Ok(())
    }

    fn moe(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        layer: usize,
        tokens: &[u32],
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let ws = &mut seq.workspace;
        let weights = &w.layers[layer].moe;
        moe(
            weights,
            &ws.h,
            tokens,
            k.moe,
            k.numerics,
            &mut ws.moe,
            &mut ws.y,
        );
        Ok(())
    }

    fn hc_post(
        &self,
        k: &ModelConstants,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let ws = &mut seq.workspace;
        // The last hc_pre mixed the chunk's last tokens: those from `tokens − mixes`.
        let tokens = ws.x.len() / (n * d);
        let first_mix = from - (tokens - ws.mixes.tokens());
        ws.mixes
            .leave(&mut ws.x[from * n * d..], &ws.y, d, first_mix);
        Ok(())
    }

    fn head(
        &self,
        w: &ModelWeights,
        k: &ModelConstants,
        from: usize,
        seq: &mut CpuSeqCache,
    ) -> Result<(), OpError> {
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let ws = &mut seq.workspace;
        let rows = (ws.x.len() / (n * d)).saturating_sub(from);
        let u = zeroed(&mut ws.u, rows * d);
        for (out, xt) in u.chunks_mut(d).zip(ws.x.chunks(n * d).skip(from)) {
            ws.mixes.collapse(xt, &w.hc_head, k.hc, out);
            rms_norm(out, Some(&w.norm), k.eps);
        }
        w.head
            .forward(u, zeroed(&mut ws.logits, rows * w.head.out()));
        Ok(())
    }

    fn read_logits(&self, seq: &CpuSeqCache, out: &mut Vec<f32>) -> Result<(), OpError> {
        out.clear();
        out.extend_from_slice(&seq.workspace.logits);
        Ok(())
    }

    fn sample(
        &self,
        seq: &mut CpuSeqCache,
        vocab: usize,
        cut: &SampleCut,
        draw: Option<f64>,
    ) -> Result<Option<u32>, OpError> {
        let ws = &mut seq.workspace;
        let Some(first) = ws.logits.len().checked_sub(vocab) else {
            return Ok(None);
        };
        Ok(sample_or_argmax(
            &ws.logits[first..],
            cut,
            draw,
            &mut ws.sample,
        ))
    }
}
