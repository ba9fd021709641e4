//! Model names: `[HOST/][NAMESPACE/]MODEL[:TAG]`, as Ollama spells them.

use std::fmt;
use std::path::PathBuf;

use super::LibraryError;

/// The host of names without one.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// The namespace of names without one.
pub const DEFAULT_NAMESPACE: &str = "library";
/// The tag of names without one.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed model name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    /// Registry host (`registry.ollama.ai`).
    pub host: String,
    /// Namespace (`library`, or a user).
    pub namespace: String,
    /// Model.
    pub model: String,
    /// Tag (`latest`).
    pub tag: String,
}

impl ModelName {
    /// The manifest's path below `manifests/`: `HOST/NAMESPACE/MODEL/TAG`.
    pub fn manifest_rel(&self) -> PathBuf {
        [&self.host, &self.namespace, &self.model, &self.tag]
            .iter()
            .collect()
    }
}

/// The short form: `smol:latest`, `user/smol:tag`, `host/user/smol:tag`.
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host != DEFAULT_HOST {
            write!(f, "{}/{}/", self.host, self.namespace)?;
        } else if self.namespace != DEFAULT_NAMESPACE {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}:{}", self.model, self.tag)
    }
}

fn check_part(
    name: &str,
    part: &str,
    what: &str,
    max: usize,
    extra: &[char],
) -> Result<(), LibraryError> {
    let bad = |reason: String| LibraryError::BadName {
        name: name.to_string(),
        reason,
    };
    if part.is_empty() {
        return Err(bad(format!("the {what} is empty")));
    }
    if part.len() > max {
        return Err(bad(format!("the {what} is longer than {max} characters")));
    }
    let first = part.chars().next().unwrap_or(' ');
    if !(first.is_ascii_alphanumeric() || (what == "tag" && first == '_')) {
        return Err(bad(format!(
            "the {what} {part:?} must start with a letter or digit"
        )));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || extra.contains(c)))
    {
        return Err(bad(format!(
            "the {what} {part:?} has {c:?}; allowed are letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

/// Parses `NAME[:TAG]` with an optional `namespace/` or `host/namespace/` prefix; the tag
/// defaults to `latest`, the namespace to `library`, the host to `registry.ollama.ai`.
/// Parts start with a letter or digit and hold letters, digits, `_`, `-`, `.` (the host also
/// `:` for a port); models, namespaces and tags are at most 80 characters, hosts 350.
pub fn parse_name(s: &str) -> Result<ModelName, LibraryError> {
    let bad = |reason: &str| LibraryError::BadName {
        name: s.to_string(),
        reason: reason.to_string(),
    };
    if s.trim().is_empty() {
        return Err(bad("the name is empty"));
    }
    let parts: Vec<&str> = s.split('/').collect();
    let (host, ns, last) = match parts.as_slice() {
        [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
        [n, m] => (DEFAULT_HOST, *n, *m),
        [h, n, m] => (*h, *n, *m),
        _ => return Err(bad("too many '/': expected [HOST/][NAMESPACE/]MODEL[:TAG]")),
    };
    let (model, tag) = match last.rsplit_once(':') {
        Some((m, t)) => (m, t),
        None => (last, DEFAULT_TAG),
    };
    check_part(s, host, "host", 350, &[':'])?;
    check_part(s, ns, "namespace", 80, &[])?;
    check_part(s, model, "model", 80, &[])?;
    check_part(s, tag, "tag", 80, &[])?;
    Ok(ModelName {
        host: host.to_string(),
        namespace: ns.to_string(),
        model: model.to_string(),
        tag: tag.to_string(),
    })
}
