//! `so8t export gguf` (HF folder → F16 / Q8_0 / Q4_K_M GGUF + Ollama Modelfiles) and
//! `so8t gguf inspect|verify FILE`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_gguf::export::{export, ExportOptions, Quant};

/// `export`.
#[derive(clap::Subcommand)]
pub enum ExportCmd {
    /// Write GGUF files (and one Ollama Modelfile per file) from an HF model folder.
    Gguf(ExportGgufArgs),
}

/// `export gguf`.
#[derive(clap::Args)]
pub struct ExportGgufArgs {
    /// The HF model folder (e.g. a `so8t bake` output).
    #[arg(long)]
    pub model: PathBuf,
    /// The output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Flavours, comma-separated: f32, f16, bf16, q8_0, q4_k_m.
    #[arg(long, default_value = "f16,q8_0,q4_k_m", value_delimiter = ',')]
    pub quant: Vec<String>,
    /// Base of file and Ollama model names (default: the model folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// SYSTEM prompt for the Modelfiles.
    #[arg(long)]
    pub system: Option<String>,
    /// llama.cpp pre-tokenizer name (default: detected from tokenizer.json).
    #[arg(long)]
    pub tokenizer_pre: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gguf`.
#[derive(clap::Subcommand)]
pub enum GgufCmd {
    /// Print a GGUF file's header, metadata and tensor table.
    Inspect {
        /// The file.
        file: PathBuf,
    },
    /// Check a GGUF file's structure, tensor data and checksum (SHA256SUMS beside it).
    Verify {
        /// The file.
        file: PathBuf,
    },
}

/// Runs `export`.
pub fn run_export(c: ExportCmd) -> Result<()> {
    let ExportCmd::Gguf(a) = c;
    let quants = a
        .quant
        .iter()
        .map(|q| Quant::parse(q.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let name = match a.name {
        Some(n) => n,
        None => a
            .model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    let bar = indicatif::ProgressBar::new(0);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_style(indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )?);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let b2 = bar.clone();
    let report = export(&ExportOptions {
        model: a.model.clone(),
        out: a.out.clone(),
        quants,
        name,
        system: a.system,
        tokenizer_pre: a.tokenizer_pre,
        progress: Some(Box::new(move |i, n, done, total| {
            b2.set_length(total);
            b2.set_position(done);
            b2.set_message(format!("tensor {i}/{n}"));
        })),
    })
    .with_context(|| format!("exporting {}", a.model.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    eprintln!(
        "{} parameters exported in {:.1} s",
        report.parameters, report.seconds
    );
    for f in &report.files {
        println!(
            "{}  {:>8.1} MiB  sha256 {}…  ollama create {} -f {}",
            f.path.display(),
            f.bytes as f64 / (1 << 20) as f64,
            &f.sha256[..16],
            f.ollama_name,
            f.modelfile.display()
        );
    }
    Ok(())
}

/// Runs `gguf`.
pub fn run(c: GgufCmd) -> Result<()> {
    match c {
        GgufCmd::Inspect { file } => {
            let f = so8t_gguf::reader::GgufFile::open(&file)?;
            print!("{}", so8t_gguf::inspect::inspect(&f));
            Ok(())
        }
        GgufCmd::Verify { file } => {
            let r = so8t_gguf::inspect::verify(&file)?;
            println!("{r}");
            if !r.is_ok() {
                bail!("{}: {} problem(s)", file.display(), r.problems.len());
            }
            Ok(())
        }
    }
}
