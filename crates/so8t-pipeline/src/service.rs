//! The boot-time service that resumes unfinished work ([`crate::registry`]): a systemd unit
//! (user or system) and a Windows Task Scheduler task, both running `so8t service resume`.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::notify::{find_program, run_with_timeout};

/// The unit's file name.
pub const UNIT_NAME: &str = "so8t-resume.service";

/// How long one `systemctl` call may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a unit could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The unit folder is not writable by this user.
    #[error(
        "{path}: permission denied; install a user unit with `--user`, or run as root (sudo) \
         for a system unit"
    )]
    PermissionDenied {
        /// The file or folder.
        path: PathBuf,
    },
    /// Another I/O error.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No unit folder could be determined (no `$HOME` for a user unit).
    #[error("{0}")]
    NoUnitDir(String),
}

fn io_error(path: &Path, e: std::io::Error) -> ServiceError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        ServiceError::PermissionDenied {
            path: path.to_path_buf(),
        }
    } else {
        ServiceError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// A user account: name, primary group and home folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// The primary group's name.
    pub group: Option<String>,
    /// The home folder.
    pub home: Option<PathBuf>,
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed group struct is a valid out-parameter; buf outlives the call and the
    // returned pointers point into it.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut res: *mut libc::group = std::ptr::null_mut();
        let r = libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut res);
        if r != 0 || res.is_null() || grp.gr_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(grp.gr_name).to_string_lossy().into_owned())
    }
}

fn account_from(pw: &libc::passwd) -> Option<Account> {
    if pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw comes from getpw*_r with a live buffer; the strings are NUL-terminated.
    let (name, home) = unsafe {
        let name = CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
        let home = (!pw.pw_dir.is_null())
            .then(|| PathBuf::from(CStr::from_ptr(pw.pw_dir).to_string_lossy().into_owned()));
        (name, home)
    };
    Some(Account {
        name,
        group: group_name(pw.pw_gid),
        home,
    })
}

fn account_by_uid(uid: libc::uid_t) -> Option<Account> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in group_name.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut res);
        if r != 0 || res.is_null() {
            return None;
        }
        account_from(&pw)
    }
}

fn account_by_name(name: &str) -> Option<Account> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in group_name.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut res,
        );
        if r != 0 || res.is_null() {
            return None;
        }
        account_from(&pw)
    }
}

/// The user who asked for the unit: `$SUDO_USER` when running as root under sudo, else the
/// real user (getuid), else `$USER`.
pub fn invoking_account() -> Option<Account> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        if let Some(a) = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty() && u != "root")
            .and_then(|u| account_by_name(&u))
        {
            return Some(a);
        }
    }
    account_by_uid(uid).or_else(|| {
        let name = std::env::var("USER").ok().filter(|u| !u.is_empty())?;
        Some(account_by_name(&name).unwrap_or(Account {
            name,
            group: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }))
    })
}

/// The registry folder of `who`: [`crate::registry::registry_dir`] for the current user; for
/// another user (root under sudo) `$SO8T_STATE_DIR` when set, else that user's
/// `~/.local/state/so8t`.
fn registry_dir_of(who: Option<&Account>) -> PathBuf {
    let me = account_by_uid(
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() },
    );
    match who {
        Some(a) if me.as_ref().map(|m| &m.name) != Some(&a.name) => {
            match (std::env::var_os("SO8T_STATE_DIR"), &a.home) {
                (Some(d), _) if !d.is_empty() => PathBuf::from(d),
                (_, Some(h)) => h.join(".local/state/so8t"),
                _ => crate::registry::registry_dir(),
            }
        }
        _ => crate::registry::registry_dir(),
    }
}

/// Escapes `%` (systemd specifiers) and, outside `Environment=`, `$` (variable expansion).
fn systemd_escape(s: &str, dollar: bool) -> String {
    let s = s.replace('%', "%%");
    if dollar {
        s.replace('$', "$$")
    } else {
        s
    }
}

