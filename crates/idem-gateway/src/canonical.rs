//! Canonical JSON: the form two requests must share to count as "the same
//! body". Object keys are sorted by their UTF-8 bytes, there is no
//! whitespace, strings use serde_json's escaping and numbers are written as
//! serde_json renders them (so `1.0` and `1` stay different, as they are
//! different JSON texts for many parsers). Arrays keep their order.

use serde_json::Value;

/// Appends the canonical form of `v` to `out`.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here rather than trusting the map's order: a crate in
            // the build may enable serde_json's `preserve_order`.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical form of `v`.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping of a string cannot fail when writing to a Vec.
    serde_json::to_writer(&mut *out, s).expect("writing a JSON string to memory");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonical(&serde_json::from_str(text).unwrap())).unwrap()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = canon(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#);
        let b = canon("{\"a\":{\"x\":\"s\",\n \"y\":[1,2]},\"b\":1}");
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn array_order_and_number_forms_matter() {
        assert_ne!(canon("[1,2]"), canon("[2,1]"));
        assert_ne!(canon(r#"{"n":1}"#), canon(r#"{"n":1.0}"#));
        assert_eq!(canon(r#"{"s":"é\"\n"}"#), "{\"s\":\"é\\\"\\n\"}");
    }

    #[test]
    fn keys_sort_by_bytes() {
        assert_eq!(canon(r#"{"b":0,"B":0,"a":0,"é":0}"#), r#"{"B":0,"a":0,"b":0,"é":0}"#);
    }
}
