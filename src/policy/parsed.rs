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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{ParseError, PolicyDocument};

/// Bytes of policy text kept by default (about 4x that in parsed form): 32 policies at KMS's
/// 32 KB limit, 300 of the size of a key shared by 5 applications.
pub const TEXT_BYTES: u64 = 1 << 20;

/// The bound the cache is built with, at the first parse ([`limit_parse_cache`]).
static LIMIT: AtomicU64 = AtomicU64::new(TEXT_BYTES);

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

static PARSED: OnceLock<Cache<String, Arc<PolicyDocument>, TextLength>> = OnceLock::new();

/// Bounds the cache to `text_bytes` of policy text instead of [`TEXT_BYTES`]. Takes effect only
/// before the first parse, when the cache is built: returns whether it did. `run` keeps less
/// than `apply`: its reconciles of one key are spread over the resync period, so beyond the
/// reconciles running at once a parsed policy is seldom asked for again before it would be
/// evicted, and at 10,000 resources the default bound held about 5 MiB of parsed documents
/// (BENCHMARKS.md, "Controller footprint").
pub fn limit_parse_cache(text_bytes: u64) -> bool {
    LIMIT.store(text_bytes.max(1), Ordering::Relaxed);
    PARSED.get().is_none()
}

/// [`PolicyDocument::parse`] of `text`, shared with every other caller that parsed the same
/// text while it is remembered. Concurrent callers of one new text wait for a single parse.
pub fn parse_shared(text: &str) -> Result<Arc<PolicyDocument>, ParseError> {
    cache().get_or_insert_with(text, || PolicyDocument::parse(text).map(Arc::new))
}

fn cache() -> &'static Cache<String, Arc<PolicyDocument>, TextLength> {
    PARSED.get_or_init(|| {
        let limit = LIMIT.load(Ordering::Relaxed);
        Cache::with_weighter(ESTIMATED_ENTRIES, limit, TextLength)
    })
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
    fn the_bound_is_set_before_the_first_parse_only() {
        parse_shared(POLICY).unwrap();
        assert!(!limit_parse_cache(TEXT_BYTES), "the cache is built already");
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
        assert!(cache().get(bad).is_none());
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
            cache().weight() <= TEXT_BYTES,
            "{} bytes kept",
            cache().weight()
        );
    }
}
