//! The int8 kernel against f32 `gemm` on a model-shaped product (4096 × 384 × 1536: an
//! all-MiniLM-L6-v2 feed-forward layer over a batch of 4,096 tokens), both cores, best of three:
//!
//!     cargo run --release -p quiver-runtime --example int8_speed
//!
//! End-to-end throughput is `bench/run --quantize int8`.

use quiver_runtime::kernels::{matmul, matmul_int8, MatMut, MatRef, QuantizedMatrix};
use std::time::Instant;

fn main() {
    let (m, k, n) = (4096, 384, 1536);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let q = QuantizedMatrix::quantize(&w, k, n);
    let mut out = vec![0.0f32; m * n];
    let threads = rayon::current_num_threads();
    for _ in 0..3 {
        let t = Instant::now();
        matmul(
            MatMut::row_major(&mut out, m, n),
            MatRef::row_major(&x, m, k),
            MatRef::row_major(&w, k, n),
            1.0,
            false,
            threads,
        );
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        matmul_int8(&mut out, &x, m, &q);
        let i = t.elapsed().as_secs_f64();
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "f32 {:.1} GFLOP/s, int8 {:.1} GOP/s",
            flops / f / 1e9,
            flops / i / 1e9
        );
    }
}