/// One word of a systemd command line or assignment, double-quoted (with C escapes) when it
/// holds whitespace, quotes or backslashes.
pub fn systemd_quote(s: &str, dollar: bool) -> String {
    let e = systemd_escape(s, dollar);
    let needs = e.is_empty()
        || e.chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs {
        return e;
    }
    let mut q = String::with_capacity(e.len() + 2);
    q.push('"');
    for c in e.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The text of `so8t-resume.service` running `EXE service resume` at boot (system unit) or at
/// the start of the user's service manager (`user`). A system unit runs as the invoking user
/// ([`invoking_account`]) with `SO8T_STATE_DIR` pointing at that user's registry.
pub fn systemd_unit(exe: &Path, user: bool) -> String {
    let exe = absolute(exe);
    let mut u = String::new();
    u.push_str("# Written by `so8t service install`; remove with `so8t service uninstall`.\n");
    u.push_str(
        "# It runs `so8t service resume`, which resumes the work `so8t service list` shows.\n",
    );
    u.push_str("[Unit]\n");
    u.push_str("Description=so8t: resume unfinished pipelines and training runs\n");
    u.push_str("Documentation=man:systemd.service(5)\n");
    if user {
        u.push_str("After=local-fs.target\n");
    } else {
        u.push_str("After=local-fs.target network-online.target\n");
        u.push_str("Wants=network-online.target\n");
    }
    // A resume that keeps failing gives up after 3 starts an hour.
    u.push_str("StartLimitIntervalSec=3600\n");
    u.push_str("StartLimitBurst=3\n");
    u.push_str("\n[Service]\n");
    u.push_str("Type=simple\n");
    u.push_str(&format!(
        "ExecStart={} service resume\n",
        systemd_quote(&exe.to_string_lossy(), true)
    ));
    if !user {
        let who = invoking_account();
        if let Some(a) = &who {
            u.push_str(&format!("User={}\n", systemd_escape(&a.name, false)));
            if let Some(g) = &a.group {
                u.push_str(&format!("Group={}\n", systemd_escape(g, false)));
            }
        }
        let dir = registry_dir_of(who.as_ref());
        u.push_str(&format!(
            "Environment={}\n",
            systemd_quote(
                &format!("SO8T_STATE_DIR={}", absolute(&dir).to_string_lossy()),
                false
            )
        ));
    }
    u.push_str("Restart=on-failure\n");
    u.push_str("RestartSec=60\n");
    // SIGTERM to `so8t service resume`, which passes it on to the training run; the run writes
    // its emergency checkpoint within TimeoutStopSec before the rest is killed.
    u.push_str("KillMode=mixed\n");
    u.push_str("KillSignal=SIGTERM\n");
    u.push_str("TimeoutStopSec=120\n");
    u.push_str("Nice=5\n");
    u.push_str("\n[Install]\n");
    u.push_str(if user {
        "WantedBy=default.target\n"
    } else {
        "WantedBy=multi-user.target\n"
    });
    u
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// Task Scheduler 1.2 XML for `schtasks /create /tn so8t-resume /xml FILE`: at logon (of `user`,
/// or of any user) plus one minute, run `EXE service resume`, without time limit, also on
/// battery, and not twice at once.
pub fn windows_task_xml(exe: &str, user: Option<&str>) -> String {
    let user_id = user
        .map(|u| format!("      <UserId>{}</UserId>\n", xml_escape(u)))
        .unwrap_or_default();
    let principals = user
        .map(|u| {
            format!(
                "  <Principals>\n    <Principal id=\"Author\">\n      <UserId>{}</UserId>\n      \
                 <LogonType>InteractiveToken</LogonType>\n      \
                 <RunLevel>LeastPrivilege</RunLevel>\n    </Principal>\n  </Principals>\n",
                xml_escape(u)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>so8t: resume unfinished pipelines and training runs after logon</Description>
    <URI>\so8t-resume</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
{user_id}      <Delay>PT1M</Delay>
    </LogonTrigger>
  </Triggers>
{principals}  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{exe}</Command>
      <Arguments>service resume</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        exe = xml_escape(exe)
    )
}

/// What [`install`] is asked to do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// A user unit (`systemctl --user`) instead of a system unit.
    pub user: bool,
    /// Write nothing; return the text and the path.
    pub dry_run: bool,
    /// The unit folder (default `~/.config/systemd/user` or `/etc/systemd/system`).
    pub unit_dir: Option<PathBuf>,
    /// The so8t executable the unit runs.
    pub exe: PathBuf,
    /// Run `systemctl daemon-reload` and `systemctl enable` afterwards (when `systemctl` exists).
    pub enable: bool,
}

/// What [`install`] or [`uninstall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The unit file.
    pub path: PathBuf,
    /// The unit text (empty for an uninstall).
    pub unit: String,
    /// Whether the file was written (install) or removed (uninstall).
    pub changed: bool,
    /// The `systemctl` commands run, each with `ok` or the reason it failed.
    pub systemctl: Vec<(String, Result<(), String>)>,
    /// Notes for the user (e.g. `systemctl` not found).
    pub notes: Vec<String>,
}

/// The unit folder: `unit_dir`, else `~/.config/systemd/user` (`$XDG_CONFIG_HOME` honoured)
/// for a user unit, else `/etc/systemd/system`.
pub fn unit_dir(user: bool, unit_dir: Option<&Path>) -> Result<PathBuf, ServiceError> {
    if let Some(d) = unit_dir {
        return Ok(absolute(d));
    }
    if !user {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return Ok(d.join("systemd/user"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/systemd/user"))
        .ok_or_else(|| ServiceError::NoUnitDir("$HOME is not set; pass --unit-dir DIR".into()))
}

fn systemctl(user: bool, args: &[&str]) -> (String, Result<(), String>) {
    let mut shown = String::from("systemctl");
    if user {
        shown.push_str(" --user");
    }
    for a in args {
        shown.push(' ');
        shown.push_str(a);
    }
    let Some(prog) = find_program("systemctl", std::env::var_os("PATH").as_deref()) else {
        return (shown, Err("systemctl is not on PATH".into()));
    };
    let mut cmd = Command::new(prog);
    if user {
        cmd.arg("--user");
    }
    cmd.args(args);
    let r = run_with_timeout(&mut cmd, SYSTEMCTL_TIMEOUT).map(|_| ());
    if let Err(e) = &r {
        tracing::warn!("{shown}: {e}");
    }
    (shown, r)
}

fn has_systemctl() -> bool {
    find_program("systemctl", std::env::var_os("PATH").as_deref()).is_some()
}

/// Writes `so8t-resume.service` (atomically) into the unit folder and, with `enable`, runs
/// `systemctl [--user] daemon-reload` and `systemctl [--user] enable so8t-resume.service`
/// (their failures are reported, not fatal). A dry run writes and runs nothing.
pub fn install(o: &InstallOptions) -> Result<InstallReport, ServiceError> {
    let dir = unit_dir(o.user, o.unit_dir.as_deref())?;
    let path = dir.join(UNIT_NAME);
    let unit = systemd_unit(&o.exe, o.user);
    let mut report = InstallReport {
        path: path.clone(),
        unit,
        changed: false,
        systemctl: Vec::new(),
        notes: Vec::new(),
    };
    if !o.exe.is_file() {
        report.notes.push(format!(
            "{} does not exist (yet); the unit will fail until it does",
            o.exe.display()
        ));
    }
    if o.dry_run {
        return Ok(report);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    so8t_model::io::write_string_atomic(&path, &report.unit).map_err(|e| {
        // Find the io::Error inside so8t-model's error to tell permission problems apart.
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::PermissionDenied {
                    return ServiceError::PermissionDenied { path: path.clone() };
                }
            }
            src = s.source();
        }
        ServiceError::Io {
            path: path.clone(),
            message: e.to_string(),
        }
    })?;
    report.changed = true;
    if o.enable {
        if has_systemctl() {
            report.systemctl.push(systemctl(o.user, &["daemon-reload"]));
            report
                .systemctl
                .push(systemctl(o.user, &["enable", UNIT_NAME]));
        } else {
            report
                .notes
                .push("systemctl is not on PATH: enable the unit by hand".into());
        }
    }
    Ok(report)
}

/// Disables (when `systemctl` exists and the folder is the default one) and removes
/// `so8t-resume.service`. A missing unit file is not an error. A dry run changes nothing.
pub fn uninstall(
    user: bool,
    unit_dir_override: Option<&Path>,
    dry_run: bool,
) -> Result<InstallReport, ServiceError> {
    let dir = unit_dir(user, unit_dir_override)?;
    let path = dir.join(UNIT_NAME);
    let mut report = InstallReport {
        path: path.clone(),
        unit: String::new(),
        changed: false,
        systemctl: Vec::new(),
        notes: Vec::new(),
    };
    let exists = path.exists();
    if !exists {
        report
            .notes
            .push(format!("{} does not exist", path.display()));
    }
    if dry_run {
        return Ok(report);
    }
    // A unit in a custom folder is not known to systemd: nothing to disable.
    let managed = unit_dir_override.is_none() && has_systemctl();
    if managed && exists {
        report
            .systemctl
            .push(systemctl(user, &["disable", UNIT_NAME]));
    }
    if exists {
        std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        report.changed = true;
    }
    if managed {
        report.systemctl.push(systemctl(user, &["daemon-reload"]));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_systemd_rules() {
        assert_eq!(systemd_quote("/usr/bin/so8t", true), "/usr/bin/so8t");
        assert_eq!(
            systemd_quote("/opt/my tools/so8t", true),
            "\"/opt/my tools/so8t\""
        );
        assert_eq!(systemd_quote("/a/100%/$x", true), "/a/100%%/$$x");
        assert_eq!(systemd_quote("a\"b\\c d", false), "\"a\\\"b\\\\c d\"");
        assert_eq!(systemd_quote("", true), "\"\"");
    }

    #[test]
    fn xml_escapes() {
        assert_eq!(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
