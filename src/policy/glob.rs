//! Wildcard matching as IAM does it: `*` matches any run of characters (also none), `?` exactly
//! one character. Everything else, including `${...}` policy variables, is literal.
//!
//! Greedy matching with a single backtrack point: linear in practice and never exponential,
//! so a hostile pattern cannot stall evaluation.

/// Case-sensitive match (callers lower-case both sides for case-insensitive names) of `text` against `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_chars(&p, &t)
}

fn matches_chars(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` in the pattern and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
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
    p[pi..].iter().all(|&c| c == '*')
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
}
