//! `.npy` writing and reading: exact header bytes derived by hand from the NPY 1.0 spec, round
//! trips, streaming row by row, refusals of mismatched shapes and foreign dtypes, and (when a
//! Python with numpy is available) numpy loading our files and us loading numpy's.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsv4_cli::npy::{
    npy_f32_header, parse_npy_f32, read_npy_f32, write_npy_f32, NpyF32, NpyF32Writer,
};

/// The Python used for the numpy cross-checks; `DSV4_NUMPY_PYTHON` overrides it.
fn numpy_python() -> Option<PathBuf> {
    let python = std::env::var_os("DSV4_NUMPY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/venv-ml/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(python)
    } else {
        eprintln!(
            "SKIPPED numpy cross-check: {} with numpy is not available (set DSV4_NUMPY_PYTHON)",
            python.display()
        );
        None
    }
}

fn python(python: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header for shape (2, 3), derived from the spec by hand:
/// - magic `\x93NUMPY` (6 bytes), version `\x01\x00` (2), header length as little-endian u16 (2);
/// - dict `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, which is
///   17 (`{'descr': '<f4', `) + 24 (`'fortran_order': False, `) + 17 (`'shape': (2, 3), `)
///   + 1 (`}`) = 59 bytes;
/// - 10 + 59 + 1 (`\n`) = 70, rounded up to a multiple of 64 is 128, so 128 − 70 = 58 spaces of
///   padding and a header length of 128 − 10 = 118 = 0x76.
#[test]
fn header_bytes_match_the_spec() {
    let mut want = Vec::new();
    want.extend_from_slice(b"\x93NUMPY\x01\x00\x76\x00");
    want.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    want.extend_from_slice(&[b' '; 58]);
    want.push(b'\n');
    assert_eq!(want.len(), 128);
    assert_eq!(npy_f32_header(&[2, 3]).unwrap(), want);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    let data = [0.0f32, 1.0, -2.5, 3.25, f32::MAX, -0.0];
    write_npy_f32(&path, &data, &[2, 3]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..128], &want[..]);
    // 1.0f32 = 0x3f800000, little-endian; -2.5 = 0xc0200000.
    assert_eq!(&bytes[128..136], b"\x00\x00\x00\x00\x00\x00\x80\x3f");
    assert_eq!(&bytes[136..140], b"\x00\x00\x20\xc0");
    assert_eq!(bytes.len(), 128 + 6 * 4);
}

#[test]
fn headers_of_other_ranks_are_aligned_and_well_formed() {
    for (shape, tuple) in [
        (vec![], "()"),
        (vec![3], "(3,)"),
        (vec![0, 5], "(0, 5)"),
        (vec![4096, 129_280], "(4096, 129280)"),
        (vec![1; 30], "(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)"),
    ] {
        let h = npy_f32_header(&shape).unwrap();
        assert_eq!(h.len() % 64, 0, "{shape:?}");
        assert_eq!(h.last(), Some(&b'\n'));
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
        assert!(h[10..].starts_with(dict.as_bytes()), "{shape:?}");
        assert!(h[10 + dict.len()..h.len() - 1].iter().all(|&b| b == b' '));
    }
}

#[test]
fn round_trips_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [vec![], vec![7], vec![3, 0], vec![2, 3, 4], vec![5, 20_000]] {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| (i as f32).sin() * 1e3).collect();
        let path = dir.path().join("r.npy");
        write_npy_f32(&path, &data, &shape).unwrap();
        let back = read_npy_f32(&path).unwrap();
        assert_eq!(
            back,
            NpyF32 {
                shape: shape.clone(),
                data: data.clone()
            }
        );

        // Row by row through the streaming writer gives the same bytes.
        let mut w = NpyF32Writer::new(Vec::new(), &shape).unwrap();
        let row = shape.last().copied().unwrap_or(1).max(1);
        for chunk in data.chunks(row) {
            w.write(chunk).unwrap();
        }
        let streamed = w.finish().unwrap();
        assert_eq!(streamed, std::fs::read(&path).unwrap(), "{shape:?}");
    }
}

#[test]
fn mismatched_sizes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npy");
    let err = write_npy_f32(&path, &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("(2, 2)"), "{err}");
    assert!(!path.exists(), "a refused write created the file");
    assert!(write_npy_f32(&path, &[], &[usize::MAX, 2]).is_err());

    let mut w = NpyF32Writer::new(Vec::new(), &[2]).unwrap();
    assert!(w.write(&[1.0, 2.0, 3.0]).is_err());
    w.write(&[1.0]).unwrap();
    assert!(w.finish().is_err(), "a short array was accepted");

    // Truncated data, bad magic, foreign dtype, Fortran order.
    let mut bytes = npy_f32_header(&[2]).unwrap();
    bytes.extend_from_slice(&[0; 7]);
    assert!(parse_npy_f32(&bytes)
        .unwrap_err()
        .contains("2 float32 values"));
    assert!(parse_npy_f32(b"PK\x03\x04 not npy").is_err());
    let foreign = |dict: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(&[0; 8]);
        parse_npy_f32(&b)
    };
    assert!(
        foreign("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }")
            .unwrap_err()
            .contains("'>f4'")
    );
    assert!(foreign("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }").is_err());
    assert!(foreign("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }").is_err());
    // Key order, double quotes and Python 2 longs are all accepted.
    let ok = foreign("{\"shape\": (2L,), \"fortran_order\": False, \"descr\": \"<f4\"}\n").unwrap();
    assert_eq!(ok.shape, vec![2]);

    let err = read_npy_f32(dir.path().join("missing.npy")).unwrap_err();
    assert!(err.to_string().contains("missing.npy"), "{err}");
}

#[test]
fn numpy_loads_our_files() {
    let Some(py) = numpy_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.1 - 1.0).collect();
    write_npy_f32(&path, &data, &[2, 3, 4]).unwrap();
    let out = python(
        &py,
        "import sys, numpy as np\n\
         a = np.load(sys.argv[1])\n\
         print(a.dtype.str, a.shape, a.flags['C_CONTIGUOUS'], a.tobytes().hex())",
        &[&path],
    );
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(out.trim(), format!("<f4 (2, 3, 4) True {}", hex(&bytes)));

    // numpy's own header parser agrees on a 1-D and a 0-d array too.
    for (shape, data, want) in [
        (vec![5usize], vec![1.0f32; 5], "(5,)"),
        (vec![], vec![2.5f32], "()"),
    ] {
        write_npy_f32(&path, &data, &shape).unwrap();
        let out = python(
            &py,
            "import sys, numpy as np\nprint(np.load(sys.argv[1]).shape)",
            &[&path],
        );
        assert_eq!(out.trim(), want);
    }
}

#[test]
fn we_load_numpy_files() {
    let Some(py) = numpy_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.npy");
    python(
        &py,
        "import sys, numpy as np\n\
         np.save(sys.argv[1], (np.arange(24, dtype='<f4') * 0.5 - 3).reshape(2, 3, 4))",
        &[&path],
    );
    let got = read_npy_f32(&path).unwrap();
    let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    assert_eq!(
        got,
        NpyF32 {
            shape: vec![2, 3, 4],
            data: want
        }
    );

    // A big-endian array from numpy is refused, not misread.
    python(
        &py,
        "import sys, numpy as np\nnp.save(sys.argv[1], np.ones(3, dtype='>f4'))",
        &[&path],
    );
    let err = read_npy_f32(&path).unwrap_err();
    assert!(err.to_string().contains("'>f4'"), "{err}");
}
