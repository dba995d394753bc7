//! NumPy `.npy` files of little-endian `float32`, the format `dsv4 score --out` promises so that
//! logits load with a bare `numpy.load` and compare against a Python reference without any
//! dsv4-specific reader.
//!
//! Writing follows the NPY format specification version 1.0: the magic `\x93NUMPY`, version
//! bytes `1 0`, a little-endian `u16` header length, then a Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (…), }` padded with spaces and ended by
//! `\n` so that the data starts at a multiple of 64 bytes, then the values in C order. The data
//! is streamed through a bounded buffer, so a `[len, vocab]` logits file of gigabytes never needs
//! a second copy in memory, and [`NpyF32Writer`] accepts it row by row as positions are scored.
//!
//! Reading ([`read_npy_f32`]) is for tests and tools: it accepts what this module writes and what
//! `numpy.save` writes for `<f4` arrays (versions 1.0–3.0, extra header padding, any key order).

use dsv4_model::shown_path;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The 6-byte magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the start of the data to this many bytes so the file can be memory-mapped.
const ALIGN: usize = 64;
/// Values converted per write call: bounds the extra memory to 64 KiB whatever the array size.
const CHUNK_VALUES: usize = 16 * 1024;

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Number of elements of an array of `shape` (1 for a 0-d array), or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `shape` written as a Python tuple: `()`, `(3,)`, `(2, 3)`.
fn python_tuple(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// The complete version-1.0 header (magic through the terminating `\n`) for a C-order `<f4`
/// array of `shape`, exactly as `numpy.lib.format` lays it out minus NumPy's optional spare
/// space for in-place growth. Exposed so tests and tools can check or predict file layout.
pub fn npy_f32_header(shape: &[usize]) -> io::Result<Vec<u8>> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        python_tuple(shape)
    );
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let total = unpadded.div_ceil(ALIGN) * ALIGN;
    let header_len = u16::try_from(total - 10).map_err(|_| {
        invalid_input(format!(
            "npy shape {} makes a header of {} bytes, more than format 1.0 allows (65535)",
            python_tuple(shape),
            total - 10
        ))
    })?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    Ok(out)
}

/// Writes a `<f4` `.npy` array to any writer piece by piece, for producers (like `dsv4 score`)
/// that compute the rows one chunk at a time and should not hold them all. The header is written
/// up front from the declared shape; [`NpyF32Writer::finish`] checks that exactly that many
/// values arrived, so a short file is an error rather than a silently truncated array.
#[derive(Debug)]
pub struct NpyF32Writer<W: Write> {
    out: W,
    expected: usize,
    written: usize,
    buf: Vec<u8>,
}

impl<W: Write> NpyF32Writer<W> {
    /// Writes the header for `shape` to `out` and gets ready for `product(shape)` values.
    pub fn new(mut out: W, shape: &[usize]) -> io::Result<Self> {
        let expected = element_count(shape).ok_or_else(|| {
            invalid_input(format!(
                "npy shape {} has more elements than fit in memory",
                python_tuple(shape)
            ))
        })?;
        out.write_all(&npy_f32_header(shape)?)?;
        Ok(Self {
            out,
            expected,
            written: 0,
            buf: Vec::with_capacity(CHUNK_VALUES.min(expected.max(1)) * 4),
        })
    }

