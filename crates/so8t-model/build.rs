//! With the `cuda` feature: compiles `src/cuda/train_kernels.cu` to PTX (nvcc from `$NVCC` or
//! PATH, for `compute_$CUDA_COMPUTE_CAP`, default 80) into OUT_DIR for `include_str!`.
fn main() {
    println!("cargo:rerun-if-changed=src/cuda/train_kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let ptx = out.join("train_kernels.ptx");
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("src/cuda/train_kernels.cu")
        .arg("-o")
        .arg(&ptx)
        .status()
        .unwrap_or_else(|e| panic!("running {nvcc} (set NVCC or put nvcc on PATH): {e}"));
    assert!(
        status.success(),
        "{nvcc} failed on src/cuda/train_kernels.cu"
    );
}
