//! Opening a checkpoint directory: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped, every header checked before any tensor is used,
//! and borrowed views of the tensors (no copy of the weights).

use crate::shown::{clip, shown_path};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use serde::Deserialize;

use crate::files::read_text;
use crate::map_guard::GuardedMap;
use crate::names::{fused_experts, native_name};
use crate::DType;

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Largest index file read (V4-Pro's, for 145,116 tensors, is about 10 MB).
const MAX_INDEX_BYTES: u64 = 1 << 28;

/// One thing wrong with a checkpoint, naming the file and tensor it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name inside the checkpoint directory.
    pub file: Option<String>,
    /// Tensor name.
    pub tensor: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with a whole file.
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: Some(clip(file)),
            tensor: None,
            message: message.into(),
        }
    }

    /// A problem with one tensor of a file.
    pub fn tensor(file: Option<&str>, tensor: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.map(clip),
            tensor: Some(clip(tensor)),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(tensor) = &self.tensor {
            write!(f, "tensor `{tensor}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A checkpoint that could not be opened at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);

/// A memory-mapped safetensors file.
struct SafetensorsFile {
    name: String,
    map: GuardedMap,
}

/// Where a tensor's bytes are.
struct TensorLocation {
    stored: String,
    /// The file it was read from.
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// A borrowed view of one stored tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Its name as stored in the file.
    pub name: &'a str,
    /// The file holding it.
    pub file: &'a str,
    /// Stored dtype.
    pub dtype: DType,
    /// Stored shape.
    pub shape: &'a [usize],
    /// Its bytes, little-endian, straight from the mapped file.
    pub data: &'a [u8],
}

/// An opened checkpoint directory: what could be read, and the problems met while reading.
pub struct Checkpoint {
    dir: PathBuf,
    /// The mapped files.
    files: Vec<SafetensorsFile>,
    tensors: BTreeMap<String, TensorLocation>,
    /// File- and header-level problems (absent shards, truncation, lying offsets, …).
    pub problems: Vec<Problem>,
}

#[derive(Deserialize)]
struct IndexJson {
    weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

impl Checkpoint {
    /// Opens `dir`: its index and shards, or its single `model.safetensors`. Fails only when no
    /// weights can be found at all; everything else wrong is collected in `problems`.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let mut checkpoint = Self {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
            problems: Vec::new(),
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(OpenError(format!("{}: not a directory", shown_path(dir)))),
            Err(e) => return Err(OpenError(format!("{}: {e}", shown_path(dir)))),
        }
        let index_path = dir.join(INDEX_FILE);
        if present(&index_path)? {
            let index = read_index(&index_path)?;
            checkpoint.open_shards(&index)?;
        } else if present(&dir.join(SINGLE_FILE))? {
            checkpoint.open_file(SINGLE_FILE);
        } else {
            return Err(OpenError(format!(
                "{}: no {SINGLE_FILE} or {INDEX_FILE}",
                shown_path(dir)
            )));
        }
        Ok(checkpoint)
    }

    fn open_shards(&mut self, weight_map: &BTreeMap<String, String>) -> Result<(), OpenError> {
        let mut shards: Vec<&String> = weight_map.values().collect();
        shards.sort();
        shards.dedup();
        for shard in shards {
            // Shards live in the checkpoint directory: an index may not reach elsewhere.
            let mut parts = Path::new(shard).components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            );
            if !plain {
                return Err(OpenError(format!(
                    "{INDEX_FILE} names shard `{}`: expected a file name inside the checkpoint directory",
                    clip(shard)
                )));
            }
            let path = self.dir.join(shard);
            match present(&path) {
                Ok(true) => {}
                Ok(false) => {
                    self.problems.push(Problem::file(
                        shard,
                        format!("named in {INDEX_FILE} but absent"),
                    ));
                    continue;
                }
                Err(e) => {
                    self.problems.push(Problem::file(shard, e.0));
                    continue;
                }
            }
            let Some(file) = self.open_file(shard) else {
                continue;
            };
            let stored: Vec<(String, String)> = self
                .tensors
                .iter()
                .filter(|(_, loc)| loc.file == file)
                .map(|(native, loc)| (loc.stored.clone(), native.clone()))
                .collect();
            for (name, _) in weight_map.iter().filter(|(_, f)| *f == shard) {
                if !stored.iter().any(|(s, _)| s == name) {
                    self.problems.push(Problem::tensor(
                        Some(shard),
                        name,
                        format!("listed in {INDEX_FILE} but not in the file"),
                    ));
                }
            }
            for (name, native) in stored {
                if weight_map.get(&name) != Some(shard) {
                    self.problems.push(Problem::tensor(
                        Some(shard),
                        &name,
                        format!("in the file but {INDEX_FILE} places it elsewhere or nowhere"),
                    ));
                    self.tensors.remove(&native);
                }
            }
        }
        Ok(())
    }

    /// Maps one file and records its tensors; returns its file number when its header is sound.
    fn open_file(&mut self, name: &str) -> Option<usize> {
        let path = self.dir.join(name);
        let map = match File::open(&path).and_then(|f| {
            // SAFETY: the map is read-only; the engine never writes through it. A file truncated
            // by another process while mapped raises SIGBUS on access, which `map_guard` turns
            // into a message naming the file.
            unsafe { Mmap::map(&f) }
        }) {
            Ok(map) => map,
            Err(e) => {
                self.problems
                    .push(Problem::file(name, format!("cannot read: {e}")));
                return None;
            }
        };
        let entries = match parse_header(&map) {
            Ok(entries) => entries,
            Err(message) => {
                self.problems.push(Problem::file(name, message));
                return None;
            }
        };
        let file = self.files.len();
        let mut placed: Vec<(Range<usize>, String)> = Vec::new();
        for (tensor, location) in entries {
            match location {
                Ok((dtype, shape, bytes)) => {
                    placed.push((bytes.clone(), tensor.clone()));
                    let parts = match split_stored(&tensor, dtype, &shape, &bytes) {
                        Ok(parts) => parts,
                        Err(message) => {
                            self.problems
                                .push(Problem::tensor(Some(name), &tensor, message));
                            continue;
                        }
                    };
                    for (native, stored, shape, bytes) in parts {
                        if let Some(other) = self.tensors.get(&native) {
                            let message = format!("stored twice (also as `{}`)", other.stored);
                            self.problems
                                .push(Problem::tensor(Some(name), &stored, message));
                            continue;
                        }
                        let location = TensorLocation {
                            stored,
                            file,
                            dtype,
                            shape,
                            bytes,
                        };
                        self.tensors.insert(native, location);
                    }
                }
                Err(message) => self
                    .problems
                    .push(Problem::tensor(Some(name), &tensor, message)),
            }
        }
        placed.sort_by_key(|(range, _)| range.start);
        for pair in placed.windows(2) {
            if pair[1].0.start < pair[0].0.end {
                self.problems.push(Problem::tensor(
                    Some(name),
                    &pair[1].1,
                    format!("its bytes overlap tensor `{}`", pair[0].1),
                ));
            }
        }
        self.files.push(SafetensorsFile {
            name: name.to_string(),
            map: GuardedMap::new(map, &shown_path(&path)),
        });
        Some(file)
    }

    /// A view of the tensor whose native name is `name`, if it was read without problems.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let loc = self.tensors.get(name)?;
        Some(TensorView {
            name: &loc.stored,
            file: &self.files[loc.file].name,
            dtype: loc.dtype,
            shape: &loc.shape,
            data: &self.files[loc.file].map.map()[loc.bytes.clone()],
        })
    }

    /// Native names of all readable tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of readable tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor could be read.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names of the files that were mapped.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.name.as_str())
    }

    /// Drops the pages of tensor `name` from this process's mapping (the page cache keeps them,
    /// and a later read faults them in again): for a tensor copied elsewhere, so the resident
    /// size never holds both copies.
    pub fn release(&self, name: &str) {
        let Some(loc) = self.tensors.get(name) else {
            return;
        };
        // SAFETY: the map is a read-only private file mapping; dropping its pages only makes a
        // later read fault them in again from the page cache.
        let _ = unsafe {
            self.files[loc.file].map.map().unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                loc.bytes.start,
                loc.bytes.len(),
            )
        };
    }
}

