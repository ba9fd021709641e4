//! With the `cuda` feature: compiles the kernels of `src/cuda/*.cu` to PTX (nvcc from `$NVCC` or
//! PATH, for `compute_$CUDA_COMPUTE_CAP`, default 80) into OUT_DIR for `include_str!`.

/// The kernel files, each compiled to `OUT_DIR/{name}.ptx`.
const KERNELS: [&str; 2] = ["train_kernels", "flash_attention"];

fn main() {
    for k in KERNELS {
        println!("cargo:rerun-if-changed=src/cuda/{k}.cu");
    }
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for k in KERNELS {
        let src = format!("src/cuda/{k}.cu");
        let ptx = out.join(format!("{k}.ptx"));
        let status = std::process::Command::new(&nvcc)
            .args(["--ptx", "-O3"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(&src)
            .arg("-o")
            .arg(&ptx)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} (set NVCC or put nvcc on PATH): {e}"));
        assert!(status.success(), "{nvcc} failed on {src}");
    }
}
