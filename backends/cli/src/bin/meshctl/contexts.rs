//! Contexts: named sets of connection settings in a small file, as kubectl's and etcdctl's, so
//! that an operator of several meshes does not repeat `--addr`, `--ca`, `--cert`/`--key` and
//! `--token-file` on every call.
//!
//! The file is `$MESHCTL_CONFIG`, else `$XDG_CONFIG_HOME/meshkit/meshctl.toml`, else
//! `~/.config/meshkit/meshctl.toml`:
//!
//! ```toml
//! current-context = "local"
//!
//! [contexts.local]
//! addr = "127.0.0.1:8101"
//! ca = "certs/ca.pem"                 # relative paths are relative to this file
//! cert = "certs/meshctl-operator.pem"
//! key = "certs/meshctl-operator.key"
//! # token = "..." or token-file = "..." (not both)
//! ```
//!
//! The context used is `--context` (or `MESHCTL_CONTEXT`), else the file's `current-context`.
//! Each setting comes from the first of: its flag, its environment variable (`MESHCTL_ADDR`,
//! `MESHCTL_CA`, `MESHCTL_CERT`/`MESHCTL_KEY`, `MESHCTL_TOKEN`), the context, the default
//! (`127.0.0.1:8101`, `certs/ca.pem`, no client certificate, no token). A certificate and its key
//! come together from one place, and so does the token: a `--token` or `--token-file` given
//! leaves the context's token unused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest config file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ConfigFile {
    /// The context used when `--context` names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_context: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub(crate) contexts: BTreeMap<String, Context>,
}

/// One context: where a mesh answers and how to prove who is asking.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Context {
    /// A node's control endpoint, HOST:PORT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
    /// The CA certificate the nodes' certificates are signed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate (PEM), with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// A file holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
}

impl Context {
    /// The context with its relative paths made relative to `base` (the file's directory).
    fn anchored(mut self, base: &Path) -> Self {
        for path in [
            &mut self.ca,
            &mut self.cert,
            &mut self.key,
            &mut self.token_file,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }

    /// How the context authenticates, in words.
    pub(crate) fn auth(&self) -> &'static str {
        match (&self.cert, &self.token, &self.token_file) {
            (Some(_), Some(_) | None, Some(_)) | (Some(_), Some(_), None) => "certificate+token",
            (Some(_), None, None) => "certificate",
            (None, Some(_), _) | (None, None, Some(_)) => "token",
            (None, None, None) => "-",
        }
    }
}

/// Where the config file is: `$MESHCTL_CONFIG`, else under `$XDG_CONFIG_HOME` or `~/.config`.
pub(crate) fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MESHCTL_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("meshkit").join("meshctl.toml"))
}

/// The config file at `path`; an empty one if there is none.
pub(crate) fn load(path: &Path) -> Result<ConfigFile, String> {
    use std::io::Read as _;
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(file) => file
            .take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let config: ConfigFile =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    for (name, context) in &config.contexts {
        if context.token.is_some() && context.token_file.is_some() {
            return Err(format!(
                "{}: contexts.{name}: give token or token-file, not both",
                path.display()
            ));
        }
        if context.cert.is_some() != context.key.is_some() {
            return Err(format!(
                "{}: contexts.{name}: cert and key go together",
                path.display()
            ));
        }
    }
    if let Some(current) = &config.current_context
        && !config.contexts.contains_key(current)
    {
        return Err(format!(
            "{}: current-context {current:?} names no context in the file",
            path.display()
        ));
    }
    Ok(config)
}

