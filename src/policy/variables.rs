//! Policy variables: `${aws:PrincipalAccount}` in a Condition value or a Resource is replaced by
//! the request's value of that key (IAM User Guide, "IAM policy elements: Variables and tags").
//!
//! Rules kept here:
//! - only under `"Version": "2012-10-17"`; under 2008-10-17 or without a Version the text is
//!   literal (the caller decides, by not building a [`Template`]);
//! - `${*}`, `${?}` and `${$}` are a literal `*`, `?` and `$` (not wildcards);
//! - `${key, 'default'}` uses the default when the key is absent (`''` is a quote in it);
//! - a key absent from the request (and without a default), or with several values, cannot be
//!   substituted: the condition using it is false ([`Resolved::Absent`]);
//! - a substituted value is literal text: a `*` in it is not a wildcard;
//! - key names are case-insensitive.

/// Where a key stands in a request: its values, absent, or present with a value the
/// controller cannot know (evaluated as "unknown", see [`super::condition`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Known(&'a [String]),
    Absent,
    Unknown,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    /// Policy text: `*` and `?` in it stay wildcards.
    Text(String),
    /// `${*}`, `${?}`, `${$}`.
    Literal(char),
    Var {
        key: String,
        default: Option<String>,
    },
}

/// A policy string holding at least one variable.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template after substitution: the characters, and which of them are literal (so that a
/// `*` or `?` there is not a wildcard).
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    Text {
        chars: Vec<char>,
        literal: Vec<bool>,
    },
    Absent,
    /// The lower-cased key whose value is unknown.
    Unknown(String),
}

impl Template {
    /// `None` when `text` holds no variable: compare it as plain text.
    pub fn parse(text: &str) -> Option<Self> {
        if !text.contains("${") {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break; // no closing brace: the rest is plain text
            };
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            parts.push(variable(&rest[start + 2..start + len]));
            rest = &rest[start + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Some(Self { parts })
    }

    /// Substitutes every variable; `lookup` takes a lower-cased key.
    pub fn resolve<'a>(&self, lookup: impl Fn(&str) -> Lookup<'a>) -> Resolved {
        let mut chars = Vec::new();
        let mut literal = Vec::new();
        let mut push = |s: &str, lit: bool| {
            for c in s.chars() {
                chars.push(c);
                literal.push(lit);
            }
        };
        for part in &self.parts {
            match part {
                Part::Text(t) => push(t, false),
                Part::Literal(c) => push(c.encode_utf8(&mut [0; 4]), true),
                Part::Var { key, default } => match (lookup(key), default) {
                    (Lookup::Known([one]), _) => push(one, true),
                    (Lookup::Unknown, _) => return Resolved::Unknown(key.clone()),
                    (_, Some(d)) => push(d, true),
                    (_, None) => return Resolved::Absent,
                },
            }
        }
        Resolved::Text { chars, literal }
    }
}

fn variable(inner: &str) -> Part {
    match inner.trim() {
        "*" => return Part::Literal('*'),
        "?" => return Part::Literal('?'),
        "$" => return Part::Literal('$'),
        _ => {}
    }
    let (key, default) = match inner.split_once(',') {
        Some((k, d)) => (k, default_value(d.trim())),
        None => (inner, None),
    };
    Part::Var {
        key: key.trim().to_ascii_lowercase(),
        default,
    }
}

/// `'text'` with `''` standing for one quote.
fn default_value(d: &str) -> Option<String> {
    let body = d.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(body.replace("''", "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Resolved) -> (String, Vec<bool>) {
        match r {
            Resolved::Text { chars, literal } => (chars.into_iter().collect(), literal),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn substitution() {
        let acct = vec!["123456789012".to_string()];
        let look = |k: &str| match k {
            "aws:principalaccount" => Lookup::Known(&acct),
            "aws:principalorgid" => Lookup::Unknown,
            _ => Lookup::Absent,
        };
        assert!(Template::parse("plain").is_none());
        let t = Template::parse("arn:aws:iam::${aws:PrincipalAccount}:role/*").unwrap();
        assert_eq!(text(t.resolve(look)).0, "arn:aws:iam::123456789012:role/*");
        let t = Template::parse("a${*}b${?}c${$}").unwrap();
        let (s, lit) = text(t.resolve(look));
        assert_eq!(s, "a*b?c$");
        assert_eq!(lit, [false, true, false, true, false, true]);
        assert_eq!(
            Template::parse("${aws:username}").unwrap().resolve(look),
            Resolved::Absent
        );
        assert_eq!(
            text(
                Template::parse("${aws:username, 'it''s'}")
                    .unwrap()
                    .resolve(look)
            )
            .0,
            "it's"
        );
        assert_eq!(
            Template::parse("${aws:PrincipalOrgID}")
                .unwrap()
                .resolve(look),
            Resolved::Unknown("aws:principalorgid".into())
        );
        assert_eq!(
            text(Template::parse("x${unclosed").unwrap().resolve(look)).0,
            "x${unclosed"
        );
    }
}
