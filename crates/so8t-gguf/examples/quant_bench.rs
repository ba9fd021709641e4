//! Quantizer throughput: single-threaded MB/s of f32 input per type, on pseudo-random
//! weights. `cargo run --release -p so8t-gguf --example quant_bench [MIB]`

use std::time::Instant;

use so8t_gguf::quant::{quantize, GgmlType};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let n = mib * (1 << 20) / 4 / 256 * 256;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let src: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        })
        .collect();
    println!("{mib} MiB of f32 per type, one thread");
    for ty in [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let t = Instant::now();
        let out = quantize(ty, &src).expect("quantize");
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:>6}: {:8.1} MB/s of input ({:.3} s, {} bytes out)",
            ty.to_string(),
            (n * 4) as f64 / s / 1e6,
            s,
            out.len()
        );
    }
}
