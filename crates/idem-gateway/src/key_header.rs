//! The `Idempotency-Key` header: an RFC 8941 sf-string (`"..."`), or, as
//! most clients send it, a bare value of token characters. Both spell the
//! same key: `"abc"` and `abc` are one key.

/// Longest key accepted, in bytes, after unquoting (the bound Stripe uses).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// Why a key value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The value is empty.
    #[error("the key is empty")]
    Empty,
    /// The value is longer than the bound.
    #[error("the key is {bytes} bytes long, more than the {max} allowed")]
    TooLong {
        /// The key's length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// A character outside the allowed set, or a malformed sf-string.
    #[error("{0}")]
    Syntax(&'static str),
    /// The header appears more than once.
    #[error("the header appears more than once")]
    Repeated,
}

/// Parses an `Idempotency-Key` header value into the key's bytes.
pub fn parse_idempotency_key(raw: &[u8], bytes_max: usize) -> Result<Vec<u8>, KeyError> {
    let v = trim_ows(raw);
    let key = match v.first() {
        None => return Err(KeyError::Empty),
        Some(b'"') => parse_sf_string(v)?,
        Some(_) => {
            if !v.iter().all(|&c| is_bare_key_char(c)) {
                return Err(KeyError::Syntax(
                    "a bare key may hold only token characters (letters, digits and !#$%&'*+-.^_`|~:/); quote it as an sf-string otherwise",
                ));
            }
            v.to_vec()
        }
    };
    check_len(&key, bytes_max)?;
    Ok(key)
}

/// Checks a key part's length against the bound.
pub fn check_len(key: &[u8], bytes_max: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > bytes_max {
        return Err(KeyError::TooLong { bytes: key.len(), max: bytes_max });
    }
    Ok(())
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end]
}

/// RFC 9110 tchar, plus `:` and `/` as RFC 8941 tokens allow.
fn is_bare_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c)
}

/// RFC 8941 §4.2.5: `"` then printable ASCII with `\"` and `\\` escapes,
/// then `"`, and nothing after it (no parameters: a key carries none).
fn parse_sf_string(v: &[u8]) -> Result<Vec<u8>, KeyError> {
    debug_assert_eq!(v.first(), Some(&b'"'));
    let mut out = Vec::with_capacity(v.len());
    let mut i = 1;
    while i < v.len() {
        match v[i] {
            b'\\' => match v.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err(KeyError::Syntax("an sf-string may escape only \" and \\")),
            },
            b'"' => {
                if i + 1 != v.len() {
                    return Err(KeyError::Syntax("nothing may follow the closing quote of the key"));
                }
                return Ok(out);
            }
            c if (0x20..=0x7e).contains(&c) => {
                out.push(c);
                i += 1;
            }
            _ => return Err(KeyError::Syntax("an sf-string holds only printable ASCII")),
        }
    }
    Err(KeyError::Syntax("the sf-string has no closing quote"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = IDEMPOTENCY_KEY_BYTES_MAX;

    #[test]
    fn quoted_and_bare_spell_the_same_key() {
        let id = "8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(parse_idempotency_key(format!("\"{id}\"").as_bytes(), MAX).unwrap(), id.as_bytes());
        assert_eq!(parse_idempotency_key(id.as_bytes(), MAX).unwrap(), id.as_bytes());
        assert_eq!(parse_idempotency_key(b"  abc \t", MAX).unwrap(), b"abc");
    }

    #[test]
    fn escapes_and_spaces_inside_quotes() {
        assert_eq!(parse_idempotency_key(br#""a \"b\" \\c""#, MAX).unwrap(), br#"a "b" \c"#);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [&b""[..], b"\"", b"\"abc", b"\"ab\"c", b"\"a\\nb\"", b"a b", b"a,b", b"\"a\";p=1", b"\"\xc3\xa9\""]
        {
            assert!(parse_idempotency_key(bad, MAX).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_idempotency_key(b"\"\"", MAX), Err(KeyError::Empty));
    }

    #[test]
    fn length_bound_counts_unquoted_bytes() {
        let ok = "k".repeat(MAX);
        assert!(parse_idempotency_key(ok.as_bytes(), MAX).is_ok());
        assert!(parse_idempotency_key(format!("\"{ok}\"").as_bytes(), MAX).is_ok());
        let long = "k".repeat(MAX + 1);
        assert_eq!(parse_idempotency_key(long.as_bytes(), MAX), Err(KeyError::TooLong { bytes: MAX + 1, max: MAX }));
    }
}
