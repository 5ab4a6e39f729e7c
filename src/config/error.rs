//! Why a configuration cannot be used: every message names the key (or the
//! file, or the environment variable) and what is allowed.

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown configuration key `{key}`{origin}; known keys in [{section}]: {known}")]
    UnknownKey {
        key: String,
        section: String,
        origin: String,
        known: String,
    },
    #[error("unknown configuration section `{section}`{origin}; known sections: {known}")]
    UnknownSection {
        section: String,
        origin: String,
        known: String,
    },
    #[error("bad configuration value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("bad configuration: {0}")]
    Parse(String),
}

/// A bad value for `key`.
pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}
