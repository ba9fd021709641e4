//! Environment checks before heavy steps: free disk for the outputs and available memory,
//! estimated from the base model's size, fail early with a clear message.

use std::path::Path;

use crate::steps::Ctx;

/// Free bytes on the file system holding `path` (None when unknown).
pub fn free_disk(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Available memory in bytes (`MemAvailable` of /proc/meminfo; None when unknown).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn model_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Checks what `step` needs; `Err` says what is missing.
pub fn before(ctx: &Ctx<'_>, step: &str) -> Result<(), String> {
    let base = model_bytes(&ctx.base_model());
    let quants = ctx.cfg.export.quants.len() as u64;
    // Disk: training writes checkpoints and a copy of its final state, bake one model, export
    // each flavour of two models (at most the f16 size each).
    let (disk, ram) = match step {
        "train" => (3 * base, 3 * base),
        "bake" => (base + base / 4, 2 * base),
        "export" => (2 * quants * base, base),
        "import" => (2 * quants * base, 0),
        "eval-a" | "eval-b" => (16 << 20, base),
        _ => (16 << 20, 0),
    };
    let disk = disk + (64 << 20);
    if let Some(free) = free_disk(&ctx.dir) {
        if free < disk {
            return Err(format!(
                "needs about {} of free disk in {}, {} is free",
                gib(disk),
                ctx.dir.display(),
                gib(free)
            ));
        }
    }
    if let Some(avail) = available_memory() {
        if avail < ram {
            return Err(format!(
                "needs about {} of memory, {} is available",
                gib(ram),
                gib(avail)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::config::PipelineConfig;

    #[test]
    fn a_base_model_larger_than_the_disk_fails_before_training() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        // A sparse 8 TiB weight file: no disk here has three times that free.
        let f = std::fs::File::create(base.join("model.safetensors")).unwrap();
        f.set_len(1 << 43).unwrap();
        let cfg = PipelineConfig {
            base_model: base.display().to_string(),
            ..Default::default()
        };
        let ctx = Ctx {
            cfg: &cfg,
            cfg_dir: d.path().to_path_buf(),
            dir: d.path().to_path_buf(),
            interrupt: Arc::new(AtomicBool::new(false)),
            log: Arc::new(|_: &str| {}),
        };
        let e = before(&ctx, "train").unwrap_err();
        assert!(e.contains("of free disk in") && e.contains("GiB"), "{e}");
        assert!(before(&ctx, "data").is_ok());
        assert!(free_disk(d.path()).is_some_and(|b| b > 0));
        assert!(available_memory().is_some_and(|b| b > 0));
    }
}
