//! The crate's errors.

/// Why a message has no usable key. Such a message is dead-lettered at once:
/// redelivering it cannot give it a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The configured header or property is absent.
    #[error("the message has no {0} header")]
    NoHeader(String),
    /// The body is not JSON, but the key is a JSON field.
    #[error("the body is not JSON")]
    NotJson,
    /// The JSON pointer matches nothing.
    #[error("the body has no field {0}")]
    Missing(String),
    /// The field is neither a string nor a number.
    #[error("the field {0} is neither a string nor a number")]
    NotAKey(String),
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`crate::KEY_BYTES_MAX`].
    #[error("the key is {0} bytes, more than the limit")]
    TooLong(usize),
}

/// A settings value out of its documented range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("setting {name} = {value} is outside {min}..={max}")]
pub struct SettingsError {
    /// The setting.
    pub name: &'static str,
    /// The value given.
    pub value: u64,
    /// The smallest value allowed.
    pub min: u64,
    /// The largest value allowed.
    pub max: u64,
}

/// Why a consumer stopped (a message's own failures never stop it: they
/// end in a redelivery or in the dead-letter queue).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The settings were refused.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The broker connection or subscription failed.
    #[error("broker: {0}")]
    Broker(String),
}