    /// Appends the next values in C order; refuses to go past the declared shape.
    pub fn write(&mut self, data: &[f32]) -> io::Result<()> {
        if data.len() > self.expected - self.written {
            return Err(invalid_input(format!(
                "npy writer got {} values past the {} the shape declares",
                self.written + data.len() - self.expected,
                self.expected
            )));
        }
        for chunk in data.chunks(CHUNK_VALUES) {
            self.buf.clear();
            for v in chunk {
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
            self.out.write_all(&self.buf)?;
        }
        self.written += data.len();
        Ok(())
    }

    /// Checks that the array is complete, flushes, and hands back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.written != self.expected {
            return Err(invalid_input(format!(
                "npy writer got {} values but the shape declares {}",
                self.written, self.expected
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes `data` as a C-order little-endian `float32` `.npy` file of `shape` at `path`. Fails
/// before touching the file if `data.len()` is not the product of `shape`.
pub fn write_npy_f32(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> io::Result<()> {
    let path = path.as_ref();
    if element_count(shape) != Some(data.len()) {
        return Err(invalid_input(format!(
            "cannot write {}: {} values do not fill shape {}",
            shown_path(path),
            data.len(),
            python_tuple(shape)
        )));
    }
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", shown_path(path)));
    let file = File::create(path).map_err(with_path)?;
    let mut writer = NpyF32Writer::new(file, shape).map_err(with_path)?;
    writer.write(data).map_err(with_path)?;
    writer.finish().map_err(with_path)?;
    Ok(())
}

/// A `float32` array read back from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyF32 {
    /// The dimensions, outermost first (C order).
    pub shape: Vec<usize>,
    /// The values in C order.
    pub data: Vec<f32>,
}

/// Reads a `<f4` C-order `.npy` file, as written by [`write_npy_f32`] or by `numpy.save`. Any
/// other dtype, Fortran order, or a size that does not match the shape is an `InvalidData`
/// error naming the file.
pub fn read_npy_f32(path: impl AsRef<Path>) -> io::Result<NpyF32> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", shown_path(path))))?;
    parse_npy_f32(&bytes).map_err(|e| invalid_data(format!("{}: {e}", shown_path(path))))
}

/// [`read_npy_f32`] on bytes already in memory; the error is a bare one-line reason.
pub fn parse_npy_f32(bytes: &[u8]) -> Result<NpyF32, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (missing the \\x93NUMPY magic)".to_string());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let len = bytes
                .get(8..12)
                .ok_or("truncated .npy header")?
                .try_into()
                .map_err(|_| "truncated .npy header")?;
            (u32::from_le_bytes(len) as usize, 12)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let dict = HeaderDict::parse(header)?;

    let descr = dict.descr.ok_or("the .npy header has no 'descr'")?;
    if descr != "<f4" {
        return Err(format!(
            "dtype '{descr}' is not little-endian float32 ('<f4')"
        ));
    }
    if dict
        .fortran_order
        .ok_or("the .npy header has no 'fortran_order'")?
    {
        return Err("Fortran-order arrays are not supported".to_string());
    }
    let shape = dict.shape.ok_or("the .npy header has no 'shape'")?;
    let count =
        element_count(&shape).ok_or_else(|| format!("shape {} overflows", python_tuple(&shape)))?;
    let payload = &bytes[start + header_len..];
    if count.checked_mul(4) != Some(payload.len()) {
        return Err(format!(
            "shape {} needs {count} float32 values but the file holds {} bytes of data",
            python_tuple(&shape),
            payload.len()
        ));
    }
    let data = payload
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(NpyF32 { shape, data })
}

/// The three keys of an `.npy` header dict, parsed from its Python literal.
#[derive(Default)]
struct HeaderDict {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

/// A cursor over the header's Python literal, just rich enough for what `numpy.save` emits:
/// strings in either quote, `True`/`False`, and tuples of integers.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "malformed .npy header: expected '{}' at byte {}",
                c as char, self.pos
            ))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "malformed .npy header: expected a string at byte {}",
                    self.pos
                ))
            }
        };
        self.pos += 1;
        let begin = self.pos;
        while self.pos < self.s.len() && self.s[self.pos] != quote {
            self.pos += 1;
        }
        let text = self
            .s
            .get(begin..self.pos)
            .filter(|_| self.pos < self.s.len())
            .ok_or("malformed .npy header: unterminated string")?;
        self.pos += 1;
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    fn word(&mut self) -> &'a [u8] {
        self.skip_ws();
        let begin = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        &self.s[begin..self.pos]
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            other => Err(format!(
                "malformed .npy header: expected True or False, found '{}'",
                String::from_utf8_lossy(other)
            )),
        }
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(dims);
            }
            let word = self.word();
            // Python 2 wrote long integers with an `L` suffix.
            let digits = word.strip_suffix(b"L").unwrap_or(word);
            let dim = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty())
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!(
                        "malformed .npy header: bad dimension '{}' in shape",
                        String::from_utf8_lossy(word)
                    )
                })?;
            dims.push(dim);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err("malformed .npy header: bad shape tuple".to_string()),
            }
        }
    }
}

impl HeaderDict {
    fn parse(header: &str) -> Result<Self, String> {
        let mut lx = Lexer {
            s: header.as_bytes(),
            pos: 0,
        };
        let mut dict = HeaderDict::default();
        lx.expect(b'{')?;
        loop {
            if lx.peek() == Some(b'}') {
                break;
            }
            let key = lx.string()?;
            lx.expect(b':')?;
            match key.as_str() {
                "descr" => dict.descr = Some(lx.string()?),
                "fortran_order" => dict.fortran_order = Some(lx.boolean()?),
                "shape" => dict.shape = Some(lx.tuple()?),
                other => return Err(format!("unexpected key '{other}' in .npy header")),
            }
            match lx.peek() {
                Some(b',') => lx.pos += 1,
                Some(b'}') => {}
                _ => return Err("malformed .npy header dict".to_string()),
            }
        }
        Ok(dict)
    }
}
