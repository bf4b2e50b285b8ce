//! Each int8 kernel this CPU runs (VNNI, AVX2) and each bf16 kernel (AMX, AVX-512 BF16) against f32 `gemm`
//! on a model-shaped product (4096 × 384 × 1536: an all-MiniLM-L6-v2 feed-forward layer over a
//! batch of 4,096 tokens), all cores, three rounds of ten products each:
//!
//!     cargo run --release -p quiver-runtime --example kernel_speed
//!
//! End-to-end throughput is `bench/run --systems quiver,quiver:bf16,quiver:int8,...`.

use quiver_runtime::kernels::{
    matmul, matmul_bf16, matmul_int8, Bf16Kernel, Bf16Matrix, Int8Kernel, MatMut, MatRef,
    QuantizedMatrix,
};
use std::time::Instant;

fn main() {
    let (m, k, n) = (4096, 384, 1536);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let quantized: Vec<_> = Int8Kernel::available()
        .into_iter()
        // The portable loop takes minutes on this shape; its speed is not in question.
        .filter(|kernel| *kernel != Int8Kernel::Portable)
        .map(|kernel| (kernel, QuantizedMatrix::quantize_for(&w, k, n, kernel)))
        .collect();
    let bf16: Vec<_> = Bf16Kernel::available()
        .into_iter()
        .filter(|kernel| *kernel != Bf16Kernel::Portable)
        .map(|kernel| (kernel, Bf16Matrix::pack_for(&w, k, n, kernel)))
        .collect();
    let flops = 2.0 * (m * k * n) as f64;
    let mut out = vec![0.0f32; m * n];
    let threads = rayon::current_num_threads();
    // Ten products per figure: one takes a few milliseconds, and on these shared machines a
    // single one varied by half.
    let rate = |product: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..10 {
            product();
        }
        10.0 * flops / t.elapsed().as_secs_f64() / 1e9
    };
    for _ in 0..3 {
        let f32_rate = rate(&mut || {
            matmul(
                MatMut::row_major(&mut out, m, n),
                MatRef::row_major(&x, m, k),
                MatRef::row_major(&w, k, n),
                1.0,
                false,
                threads,
            )
        });
        let mut line = format!("f32 {f32_rate:.1} GFLOP/s");
        for (kernel, q) in &quantized {
            let r = rate(&mut || matmul_int8(&mut out, &x, m, q));
            line.push_str(&format!(", int8 {kernel:?} {r:.1} GOP/s"));
        }
        for (kernel, packed) in &bf16 {
            let r = rate(&mut || matmul_bf16(&mut out, &x, m, packed));
            line.push_str(&format!(", bf16 {kernel:?} {r:.1} GFLOP/s"));
        }
        println!("{line}");
    }
}
