//! Internally tagged enums whose tag must be a string on the wire.
//!
//! serde's derived impl of an internally tagged enum (`#[serde(tag = "type")]`)
//! also takes a variant's *index* as the tag, so `{"type": 0}` would parse as
//! the first variant. The protocol names every variant, so such a body must be
//! refused, not silently read as whatever variant happens to come first. An
//! enum derives its serde impls with `#[serde(remote = "Self")]` (which turns
//! them into inherent functions) and implements the traits through
//! [`string_tagged`], which checks the tag before handing the value on.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Deserializes `T`, an internally tagged enum whose tag is `tag`, with
/// `derived` (its derived, `remote = "Self"` impl), after checking that the
/// tag, when present, is a string. A missing tag is left to `derived`, whose
/// error names it.
pub fn string_tagged<'de, D, T>(
    deserializer: D,
    tag: &str,
    derived: fn(Value) -> Result<T, serde_json::Error>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(deserializer)?;
    match value.get(tag) {
        None | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(D::Error::custom(format!(
                "`{tag}` must be a string naming the variant, found `{other}`"
            )))
        }
    }
    derived(value).map_err(D::Error::custom)
}

/// Implements `Serialize` and `Deserialize` for an internally tagged enum
/// that derives them with `#[serde(remote = "Self")]`, refusing a tag that
/// is not a string (see the module text).
#[macro_export]
macro_rules! string_tagged_serde {
    ($ty:ty, $tag:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::model::string_tagged(deserializer, $tag, <$ty>::deserialize)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::model::{ReportBody, Step};

    #[test]
    fn a_tag_must_be_a_name_not_an_index() {
        let step: Step = serde_json::from_str(r#"{"type": "command", "command": "x"}"#).unwrap();
        assert_eq!(step.kind(), "command");
        let err = serde_json::from_str::<Step>(r#"{"type": 0, "command": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("`type` must be a string"), "{err}");
        let err =
            serde_json::from_str::<ReportBody>(r#"{"kind": 2, "state": "running"}"#).unwrap_err();
        assert!(err.to_string().contains("`kind` must be a string"), "{err}");
        // The derived checks still apply: a missing tag and an unknown name.
        assert!(serde_json::from_str::<Step>(r#"{"command": "x"}"#).is_err());
        assert!(serde_json::from_str::<Step>(r#"{"type": "teleport"}"#).is_err());
        // Serialising is unchanged.
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            serde_json::json!({"type": "command", "command": "x"})
        );
    }
}