/// Writes the config file (through a temporary file and a rename), mode 0600: it may hold a
/// token.
pub(crate) fn save(path: &Path, config: &ConfigFile) -> Result<(), String> {
    let text = toml::to_string(config).map_err(|e| e.to_string())?;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The context a command uses: `--context` (or `MESHCTL_CONTEXT`), else the file's current
/// one, else none. A named context that is not in the file is an error.
pub(crate) fn selected(flag: Option<&str>) -> Result<Option<(String, Context)>, String> {
    let Some(path) = config_path() else {
        return match flag {
            Some(name) => Err(format!(
                "--context {name:?}: no config file (set MESHCTL_CONFIG or HOME)"
            )),
            None => Ok(None),
        };
    };
    let config = load(&path)?;
    let Some(name) = flag.map(str::to_owned).or(config.current_context.clone()) else {
        return Ok(None);
    };
    let base = path.parent().unwrap_or(Path::new("."));
    match config.contexts.get(&name) {
        Some(context) => Ok(Some((name, context.clone().anchored(base)))),
        None => Err(format!(
            "--context {name:?}: {} has no such context (it has: {})",
            path.display(),
            names(&config)
        )),
    }
}

fn names(config: &ConfigFile) -> String {
    if config.contexts.is_empty() {
        "none; add one with `meshctl config set-context`".to_owned()
    } else {
        config
            .contexts
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `meshctl config get-contexts`.
pub(crate) fn get_contexts(json: bool) -> Result<(), String> {
    let path = config_path().ok_or("no config file (set MESHCTL_CONFIG or HOME)")?;
    let config = load(&path)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&config).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if config.contexts.is_empty() {
        println!(
            "{} holds no context; add one with `meshctl config set-context NAME --addr HOST:PORT`",
            path.display()
        );
        return Ok(());
    }
    println!(
        "{:<8} {:<16} {:<22} {:<18} CA",
        "CURRENT", "NAME", "ADDR", "AUTH"
    );
    for (name, context) in &config.contexts {
        let current = if config.current_context.as_deref() == Some(name.as_str()) {
            "*"
        } else {
            ""
        };
        println!(
            "{current:<8} {name:<16} {:<22} {:<18} {}",
            context.addr.as_deref().unwrap_or("-"),
            context.auth(),
            context
                .ca
                .as_deref()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
        );
    }
    Ok(())
}

/// `meshctl config current-context`.
pub(crate) fn current_context(json: bool) -> Result<(), String> {
    let path = config_path().ok_or("no config file (set MESHCTL_CONFIG or HOME)")?;
    let config = load(&path)?;
    match config.current_context {
        Some(name) if json => println!("{}", serde_json::json!({ "current_context": name })),
        Some(name) => println!("{name}"),
        None => {
            return Err(format!(
                "{}: no current context; choose one with `meshctl config use-context NAME`",
                path.display()
            ));
        }
    }
    Ok(())
}

/// `meshctl config use-context NAME`.
pub(crate) fn use_context(name: &str, json: bool) -> Result<(), String> {
    let path = config_path().ok_or("no config file (set MESHCTL_CONFIG or HOME)")?;
    let mut config = load(&path)?;
    if !config.contexts.contains_key(name) {
        return Err(format!(
            "{}: no context {name:?} (it has: {})",
            path.display(),
            names(&config)
        ));
    }
    config.current_context = Some(name.to_owned());
    save(&path, &config)?;
    if json {
        println!("{}", serde_json::json!({ "current_context": name }));
    } else {
        println!("switched to context {name:?} ({})", path.display());
    }
    Ok(())
}

/// `meshctl config set-context NAME ...`: creates the context or changes the settings given.
/// Paths are stored absolute, so the file works from any directory.
pub(crate) fn set_context(name: &str, update: Context, json: bool) -> Result<(), String> {
    let path = config_path().ok_or("no config file (set MESHCTL_CONFIG or HOME)")?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "{name:?}: a context name has no spaces, such as prod"
        ));
    }
    let mut config = load(&path)?;
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let context = config.contexts.entry(name.to_owned()).or_default();
    if let Some(addr) = update.addr {
        context.addr = Some(addr);
    }
    if let Some(ca) = update.ca {
        context.ca = Some(absolute(ca));
    }
    if let (Some(cert), Some(key)) = (update.cert, update.key) {
        context.cert = Some(absolute(cert));
        context.key = Some(absolute(key));
    }
    if let Some(file) = update.token_file {
        context.token_file = Some(absolute(file));
        context.token = None;
    }
    let context = context.clone();
    if config.current_context.is_none() {
        config.current_context = Some(name.to_owned());
    }
    save(&path, &config)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&context).map_err(|e| e.to_string())?
        );
    } else {
        println!("context {name:?} saved in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_file_and_bad_files_name_the_key() {
        let context = Context {
            ca: Some("certs/ca.pem".into()),
            key: Some("/abs/key.pem".into()),
            ..Context::default()
        }
        .anchored(Path::new("/etc/meshkit"));
        assert_eq!(context.ca, Some(PathBuf::from("/etc/meshkit/certs/ca.pem")));
        assert_eq!(context.key, Some(PathBuf::from("/abs/key.pem")));
        let bad: Result<ConfigFile, _> = toml::from_str("[contexts.a]\nadress = \"x\"\n");
        assert!(bad.unwrap_err().message().contains("adress"));
    }
}
