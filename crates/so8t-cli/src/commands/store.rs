//! The model store commands (`create`, `list`, `show`, `rm`, `cp`) and `audit verify`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_serve::library::{default_models_dir, read_modelfile, Library};

/// Where the store is (every store command takes it).
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArg {
    /// The models folder (blobs/ and manifests/; `~/.ollama/models` works too). Default:
    /// `$SO8T_HOME/models`, else `~/.so8t/models`.
    #[arg(long, env = "SO8T_MODELS")]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    /// The models folder.
    pub fn dir(&self) -> PathBuf {
        default_models_dir(self.store.as_deref())
    }

    /// Opens (creating) the store.
    pub fn open(&self) -> Result<Library> {
        let d = self.dir();
        Library::open(&d).with_context(|| format!("opening the model store {}", d.display()))
    }
}

/// `so8t create NAME -f Modelfile`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Model name, `name[:tag]`.
    pub name: String,
    /// The Modelfile (FROM a GGUF, an HF folder or a model of the store).
    #[arg(short = 'f', long = "file", default_value = "Modelfile")]
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t show NAME`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Model name.
    pub name: String,
    /// Print the Modelfile.
    #[arg(long)]
    pub modelfile: bool,
    /// Print the template.
    #[arg(long)]
    pub template: bool,
    /// Print the parameters.
    #[arg(long)]
    pub parameters: bool,
    /// Print the system prompt.
    #[arg(long)]
    pub system: bool,
    /// Print the license.
    #[arg(long)]
    pub license: bool,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t rm NAME...`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Models to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t cp SRC DST`.
#[derive(clap::Args, Debug)]
pub struct CpArgs {
    /// Existing model.
    pub source: String,
    /// New name.
    pub destination: String,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t audit …`.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Walks the audit log's hash chain and reports any edited, deleted or reordered row.
    Verify(AuditArgs),
}

/// Which audit log.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The audit database (default: `audit.db` in the models folder).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArg,
}

/// The default audit database of a store.
pub fn audit_path(store: &StoreArg) -> PathBuf {
    store.dir().join("audit.db")
}

/// `so8t create`.
pub fn create(a: CreateArgs) -> Result<()> {
    let lib = a.store.open()?;
    let mf = read_modelfile(&a.file)?;
    let base = a.file.parent().map(PathBuf::from).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let e = lib.create(&a.name, &mf, &base, &mut |s| eprintln!("{s}"))?;
    eprintln!("success: {} ({:.1} MB)", e.name, e.size as f64 / 1e6);
    Ok(())
}

fn ago(t: std::time::SystemTime) -> String {
    let s = t.elapsed().map_or(0, |d| d.as_secs());
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86_399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// `so8t list`.
pub fn list(a: ListArgs) -> Result<()> {
    let lib = a.store.open()?;
    let rows = lib.list()?;
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    println!("{:<w$}  {:<12}  {:>9}  MODIFIED", "NAME", "ID", "SIZE");
    for r in rows {
        let id = r.digest.trim_start_matches("sha256:");
        println!(
            "{:<w$}  {:<12}  {:>6.1} MB  {}",
            r.name,
            &id[..id.len().min(12)],
            r.size as f64 / 1e6,
            ago(r.modified)
        );
    }
    Ok(())
}

/// `so8t show`.
pub fn show(a: ShowArgs) -> Result<()> {
    let lib = a.store.open()?;
    let i = lib.show(&a.name)?;
    if a.modelfile {
        print!("{}", i.modelfile);
    } else if a.template {
        println!("{}", i.template.unwrap_or_default());
    } else if a.parameters {
        println!("{}", i.parameters);
    } else if a.system {
        println!("{}", i.system.unwrap_or_default());
    } else if a.license {
        println!("{}", i.license.join("\n"));
    } else {
        let d = &i.details;
        println!("  Model");
        println!("    architecture        {}", d.family);
        println!("    parameters          {}", d.parameter_size);
        if let Some(c) = i
            .model_info
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
        {
            println!("    context length      {}", c.1);
        }
        println!("    quantization        {}", d.quantization_level);
        if !i.parameters.is_empty() {
            println!("\n  Parameters");
            for l in i.parameters.lines() {
                println!("    {l}");
            }
        }
        if let Some(s) = &i.system {
            println!("\n  System\n    {s}");
        }
    }
    Ok(())
}

/// `so8t rm`.
pub fn rm(a: RmArgs) -> Result<()> {
    let lib = a.store.open()?;
    for n in &a.names {
        lib.remove(n)?;
        println!("deleted '{n}'");
    }
    Ok(())
}

/// `so8t cp`.
pub fn cp(a: CpArgs) -> Result<()> {
    let lib = a.store.open()?;
    lib.copy(&a.source, &a.destination)?;
    println!("copied '{}' to '{}'", a.source, a.destination);
    Ok(())
}

/// `so8t audit`.
pub fn audit(c: AuditCmd) -> Result<()> {
    let AuditCmd::Verify(a) = c;
    let path = a.audit.clone().unwrap_or_else(|| audit_path(&a.store));
    if !path.exists() {
        bail!("{}: no audit log there", path.display());
    }
    let r = so8t_store::audit::verify(&path)?;
    if a.json {
        let problems: Vec<serde_json::Value> = r
            .problems
            .iter()
            .map(|p| serde_json::json!({"id": p.id, "kind": format!("{:?}", p.kind), "what": p.what}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"path": path, "rows": r.rows, "head_hash": r.head_hash, "ok": r.problems.is_empty(), "problems": problems})
        );
    } else {
        println!("{}: {} rows, head {}", path.display(), r.rows, r.head_hash);
        for p in &r.problems {
            println!("  row {}: {:?}: {}", p.id, p.kind, p.what);
        }
    }
    if !r.problems.is_empty() {
        bail!("the audit log has {} problem(s)", r.problems.len());
    }
    println!("ok: the chain is intact");
    Ok(())
}
