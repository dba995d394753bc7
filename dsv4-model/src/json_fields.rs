//! Typed, field-naming reads out of a JSON object, so every config error says which key is wrong,
//! what it held and what was expected, in one line.

use serde_json::{Map, Value};

use crate::ConfigError;

/// A JSON object read field by field; `scope` prefixes nested keys (`rope_scaling.factor`).
pub(crate) struct JsonFields<'a> {
    map: &'a Map<String, Value>,
    scope: String,
}

/// Short rendering of a JSON value for error messages (long arrays and objects are elided).
pub(crate) fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let head: String = text.chars().take(37).collect();
        format!("{head}...")
    } else {
        text
    }
}

impl<'a> JsonFields<'a> {
    /// Reads a top-level object; anything but an object is an error naming `what`.
    pub(crate) fn root(value: &'a Value, what: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                scope: String::new(),
            }),
            other => Err(ConfigError::Invalid {
                field: what.to_string(),
                value: show(other),
                expected: "a JSON object".to_string(),
            }),
        }
    }

    /// The full dotted name of `key` inside this object.
    pub(crate) fn path(&self, key: &str) -> String {
        if self.scope.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.scope)
        }
    }

    /// An error about `key` holding `value` when `expected` was wanted.
    pub(crate) fn invalid(&self, key: &str, value: &Value, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            field: self.path(key),
            value: show(value),
            expected: expected.to_string(),
        }
    }

    /// The raw value of `key`, `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present and not `null`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn required(&self, key: &str) -> Result<&'a Value, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing {
            field: self.path(key),
        })
    }

    /// A nested object, if present.
    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<JsonFields<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(JsonFields {
                map,
                scope: self.path(key),
            })),
            Some(other) => Err(self.invalid(key, other, "a JSON object")),
        }
    }

    fn as_usize(&self, key: &str, value: &Value) -> Result<usize, ConfigError> {
        value
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.invalid(key, value, "a non-negative integer"))
    }

    /// A required non-negative integer.
    pub(crate) fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        self.as_usize(key, self.required(key)?)
    }

    /// An optional non-negative integer.
    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    fn as_f64(&self, key: &str, value: &Value) -> Result<f64, ConfigError> {
        value
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.invalid(key, value, "a finite number"))
    }

    /// A required finite number.
    pub(crate) fn f64(&self, key: &str) -> Result<f64, ConfigError> {
        self.as_f64(key, self.required(key)?)
    }

    /// An optional finite number.
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.get(key).map(|v| self.as_f64(key, v)).transpose()
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.invalid(key, v, "true or false"))
            })
            .transpose()
    }

    /// An optional string.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.invalid(key, v, "a string")))
            .transpose()
    }

    /// An optional array whose every item `item` can read.
    fn opt_list<T>(
        &self,
        key: &str,
        expected: &str,
        item: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.invalid(key, value, expected))?;
        items
            .iter()
            .map(|v| item(v).ok_or_else(|| self.invalid(key, value, expected)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An optional array of non-negative integers.
    pub(crate) fn opt_usize_list(&self, key: &str) -> Result<Option<Vec<usize>>, ConfigError> {
        self.opt_list(key, "an array of non-negative integers", |v| {
            v.as_u64().and_then(|v| usize::try_from(v).ok())
        })
    }

    /// An optional array of strings.
    pub(crate) fn opt_str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>, ConfigError> {
        self.opt_list(key, "an array of strings", Value::as_str)
    }

    /// A token id given as an integer or as an array of integers (transformers writes both).
    pub(crate) fn opt_token_ids(&self, key: &str) -> Result<Vec<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(_)) => Ok(self.opt_usize_list(key)?.unwrap_or_default()),
            Some(value) => Ok(vec![self.as_usize(key, value)?]),
        }
    }
}
