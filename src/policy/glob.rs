//! Wildcard matching as IAM does it: `*` matches any run of characters (also none), `?` exactly
//! one character. Everything else, including `${...}` policy variables, is literal.
//!
//! Greedy matching with a single backtrack point: linear in practice and never exponential,
//! so a hostile pattern cannot stall evaluation.

/// Case-sensitive match (callers lower-case both sides for case-insensitive names) of `text` against `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    // The common cases (`Resource: "*"`, literal names) without building char vectors.
    if pattern == "*" {
        return true;
    }
    if is_literal(pattern) {
        return pattern == text;
    }
    // ASCII on both sides (action names, ARNs): a byte is a character, no vectors needed.
    if pattern.is_ascii() && text.is_ascii() {
        return matches_chars(pattern.as_bytes(), |_| false, text.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_chars(&p, |_| false, &t)
}

/// Like [`matches`], but a `*` or `?` at a position where `literal` is true is an ordinary
/// character: what `${*}` and `${?}` and substituted request values produce.
pub fn matches_masked(pattern: &[char], literal: &[bool], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    matches_chars(pattern, |i| literal.get(i).copied().unwrap_or(false), &t)
}

/// The matcher on characters, or on bytes when both sides are ASCII (the same thing then).
fn matches_chars<C: Wild>(p: &[C], literal: impl Fn(usize) -> bool, t: &[C]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` in the pattern and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(&c) if c.is_star() && !literal(pi) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if (c.is_question() && !literal(pi)) || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..]
        .iter()
        .enumerate()
        .all(|(i, &c)| c.is_star() && !literal(pi + i))
}

/// A pattern unit: a `char`, or a byte of ASCII text.
trait Wild: Copy + PartialEq {
    fn is_star(self) -> bool;
    fn is_question(self) -> bool;
}

impl Wild for char {
    fn is_star(self) -> bool {
        self == '*'
    }
    fn is_question(self) -> bool {
        self == '?'
    }
}

impl Wild for u8 {
    fn is_star(self) -> bool {
        self == b'*'
    }
    fn is_question(self) -> bool {
        self == b'?'
    }
}

/// True when `pattern` contains no wildcard, so callers can compare directly.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", ""));
        assert!(matches("kms:*", "kms:Decrypt"));
        assert!(!matches("kms:*", "KMS:Decrypt"));
        assert!(matches("kms:?ecrypt", "kms:Decrypt"));
        assert!(!matches("kms:?ecrypt", "kms:ecrypt"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("*a*a*a*a*a*a*b", &format!("{}b", "a".repeat(200))));
        assert!(!matches("*a*a*a*a*a*a*b", &"a".repeat(200)));
        assert!(matches("${aws:username}", "${aws:username}"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }

    #[test]
    fn masked_wildcards_are_literal() {
        let p: Vec<char> = "a*b?".chars().collect();
        assert!(matches_masked(&p, &[false, true, false, false], "a*bc"));
        assert!(!matches_masked(&p, &[false, true, false, false], "axbc"));
        assert!(matches_masked(&p, &[false; 4], "axxbc"));
        assert!(!matches_masked(&p, &[false, false, false, true], "abc"));
    }
}
