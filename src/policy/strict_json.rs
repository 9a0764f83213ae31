//! JSON read and written the way KMS reads and stores a key policy.
//!
//! Reading: serde_json keeps the last of two equal keys in an object without a word, so a
//! policy with two `Condition` elements would silently lose one. KMS refuses such a policy
//! (MalformedPolicyDocumentException), and so do we: [`parse`] walks the raw text with its own
//! visitor and refuses a duplicate key at any depth. It also refuses control characters other
//! than tab, LF and CR inside strings, which KMS does not accept either.
//!
//! Writing: PutKeyPolicy accepts only tab, LF, CR and U+0020 to U+00FF; [`kms_text`] escapes every
//! character above U+00FF as `\uXXXX` (UTF-16 code units), so the text sent is what KMS accepts
//! and its byte length is the size KMS measures.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text`, refusing duplicate object keys and characters KMS refuses.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The text KMS stores for `json` (compact or pretty serde_json output): characters above
/// U+00FF become `\uXXXX` escapes. They can only occur inside JSON strings, where an escape
/// means the same character, so the document is unchanged.
pub fn kms_text(json: String) -> String {
    if json.chars().all(|c| c <= '\u{ff}') {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 32);
    for c in json.chars() {
        if c <= '\u{ff}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// A character KMS refuses in a key policy (C0 controls other than tab, LF, CR).
fn refused_char(s: &str) -> Option<char> {
    // Such a character is one byte in UTF-8, and no byte of a longer character is below 0x80:
    // scanning bytes finds exactly the refused characters, without decoding.
    s.bytes()
        .find(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        .map(char::from)
}

fn check_chars<E: de::Error>(s: &str) -> Result<(), E> {
    match refused_char(s) {
        Some(c) => Err(E::custom(format!(
            "character U+{:04X} is not accepted in a key policy (KMS accepts tab, LF, CR and U+0020 to U+00FF)",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        check_chars(s)?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        check_chars(&s)?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            check_chars(&key)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?} (KMS refuses a policy that repeats a key in one object)"
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(parse(r#"{"a":1,"b":{"c":[{"d":1,"d":2}]}}"#).is_err());
        assert!(parse(r#"{"a":1,"a":1}"#).is_err());
        assert!(parse(r#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
        let e = parse("{\"a\":1,\n\"a\":2}").unwrap_err().to_string();
        assert!(
            e.contains("duplicate key \"a\"") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn same_value_as_serde_json() {
        let text = r#"{"n":[1,-2,3.5,1e3,18446744073709551615],"s":"é€\u0041","t":true,"z":null}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(parse(r#"{"a":"x\u0001"}"#).is_err());
        assert!(parse(r#"{"a\u0000":"x"}"#).is_err());
        assert!(parse(r#"{"a":"tab\tlf\ncr\r"}"#).is_ok());
    }

    #[test]
    fn above_latin1_is_escaped() {
        assert_eq!(
            kms_text("{\"a\":\"é€😀\"}".into()),
            "{\"a\":\"é\\u20ac\\ud83d\\ude00\"}"
        );
        let v: Value = serde_json::from_str(&kms_text("{\"a\":\"é€😀\"}".into())).unwrap();
        assert_eq!(v["a"], "é€😀");
    }
}
