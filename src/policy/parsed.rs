//! Parsed key policies, remembered by their text.
//!
//! Every reconcile of a key's applications plans from the same policy text (the read is shared
//! per key, see `controller::key_locks`), and parsing it is most of a pass's CPU: about 0.4 ms
//! for a policy holding 50 applications' statements, i.e. most of `apply`'s CPU at 1,000
//! applications (BENCHMARKS.md, "Apply at scale"). A text parses to the same document every
//! time, so it is parsed once and shared read-only; the cache is bounded by the bytes of text
//! it holds, so it never keeps more than a few megabytes, whatever the number of keys.
//!
//! Errors are not remembered: a policy that does not parse is rare and its reconcile stops
//! there anyway.

use std::sync::{Arc, LazyLock};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{ParseError, PolicyDocument};

/// Bytes of policy text kept (about 4x that in parsed form): 32 policies at KMS's 32 KB limit,
/// 300 of the size of a key shared by 5 applications.
const TEXT_BYTES: u64 = 1 << 20;

/// A guess for sizing the table; the weight bound is the real limit.
const ESTIMATED_ENTRIES: usize = 64;

#[derive(Clone)]
struct TextLength;

impl Weighter<String, Arc<PolicyDocument>> for TextLength {
    fn weight(&self, text: &String, _: &Arc<PolicyDocument>) -> u64 {
        // Never zero: an empty text still takes a slot.
        text.len().max(1) as u64
    }
}

static PARSED: LazyLock<Cache<String, Arc<PolicyDocument>, TextLength>> =
    LazyLock::new(|| Cache::with_weighter(ESTIMATED_ENTRIES, TEXT_BYTES, TextLength));

/// [`PolicyDocument::parse`] of `text`, shared with every other caller that parsed the same
/// text while it is remembered. Concurrent callers of one new text wait for a single parse.
pub fn parse_shared(text: &str) -> Result<Arc<PolicyDocument>, ParseError> {
    PARSED.get_or_insert_with(text, || PolicyDocument::parse(text).map(Arc::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

    #[test]
    fn a_text_is_parsed_once_and_shared() {
        let a = parse_shared(POLICY).unwrap();
        // Another allocation of the same text: looked up by content, not by address.
        let copy = String::from(POLICY);
        let b = parse_shared(&copy).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second caller gets the first parse"
        );
        assert_eq!(*a, PolicyDocument::parse(POLICY).unwrap());
    }

    #[test]
    fn a_different_text_is_a_different_document() {
        let other = POLICY.replace("Root", "Other");
        let a = parse_shared(POLICY).unwrap();
        let b = parse_shared(&other).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_ne!(*a, *b);
    }

    #[test]
    fn errors_are_the_parsers_and_not_remembered() {
        let bad = r#"{"Statement": 3}"#;
        let e = parse_shared(bad).unwrap_err();
        assert_eq!(e, PolicyDocument::parse(bad).unwrap_err());
        assert!(PARSED.get(bad).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        // 200 distinct policies of about 20 KB: 4 MB of text offered, at most 1 MB kept.
        let filler = "x".repeat(20_000);
        for i in 0..200 {
            let text = POLICY.replace("Root", &format!("R{i}{filler}"));
            parse_shared(&text).unwrap();
        }
        assert!(
            PARSED.weight() <= TEXT_BYTES,
            "{} bytes kept",
            PARSED.weight()
        );
    }
}