/// A stored tensor as native tensors: itself under its native name, or, for transformers'
/// fused expert tensors, one slice per expert and projection (no copy).
type NativePart = (String, String, Vec<usize>, Range<usize>);

fn split_stored(
    stored: &str,
    dtype: DType,
    shape: &[usize],
    bytes: &Range<usize>,
) -> Result<Vec<NativePart>, String> {
    let Some((layer, gate_up)) = fused_experts(stored) else {
        let part = (
            native_name(stored),
            stored.to_string(),
            shape.to_vec(),
            bytes.clone(),
        );
        return Ok(vec![part]);
    };
    let &[experts, rows, cols] = shape else {
        return Err(format!(
            "fused expert tensor of shape {shape:?}, expected 3 dims"
        ));
    };
    if gate_up && rows % 2 != 0 {
        return Err(format!(
            "gate_up_proj of shape {shape:?} has an odd row count"
        ));
    }
    let size = dtype.size() as usize;
    let per_expert = rows * cols * size;
    let mut parts = Vec::new();
    for e in 0..experts {
        let start = bytes.start + e * per_expert;
        let slices: Vec<(&str, &str, usize, usize)> = if gate_up {
            let half = rows / 2;
            vec![
                ("w1", ":I", half, start),
                ("w3", "I:", half, start + half * cols * size),
            ]
        } else {
            vec![("w2", ":", rows, start)]
        };
        for (w, range, n, begin) in slices {
            parts.push((
                format!("layers.{layer}.ffn.experts.{e}.{w}.weight"),
                format!("{stored}[{e}, {range}]"),
                vec![n, cols],
                begin..begin + n * cols * size,
            ));
        }
    }
    Ok(parts)
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>, OpenError> {
    let text = read_text(path, MAX_INDEX_BYTES, "a safetensors index")
        .map_err(|e| OpenError(e.to_string()))?;
    parse_index(&text).map_err(|e| OpenError(format!("{}: {e}", shown_path(path))))
}

/// The weight map of a `model.safetensors.index.json` text: tensor name → shard file name.
pub fn parse_index(text: &str) -> Result<BTreeMap<String, String>, String> {
    let index: IndexJson =
        serde_json::from_str(text).map_err(|e| format!("not a valid index: {e}"))?;
    Ok(index.weight_map)
}

/// Whether `path` is a regular file: absent is `false`; a directory, FIFO or device in its place,
/// or a path that cannot be followed (a loop of links, no permission), is an error saying so.
fn present(path: &Path) -> Result<bool, OpenError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(_) => Err(OpenError(format!(
            "{}: not a regular file",
            shown_path(path)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link is absent too, but say so.
            match std::fs::symlink_metadata(path) {
                Ok(_) => Err(OpenError(format!(
                    "{}: a link to nothing",
                    shown_path(path)
                ))),
                Err(_) => Ok(false),
            }
        }
        Err(e) => Err(OpenError(format!("{}: {e}", shown_path(path)))),
    }
}

/// A header entry: its dtype, shape and absolute byte range, or why it is unusable.
pub type Entry = (String, Result<(DType, Vec<usize>, Range<usize>), String>);

/// Parses and checks a safetensors header against the size of `file`, the whole file's bytes.
pub fn parse_header(file: &[u8]) -> Result<Vec<Entry>, String> {
    let size = file.len() as u64;
    let Some(prefix) = file.get(..8) else {
        return Err(format!(
            "{size} bytes: too short for a safetensors header (truncated?)"
        ));
    };
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > size {
        return Err(format!(
            "header claims {header_len} bytes but the file has {size} (truncated or not safetensors)"
        ));
    }
    let data_start = 8 + header_len as usize;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&file[8..data_start])
        .map_err(|e| format!("header is not valid JSON: {e}"))?;
    let data_len = file.len() - data_start;
    let mut entries = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry = serde_json::from_value::<HeaderEntry>(value)
            .map_err(|e| format!("malformed header entry: {e}"))
            .and_then(|h| locate(h, data_start, data_len));
        entries.push((name, entry));
    }
    Ok(entries)
}

/// Checks one header entry's dtype, shape and offsets.
fn locate(
    h: HeaderEntry,
    data_start: usize,
    data_len: usize,
) -> Result<(DType, Vec<usize>, Range<usize>), String> {
    let dtype = DType::from_safetensors_name(&h.dtype)
        .ok_or_else(|| format!("unsupported dtype {}", h.dtype))?;
    let [begin, end] = h.data_offsets;
    let needed = h
        .shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    if end < begin || end > data_len {
        return Err(format!(
            "data offsets [{begin}, {end}) fall outside the {data_len} data bytes (truncated file or lying header)"
        ));
    }
    if (end - begin) as u64 != needed {
        return Err(format!(
            "data offsets span {} bytes but shape {:?} of {} needs {needed}",
            end - begin,
            h.shape,
            h.dtype
        ));
    }
    Ok((dtype, h.shape, data_start + begin..data_start + end))
}
