//! Reading the configuration: `runner.toml` overlaid with
//! `RDRUNNER__SECTION__KEY` environment variables, with the `config` crate,
//! into a [`RawConfig`]. Unknown sections and keys are refused here, naming
//! the file or the variable, and so is a value of the wrong type.
//!
//! Keys are camelCase in TOML. The `config` crate lowercases environment
//! variable names (and keys set through it), so each name is matched
//! case-insensitively (underscores ignored) against the known keys and
//! given back its real spelling.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::error::{invalid, ConfigError};
use super::raw::RawConfig;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "RDRUNNER__";

/// Keys whose value is a list of tables (an empty list by default, so the
/// default cannot tell): set in the file only; their fields are checked
/// when the list is read into its raw struct.
const TABLE_LISTS: &[&str] = &["ssh.keyBindings"];

/// The known keys with their default values, by section, in the file's spelling.
pub(crate) fn known_keys() -> BTreeMap<String, Map<String, Value>> {
    let v = serde_json::to_value(RawConfig::default()).unwrap_or_default();
    v.as_object()
        .map(|sections| {
            sections
                .iter()
                .map(|(k, v)| (k.clone(), v.as_object().cloned().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// The known sections and keys, and the errors that name them.
struct Known(BTreeMap<String, Map<String, Value>>);

impl Known {
    fn sections(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The section spelled `name`, however its case and underscores go.
    fn section(
        &self,
        name: &str,
        origin: &str,
    ) -> Result<(&String, &Map<String, Value>), ConfigError> {
        self.0
            .iter()
            .find(|(s, _)| squash(s) == squash(name))
            .ok_or_else(|| ConfigError::UnknownSection {
                section: name.to_owned(),
                origin: origin.to_owned(),
                known: self.sections(),
            })
    }

    /// The key spelled `name` in `section`, with its default value.
    fn key<'a>(
        section: &str,
        keys: &'a Map<String, Value>,
        name: &str,
        origin: &str,
    ) -> Result<(&'a String, &'a Value), ConfigError> {
        keys.iter()
            .find(|(k, _)| squash(k) == squash(name))
            .ok_or_else(|| ConfigError::UnknownKey {
                key: format!("{section}.{name}"),
                section: section.to_owned(),
                origin: origin.to_owned(),
                known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// `maxRunning`, `MAX_RUNNING`, `max-running` → `maxrunning`.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Reads `file` (when given) and the `RDRUNNER__*` variables of `env`.
pub(crate) fn load_raw(
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<RawConfig, ConfigError> {
    let known = Known(known_keys());
    let mut builder = ::config::Config::builder();
    if let Some(path) = file {
        let text = read_file(path, &known)?;
        builder = builder.add_source(::config::File::from_str(&text, ::config::FileFormat::Toml));
    }
    for (name, value) in env {
        if let Some((key, v)) = env_override(name, value, &known)? {
            builder = builder
                .set_override(key.as_str(), v)
                .map_err(|e| invalid(&key, e.to_string()))?;
        }
    }
    let tree: BTreeMap<String, BTreeMap<String, Value>> = builder
        .build()
        .map_err(|e| ConfigError::Parse(e.to_string()))?
        .try_deserialize()
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    let table = respell(tree, &known)?;
    serde_json::from_value::<RawConfig>(table).map_err(|e| ConfigError::Parse(e.to_string()))
}

/// The file's text, its sections and keys checked first, so that an
/// unknown one is reported with the file's name.
fn read_file(path: &Path, known: &Known) -> Result<String, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    let origin = format!(" in {}", path.display());
    for (section, value) in &table {
        let Some(keys) = known.0.get(section) else {
            return Err(ConfigError::UnknownSection {
                section: section.clone(),
                origin,
                known: known.sections(),
            });
        };
        let Some(inner) = value.as_table() else {
            return Err(invalid(section, "must be a [section] table"));
        };
        for key in inner.keys() {
            if !keys.contains_key(key) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key}"),
                    section: section.clone(),
                    origin,
                    known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
    }
    Ok(text)
}

/// `RDRUNNER__SECTION__KEY=value` → (`section.key`, value typed as the
/// key's default); `None` for a variable without the prefix.
fn env_override(
    name: &str,
    value: &str,
    known: &Known,
) -> Result<Option<(String, ::config::Value)>, ConfigError> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(None);
    };
    let origin = format!(" (environment variable {name})");
    let Some((section, key)) = rest.split_once("__") else {
        return Err(invalid(
            name,
            "must be named RDRUNNER__SECTION__KEY, e.g. RDRUNNER__RUNNER__MAXRUNNING",
        ));
    };
    let (section, keys) = known.section(section, &origin)?;
    let (key, default) = Known::key(section, keys, key, &origin)?;
    let full = format!("{section}.{key}");
    if TABLE_LISTS.contains(&full.as_str()) {
        return Err(invalid(
            &full,
            format!("{name}: a list of tables is set in the configuration file only"),
        ));
    }
    let v: ::config::Value = match default {
        Value::Array(_) => value
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .into(),
        Value::Bool(_) => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true.into(),
            "false" | "0" | "no" | "off" => false.into(),
            _ => {
                return Err(invalid(
                    &full,
                    format!("{name}=`{value}` is not true or false"),
                ))
            }
        },
        Value::Number(_) => value
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(&full, format!("{name}=`{value}` is not a whole number")))?
            .into(),
        _ => value.to_owned().into(),
    };
    Ok(Some((full, v)))
}

/// The merged tree with each key given back its spelling, and each value's
/// type checked against its default so that a wrong type names the key.
fn respell(
    tree: BTreeMap<String, BTreeMap<String, Value>>,
    known: &Known,
) -> Result<Value, ConfigError> {
    let mut out = Map::new();
    for (section_lc, values) in tree {
        let (section, keys) = known.section(&section_lc, "")?;
        let mut table = Map::new();
        for (key_lc, value) in values {
            let (key, default) = Known::key(section, keys, &key_lc, "")?;
            let full = format!("{section}.{key}");
            if TABLE_LISTS.contains(&full.as_str()) {
                check_table_list(&full, &value)?;
            } else {
                check_type(&full, default, &value)?;
            }
            table.insert(key.clone(), value);
        }
        out.insert(section.clone(), table.into());
    }
    Ok(out.into())
}

/// Refuses `value` for `key` unless it is a list of tables whose values
/// are strings; the names of their fields are checked by the raw struct.
fn check_table_list(key: &str, value: &Value) -> Result<(), ConfigError> {
    let Some(items) = value.as_array() else {
        return Err(invalid(key, format!("{value} is not a list of tables")));
    };
    for (i, item) in items.iter().enumerate() {
        let fits = item
            .as_object()
            .is_some_and(|t| t.values().all(Value::is_string));
        if !fits {
            return Err(invalid(
                key,
                format!("entry {} ({item}) is not a table of strings", i + 1),
            ));
        }
    }
    Ok(())
}

/// Refuses `value` for `key` unless it has the type of the key's default.
fn check_type(key: &str, default: &Value, value: &Value) -> Result<(), ConfigError> {
    let (fits, expected) = match default {
        Value::Array(_) => (
            value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            "a list of strings",
        ),
        Value::Bool(_) => (value.is_boolean(), "true or false"),
        Value::Number(_) => (value.is_u64(), "a whole number (0 or more)"),
        Value::String(_) => (value.is_string(), "a string"),
        _ => (false, "a string"),
    };
    if fits {
        Ok(())
    } else {
        Err(invalid(key, format!("{value} is not {expected}")))
    }
}
