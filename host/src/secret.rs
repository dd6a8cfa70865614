//! Secrets named in the config, read when a request needs them. A file is re-read whenever its
//! modification time or size changes, so a rotated secret is used from the next request on.
//!
//! `{ env = "NAME" }` also follows the container convention for secrets as files: when `NAME` is
//! unset and `NAME_FILE` names a file (a Compose secret under `/run/secrets`, a mounted
//! Kubernetes Secret), the value is that file's content, re-read when it changes. One pipeline
//! thus takes a password from an env file on a laptop and from a rotating Secret in a cluster.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::config::{Credential, SecretSource};

/// Where a credential's value is, as the environment says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The value itself (a literal, or a set variable).
    Value(String),
    /// A file holding it.
    File {
        /// The file.
        path: PathBuf,
        /// The `NAME_FILE` variable that named it, if one did.
        named_by: Option<String>,
    },
}

/// Finds `credential` with `env` as the environment: a literal; a non-empty variable (an empty
/// one counts as unset: Compose writes `VAR: ${VAR:-}` for optional ones), else the file
/// `NAME_FILE` names; or a file. Validation and delivery both resolve through this.
pub fn locate(credential: &Credential, env: &dyn Fn(&str) -> Option<String>) -> Result<Located, String> {
    match credential {
        Credential::Literal(value) => Ok(Located::Value(value.clone())),
        Credential::Secret(SecretSource::Env(name)) => match env(name) {
            Some(value) if !value.is_empty() => Ok(Located::Value(value)),
            _ => {
                let variable = format!("{name}_FILE");
                match env(&variable) {
                    Some(path) => Ok(Located::File { path: PathBuf::from(path), named_by: Some(variable) }),
                    None => Err(format!("environment variable `{name}` (or `{name}_FILE`) is not set")),
                }
            }
        },
        Credential::Secret(SecretSource::File(path)) => {
            Ok(Located::File { path: path.clone(), named_by: None })
        }
    }
}

/// A header value or credential, resolved on use. Its `Debug` names where the value comes from,
/// never the value.
pub struct Secret {
    credential: Credential,
    cache: Mutex<Option<(SystemTime, u64, String)>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.credential {
            Credential::Literal(_) => f.write_str("Secret(<literal>)"),
            Credential::Secret(source) => write!(f, "Secret({source:?})"),
        }
    }
}

impl Secret {
    /// Wraps `credential`.
    pub fn new(credential: Credential) -> Self {
        Self { credential, cache: Mutex::new(None) }
    }

    /// The current value. The error names the source, never the value.
    pub fn value(&self) -> Result<String, String> {
        match locate(&self.credential, &|name| std::env::var(name).ok())? {
            Located::Value(value) => Ok(value),
            Located::File { path, named_by } => self.read_file(&path).map_err(|why| match named_by {
                Some(variable) => format!("`{variable}`: {why}"),
                None => why,
            }),
        }
    }

    fn read_file(&self, path: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((modified, len, value)) = cache.as_ref()
            && (*modified, *len) == stamp
        {
            return Ok(value.clone());
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        *cache = Some((stamp.0, stamp.1, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let secret = Secret::new(Credential::Secret(SecretSource::File(path.clone())));
        assert_eq!(secret.value().as_deref(), Ok("first"));
        std::fs::write(&path, "second-token\n").expect("write");
        assert_eq!(secret.value().as_deref(), Ok("second-token"));
        let missing = Secret::new(Credential::Secret(SecretSource::Env("SLUICE_TEST_SURELY_UNSET".into())));
        assert!(missing.value().expect_err("unset").contains("SLUICE_TEST_SURELY_UNSET"));
    }

    #[test]
    fn an_unset_variable_falls_back_to_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "from-a-secret\n").expect("write");
        // SAFETY (of the test): no other test reads or writes this variable.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SLUICE_TEST_ONLY_AS_FILE_FILE", &path);
        }
        let secret = Secret::new(Credential::Secret(SecretSource::Env("SLUICE_TEST_ONLY_AS_FILE".into())));
        assert_eq!(secret.value().as_deref(), Ok("from-a-secret"));
        std::fs::write(&path, "rotated\n").expect("write");
        assert_eq!(secret.value().as_deref(), Ok("rotated"));
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "EMPTY_FILE" => Some("/run/secrets/empty".into()),
            _ => None,
        }
    }

    #[test]
    fn a_variable_wins_and_an_empty_one_falls_back_to_its_file() {
        let from_env = |name: &str| Credential::Secret(SecretSource::Env(name.into()));
        assert_eq!(locate(&from_env("SET"), &env), Ok(Located::Value("value".into())));
        assert_eq!(
            locate(&from_env("EMPTY"), &env),
            Ok(Located::File { path: "/run/secrets/empty".into(), named_by: Some("EMPTY_FILE".into()) })
        );
        let unset = locate(&from_env("UNSET"), &env).expect_err("unset");
        assert!(unset.contains("`UNSET` (or `UNSET_FILE`) is not set"), "{unset}");
        let file = Credential::Secret(SecretSource::File("/run/secrets/x".into()));
        assert_eq!(locate(&file, &env), Ok(Located::File { path: "/run/secrets/x".into(), named_by: None }));
        assert_eq!(locate(&Credential::Literal("plain".into()), &env), Ok(Located::Value("plain".into())));
    }
}

/// Compares without an early exit, so response timing doesn't leak how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request's `Authorization: Bearer` didn't pass; what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerRefusal {
    /// No bearer token was sent.
    Missing,
    /// The token sent is not the expected one.
    Invalid,
    /// The expected token can't be read now (its file is missing, say).
    Unreadable,
}

impl BearerRefusal {
    /// The answer's text.
    pub fn as_str(self) -> &'static str {
        match self {
            BearerRefusal::Missing => "missing bearer token",
            BearerRefusal::Invalid => "invalid bearer token",
            BearerRefusal::Unreadable => "the expected token cannot be read right now",
        }
    }
}

/// Checks `Authorization: Bearer <token>` in `headers` against `expected`. Neither token is
/// ever logged.
pub fn check_bearer(expected: &Secret, headers: &http::HeaderMap) -> Result<(), BearerRefusal> {
    let expected = expected.value().map_err(|_| BearerRefusal::Unreadable)?;
    let offered = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match offered {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(BearerRefusal::Invalid),
        None => Err(BearerRefusal::Missing),
    }
}
