//! YAML, read and written one way by every crate: `serde-saphyr` (the YAML crate kube already brings), set to read
//! untyped values as `serde_yaml` 0.9 did, so that a manifest means the same as before: YAML 1.2 core booleans
//! (`yes` and `on` stay strings), numbers with leading zeros or underscores stay strings, a repeated key keeps its
//! last value. Errors are one line and carry the line they are about ([`Error::location`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_saphyr::{DuplicateKeyPolicy, Options};

pub use serde_saphyr::{Error, SerializeError};

fn options() -> Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        with_snippet: false,
    }
}

/// One YAML document (or JSON, a subset of YAML).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Every document of a `---`-separated stream.
pub fn from_str_multiple<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, Error> {
    serde_saphyr::from_str_multiple_with_options(text, options())
}

/// A value as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, SerializeError> {
    serde_saphyr::to_string(value)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn untyped_values_read_as_serde_yaml_read_them() {
        let value: Value =
            super::from_str("a: yes\nb: on\nc: 010\nd: 1_000\ne: 0x10\nf: ~\ng: true\nh: 1\nh: 2\n").unwrap();
        assert_eq!(
            value,
            json!({"a": "yes", "b": "on", "c": "010", "d": "1_000", "e": 16, "f": null, "g": true, "h": 2})
        );
    }

    #[test]
    fn errors_are_one_line_with_their_line() {
        let error = super::from_str::<Value>("kind: A\nspec: [unclosed\n").unwrap_err();
        assert_eq!(error.location().map(|l| l.line()), Some(2), "{error}");
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
    }

    #[test]
    fn streams_and_round_trips() {
        let docs: Vec<Value> = super::from_str_multiple("a: 1\n---\nb: [x]\n").unwrap();
        assert_eq!(docs, [json!({"a": 1}), json!({"b": ["x"]})]);
        let text = super::to_string(&json!({"k": "v: w", "n": [1, "2"]})).unwrap();
        assert_eq!(
            super::from_str::<Value>(&text).unwrap(),
            json!({"k": "v: w", "n": [1, "2"]})
        );
    }
}
