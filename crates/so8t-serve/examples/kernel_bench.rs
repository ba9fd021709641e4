//! Times the weight × activation kernels of `so8t_serve::kernels` on SmolLM2-135M shapes, single
//! thread: for each weight type and matrix, one activation row against every weight row
//! (a mat-vec, as in token generation) with the scalar code, `vec_dot` per row and
//! `vec_dot_rows`, and `vec_dot_multi` with 4 activation rows (prompt processing). Prints ns per weight row and
//! GB/s of weight bytes.
//!
//! `cargo run --release -p so8t-serve --example kernel_bench [-- TYPE...]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use so8t_gguf::quant::{f32_to_f16_bits, quantize_rows};
use so8t_serve::kernels::{
    act_row_bytes, act_type, backend, mat_mul, quantize_act_row, vec_dot, vec_dot_multi,
    vec_dot_rows, vec_dot_scalar, weight_row_bytes, ActType, GgmlType, SUPPORTED,
};

/// xorshift64* values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A `rows × cols` weight matrix of type `w`: quantized random values, or (types so8t-gguf does
/// not quantize) random blocks with small f16 scales.
fn matrix(w: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols;
    let x: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
    if let Ok(b) = quantize_rows(w, &x, cols) {
        return b;
    }
    let rb = weight_row_bytes(w, cols);
    let mut b: Vec<u8> = (0..rows * rb).map(|_| rng.next() as u8).collect();
    let (ts, fields): (usize, &[usize]) = match w {
        GgmlType::Q4_1 => (20, &[0, 2]),
        GgmlType::Q5_1 => (24, &[0, 2]),
        GgmlType::Q2_K => (84, &[80, 82]),
        GgmlType::Q3_K => (110, &[108]),
        other => panic!("no generator for {other}"),
    };
    for blk in b.chunks_exact_mut(ts) {
        for &f in fields {
            blk[f..f + 2].copy_from_slice(&f32_to_f16_bits(0.01).to_le_bytes());
        }
    }
    b
}

/// Runs `f` (one full pass) in batches of about 2 ms until `min` has elapsed; the best batch's
/// seconds per pass (the machine is shared, so the minimum is the honest figure).
fn time(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < min {
        let t = Instant::now();
        let mut n = 0u32;
        while t.elapsed() < Duration::from_millis(2) {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).map(|s| s.to_uppercase()).collect();
    let min = Duration::from_millis(300);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    println!("backend: {}", backend());
    println!(
        "{:<5} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "type",
        "rows×cols",
        "scal ns/r",
        "scal GB/s",
        "dot ns/r",
        "dot GB/s",
        "rows ns/r",
        "rows GB/s",
        "×4 ns/dot",
        "×4 GB/s*",
        "mm ns/dot",
        "mm GB/s*"
    );
    for w in SUPPORTED {
        if !filter.is_empty() && !filter.iter().any(|f| f == w.name()) {
            continue;
        }
        let a = act_type(w).expect("supported");
        for (rows, cols) in [(576, 1536), (1536, 576), (49152, 576)] {
            // K-quants need whole 256-weight super-blocks: 576 columns become 512.
            let cols = if w.block_size() == 256 {
                cols / 256 * 256
            } else {
                cols
            };
            let wm = matrix(w, rows, cols, &mut rng);
            let rb = weight_row_bytes(w, cols);
            let x: Vec<f32> = (0..4 * cols).map(|_| rng.unit()).collect();
            let ab = act_row_bytes(a, cols);
            let mut acts = vec![0u8; 4 * ab];
            for (o, xr) in acts.chunks_exact_mut(ab).zip(x.chunks_exact(cols)) {
                quantize_act_row(a, xr, o);
            }
            let act0 = &acts[..ab];
            let mut out = vec![0f32; 4 * rows];
            let t_scalar = time(min, || {
                for (o, r) in out.iter_mut().zip(wm.chunks_exact(rb)) {
                    *o = vec_dot_scalar(w, cols, r, act0);
                }
                black_box(&out);
            });
            let t_fast = time(min, || {
                for (o, r) in out.iter_mut().zip(wm.chunks_exact(rb)) {
                    *o = vec_dot(w, cols, r, act0);
                }
                black_box(&out);
            });
            let t_rows = time(min, || {
                vec_dot_rows(w, cols, &wm, rows, act0, &mut out);
                black_box(&out);
            });
            let t_multi = time(min, || {
                for (o, r) in out.chunks_exact_mut(4).zip(wm.chunks_exact(rb)) {
                    vec_dot_multi(w, cols, r, &acts, 4, o);
                }
                black_box(&out);
            });
            let mut mm = vec![0f32; 4 * rows];
            let t_mm = time(min, || {
                mat_mul(w, cols, &wm, rows, &acts, 4, &mut mm, rows);
                black_box(&mm);
            });
            let bytes = wm.len() as f64;
            let ns = |t: f64| t * 1e9 / rows as f64;
            println!(
                "{:<5} {:>11} {:>9.1} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9.2}",
                w.name(),
                format!("{rows}×{cols}"),
                ns(t_scalar),
                bytes / t_scalar / 1e9,
                ns(t_fast),
                bytes / t_fast / 1e9,
                ns(t_rows),
                bytes / t_rows / 1e9,
                ns(t_multi) / 4.0,
                4.0 * bytes / t_multi / 1e9,
                ns(t_mm) / 4.0,
                4.0 * bytes / t_mm / 1e9,
            );
        }
    }
    for a in [ActType::F16, ActType::Q8_0, ActType::Q8_1, ActType::Q8_K] {
        for cols in [512usize, 1536] {
            let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
            let mut o = vec![0u8; act_row_bytes(a, cols)];
            let t = time(min / 3, || {
                quantize_act_row(a, &x, &mut o);
                black_box(&o);
            });
            println!("quantize_act_row {a:?} {cols}: {:.0} ns", t * 1e9);
        }
    }
    println!("scal: vec_dot_scalar; dot: vec_dot per row; rows: vec_dot_rows over the matrix");
    println!("×4: vec_dot_multi, one weight row against 4 activation rows; GB/s* counts the");
    println!("weights once per dot; mm: mat_mul, the matrix against 4 activation rows");
}
