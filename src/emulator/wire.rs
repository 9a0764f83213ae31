//! Wire-level pieces shared by the MSF and KMS handlers: the awsJson1_1 error shape, reading
//! fields of a request body, the region in a SigV4 `Authorization` header, epoch timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// An AWS error as the services send it: `{"__type": CODE, "message": MESSAGE}` with a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400), which is how both services report every modeled error.
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        serde_json::json!({ "__type": self.code, "message": self.message })
    }
}

pub type OpResult = Result<Value, ApiError>;

/// The fields of a request body. awsJson requests are always a JSON object.
pub struct Body(Map<String, Value>);

impl Body {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Ok(Self(m)),
            Ok(_) => Err(ApiError::client(
                "SerializationException",
                "request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::client(
                "SerializationException",
                format!("request body is not valid JSON: {e}"),
            )),
        }
    }

    /// An awsQuery form body (`Action=AssumeRole&RoleArn=arn%3Aaws...`): every field a
    /// string, percent-decoded. A field that does not decode to UTF-8 is dropped (it then
    /// reads as missing, which the operation refuses).
    pub fn from_form(bytes: &[u8]) -> Self {
        let map = bytes
            .split(|b| *b == b'&')
            .filter_map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                let name = percent_decode(&pair[..eq])?;
                let value = percent_decode(&pair[eq + 1..])?;
                Some((name, Value::String(value)))
            })
            .collect();
        Self(map)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(validation(format!("{name} must be a string"))),
        }
    }

    /// A required string; `code` is the service's error for a missing parameter.
    pub fn required_str(&self, name: &str, code: &'static str) -> Result<&str, ApiError> {
        self.str(name)?.ok_or_else(|| {
            ApiError::client(
                code,
                format!("1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"),
            )
        })
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| validation(format!("{name} must be an integer"))),
        }
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| validation(format!("{name} must be a number"))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(validation(format!("{name} must be a boolean"))),
        }
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(raw: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex)?;
                let lo = raw.get(i + 2).copied().and_then(hex)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn validation(message: String) -> ApiError {
    ApiError::client("ValidationException", message)
}

/// The region of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/kms/aws4_request, ...`.
/// Signatures are not checked: the emulator trusts its callers, like moto.
pub fn region_from_authorization(header: &str) -> Option<&str> {
    let cred = header.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    let region = scope.split('/').nth(2)?;
    (!region.is_empty()).then_some(region)
}

/// Seconds since the epoch, as the AWS JSON protocols send timestamps (numbers, not ISO text:
/// the Rust SDK refuses ISO strings).
pub fn epoch_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Millisecond precision, like the services.
    (d.as_millis() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_scope() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/kms/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(region_from_authorization(h), Some("eu-west-1"));
        assert_eq!(region_from_authorization("Bearer x"), None);
        assert_eq!(region_from_authorization("Credential=a/b//kms/x"), None);
    }

    #[test]
    fn bodies() {
        assert!(Body::parse(b"").is_ok());
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
        let b = Body::parse(br#"{"A":"x","N":3,"Z":null}"#).unwrap();
        assert_eq!(b.str("A").unwrap(), Some("x"));
        assert!(b.str("N").is_err());
        assert_eq!(b.i64("N").unwrap(), Some(3));
        assert_eq!(b.str("Z").unwrap(), None);
        let f = Body::from_form(
            b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa&N=a+b&X=%zz",
        );
        assert_eq!(f.str("RoleArn").unwrap(), Some("arn:aws:iam::1:role/a"));
        assert_eq!(f.str("N").unwrap(), Some("a b"));
        assert_eq!(f.str("X").unwrap(), None);
    }
}
