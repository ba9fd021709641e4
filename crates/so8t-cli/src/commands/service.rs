//! `so8t service`: power-on resume. Installs the systemd unit (or writes the Windows Task
//! Scheduler XML) that runs `so8t service resume` at boot, which resumes the unfinished
//! pipelines and training runs of the registry.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_pipeline::{registry, service};

/// `service` subcommands.
#[derive(clap::Subcommand)]
pub enum ServiceCmd {
    /// Write the systemd unit `so8t-resume.service` that resumes unfinished work at boot, and
    /// enable it.
    Install {
        /// A user unit (~/.config/systemd/user, `systemctl --user`) instead of a system unit
        /// (/etc/systemd/system, needs root). A user unit starts at boot only with lingering on
        /// (`loginctl enable-linger $USER`), else at login.
        #[arg(long)]
        user: bool,
        /// Print the unit and where it would go; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the unit into this folder instead of the default one.
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Do not run `systemctl daemon-reload` and `systemctl enable`.
        #[arg(long)]
        no_enable: bool,
    },
    /// Disable and remove the systemd unit.
    Uninstall {
        /// The user unit instead of the system unit.
        #[arg(long)]
        user: bool,
        /// Remove the unit from this folder instead of the default one (no systemctl calls).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Say what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the Windows Task Scheduler XML (a logon trigger) that runs `so8t service resume`;
    /// import it with `schtasks /create /tn so8t-resume /xml FILE`.
    WindowsTask {
        /// Write the XML to this file as UTF-16LE with a byte-order mark, as
        /// `schtasks /create /xml` expects (default: UTF-8 on stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Run at the logon of this Windows user only (DOMAIN\name or name); default: any user.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The so8t.exe path the task runs (default: this executable).
        #[arg(long, value_name = "PATH")]
        exe: Option<String>,
    },
    /// Resume every registered unfinished pipeline and training run (the unit's ExecStart).
    Resume {
        /// Print what would be resumed; start nothing and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the registered unfinished work.
    List {
        /// Print JSON (an array of entries) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the path of the so8t executable")
}

/// Runs a `service` subcommand.
pub fn run(cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Install {
            user,
            dry_run,
            unit_dir,
            no_enable,
        } => install(user, dry_run, unit_dir, !no_enable),
        ServiceCmd::Uninstall {
            user,
            unit_dir,
            dry_run,
        } => {
            let r = service::uninstall(user, unit_dir.as_deref(), dry_run)?;
            print_systemctl(&r);
            for n in &r.notes {
                eprintln!("{n}");
            }
            if dry_run {
                if r.path.exists() {
                    println!("would remove {}", r.path.display());
                }
            } else if r.changed {
                println!("removed {}", r.path.display());
            }
            Ok(())
        }
        ServiceCmd::WindowsTask { out, user, exe } => {
            let exe = match exe {
                Some(e) => e,
                None => current_exe()?.to_string_lossy().into_owned(),
            };
            let xml = service::windows_task_xml(&exe, user.as_deref());
            match out {
                None => print!("{xml}"),
                Some(path) => {
                    let mut bytes = vec![0xFF, 0xFE];
                    // schtasks reads Windows line ends.
                    for u in xml.replace('\n', "\r\n").encode_utf16() {
                        bytes.extend_from_slice(&u.to_le_bytes());
                    }
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {} (UTF-16LE)", path.display());
                    println!(
                        "import it on Windows with: schtasks /create /tn so8t-resume /xml {}",
                        path.display()
                    );
                }
            }
            Ok(())
        }
        ServiceCmd::Resume { dry_run } => resume(dry_run),
        ServiceCmd::List { json } => list(json),
    }
}

fn print_systemctl(r: &service::InstallReport) {
    for (cmd, res) in &r.systemctl {
        match res {
            Ok(()) => eprintln!("ran {cmd}"),
            Err(e) => eprintln!("warning: {cmd} failed: {e}"),
        }
    }
}

fn install(user: bool, dry_run: bool, unit_dir: Option<PathBuf>, enable: bool) -> Result<()> {
    let r = service::install(&service::InstallOptions {
        user,
        dry_run,
        unit_dir: unit_dir.clone(),
        exe: current_exe()?,
        enable,
    })?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    if dry_run {
        println!("# {}", r.path.display());
        print!("{}", r.unit);
        return Ok(());
    }
    print_systemctl(&r);
    println!("wrote {}", r.path.display());
    let ctl = if user {
        "systemctl --user"
    } else {
        "systemctl"
    };
    let enabled = enable && !r.systemctl.is_empty() && r.systemctl.iter().all(|(_, x)| x.is_ok());
    if !enabled {
        println!(
            "next: {ctl} daemon-reload && {ctl} enable {}",
            service::UNIT_NAME
        );
    }
    if user && unit_dir.is_none() {
        println!(
            "to resume at boot without logging in: loginctl enable-linger {}",
            std::env::var("USER").unwrap_or_else(|_| "$USER".into())
        );
    }
    println!(
        "training runs started with --auto-resume and pipelines register themselves; \
         see them with `so8t service list`"
    );
    Ok(())
}

fn resume(dry_run: bool) -> Result<()> {
    let exe = current_exe()?;
    // A broken registry is an error here, not an empty list.
    registry::list()?;
    let results = registry::resume_all(&exe, dry_run);
    if results.is_empty() {
        eprintln!(
            "nothing to resume (registry {})",
            registry::registry_path().display()
        );
        return Ok(());
    }
    let mut failed = 0usize;
    for (e, r) in &results {
        let cmdline = format!("{} {}", exe.display(), e.args.join(" "));
        match r {
            Ok(_) if dry_run => println!("would run in {}: {cmdline}", e.dir.display()),
            Ok(st) if st.success() => println!("{} {}: done", e.kind, e.dir.display()),
            Ok(st) => {
                failed += 1;
                println!("{} {}: {cmdline} ended with {st}", e.kind, e.dir.display());
            }
            Err(err) => {
                if !err.contains("no longer exists") {
                    failed += 1;
                }
                println!("{} {}: {err}", e.kind, e.dir.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} resumed jobs failed", results.len());
    }
    Ok(())
}

fn list(json: bool) -> Result<()> {
    let entries = registry::list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no unfinished work registered ({})",
            registry::registry_path().display()
        );
        return Ok(());
    }
    println!("{:<9} {:<10} {:<40} ARGS", "KIND", "REGISTERED", "DIR");
    for e in entries {
        let exists = if e.dir.is_dir() { "" } else { " (missing)" };
        println!(
            "{:<9} {:<10} {:<40} {}",
            e.kind,
            e.registered_unix,
            format!("{}{exists}", e.dir.display()),
            e.args.join(" ")
        );
    }
    Ok(())
}
