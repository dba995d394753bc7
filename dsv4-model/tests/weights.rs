//! Typed views of a written checkpoint: each linear comes back in its stored format, and its
//! dequantization applies the right scale to the right block or group.

use dsv4_formats::formats::{e4m3_to_f32, e8m0_to_f32, E2M1_VALUES};
use dsv4_model::{check, write_random_checkpoint, Checkpoint, LinearWeight, Preset};

#[test]
fn linears_dequantize_with_their_own_scales() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Preset::Tiny.config();
    write_random_checkpoint(&config, Preset::Tiny.config_json(), dir.path(), 3, u64::MAX)
        .expect("init");
    let checkpoint = Checkpoint::open(dir.path()).expect("open");
    let report = check(&config, &checkpoint);
    assert!(report.is_ok());
    let spec = |name: &str| {
        report
            .manifest
            .tensors
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.linear)
            .expect(name)
    };

    // wq_b is [256, 32] FP8: rows 0..128 use scale [0, 0], rows 128..256 scale [1, 0].
    let view = checkpoint
        .linear("layers.0.attn.wq_b", spec("layers.0.attn.wq_b.weight"))
        .expect("fp8");
    let LinearWeight::Fp8Block { q, .. } = view.weight else {
        panic!("not FP8")
    };
    let grid = checkpoint
        .tensor("layers.0.attn.wq_b.scale")
        .expect("scale")
        .data;
    let w = view.dequantize();
    assert_eq!(w.len(), 256 * 32);
    for (row, col) in [(0, 0), (127, 31), (128, 5), (255, 31)] {
        let s = e8m0_to_f32(grid[row / 128]).expect("finite");
        assert_eq!(
            w[row * 32 + col],
            e4m3_to_f32(q[row * 32 + col]) * s,
            "[{row}, {col}]"
        );
    }

    // An expert's w2 is [64, 32] FP4: byte j of a row holds elements 2j (low) and 2j+1 (high).
    let view = checkpoint
        .linear(
            "layers.1.ffn.experts.2.w2",
            spec("layers.1.ffn.experts.2.w2.weight"),
        )
        .expect("fp4");
    let LinearWeight::Fp4Group { packed, .. } = view.weight else {
        panic!("not FP4")
    };
    let scales = checkpoint
        .tensor("layers.1.ffn.experts.2.w2.scale")
        .expect("scale")
        .data;
    let w = view.dequantize();
    let byte = packed[5 * 16 + 3];
    let s = e8m0_to_f32(scales[5]).expect("finite");
    assert_eq!(w[5 * 32 + 6], E2M1_VALUES[usize::from(byte & 0xF)] * s);
    assert_eq!(w[5 * 32 + 7], E2M1_VALUES[usize::from(byte >> 4)] * s);

    // Plain tensors decode to f32; tid2eid to integers below E.
    let norm = checkpoint
        .tensor("norm.weight")
        .expect("norm")
        .to_f32()
        .expect("float");
    assert_eq!(norm.len(), 64);
    let table = checkpoint
        .tensor("layers.0.ffn.gate.tid2eid")
        .expect("table")
        .to_i64()
        .expect("ints");
    assert_eq!(table.len(), 129_280 * 2);
    assert!(table.iter().all(|&e| (0..8).contains(&e)));
    assert!(
        table.chunks(2).all(|pair| pair[0] != pair[1]),
        "experts of a token are distinct"
    );
}
