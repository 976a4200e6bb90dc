//! Where a message's idempotency key comes from: a header the publisher set
//! (`Nats-Msg-Id`, the AMQP `message-id` property) or a field of a JSON body.

use crate::error::KeyError;

/// Keys longer than this are refused: idem's own key limit
/// (`key_bytes_max`), less room for the consumer's prefix.
pub const KEY_BYTES_MAX: usize = 448;

/// Where the key of a message is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A message header: on JetStream any header (`Nats-Msg-Id` by default);
    /// on AMQP the name `message-id` reads the message-id property and any
    /// other name a header of the table.
    Header(String),
    /// A field of a JSON object body, as a JSON pointer (`/order/id`). A
    /// string is used as is, a number by its decimal text.
    JsonField(String),
}

impl KeySource {
    /// The JetStream default: the publisher's `Nats-Msg-Id`, the header
    /// JetStream's own publish dedup reads.
    pub fn nats_msg_id() -> KeySource {
        KeySource::Header("Nats-Msg-Id".to_string())
    }

    /// The AMQP default: the message-id property.
    pub fn amqp_message_id() -> KeySource {
        KeySource::Header("message-id".to_string())
    }

    /// Reads the key from a body, for [`KeySource::JsonField`]; `None` for
    /// a header source (the broker module reads those).
    pub(crate) fn read_body(&self, body: &[u8]) -> Option<Result<Vec<u8>, KeyError>> {
        let KeySource::JsonField(pointer) = self else { return None };
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return Some(Err(KeyError::NotJson)),
        };
        Some(match value.pointer(pointer) {
            Some(serde_json::Value::String(s)) => check(s.as_bytes().to_vec()),
            Some(serde_json::Value::Number(n)) => check(n.to_string().into_bytes()),
            Some(_) => Err(KeyError::NotAKey(pointer.clone())),
            None => Err(KeyError::Missing(pointer.clone())),
        })
    }
}

/// Checks a key read from anywhere: present, not empty, not too long.
pub(crate) fn check(key: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KeyError::TooLong(key.len()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_reads_strings_and_numbers() {
        let src = KeySource::JsonField("/order/id".into());
        assert_eq!(src.read_body(br#"{"order":{"id":"o-1"}}"#).unwrap().unwrap(), b"o-1");
        assert_eq!(src.read_body(br#"{"order":{"id":42}}"#).unwrap().unwrap(), b"42");
    }

    #[test]
    fn json_field_refuses_what_is_not_a_key() {
        let src = KeySource::JsonField("/id".into());
        assert!(matches!(src.read_body(b"not json"), Some(Err(KeyError::NotJson))));
        assert!(matches!(src.read_body(br#"{"x":1}"#), Some(Err(KeyError::Missing(_)))));
        assert!(matches!(src.read_body(br#"{"id":{"a":1}}"#), Some(Err(KeyError::NotAKey(_)))));
        assert!(matches!(src.read_body(br#"{"id":""}"#), Some(Err(KeyError::Empty))));
        let long = format!(r#"{{"id":"{}"}}"#, "k".repeat(KEY_BYTES_MAX + 1));
        assert!(matches!(src.read_body(long.as_bytes()), Some(Err(KeyError::TooLong(_)))));
    }

    #[test]
    fn header_sources_are_left_to_the_broker() {
        assert!(KeySource::nats_msg_id().read_body(b"{}").is_none());
    }
}
