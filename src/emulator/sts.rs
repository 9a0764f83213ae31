//! STS on the emulator (awsQuery, XML): GetCallerIdentity and AssumeRole, and the table of
//! the credentials AssumeRole issued, which is how a request signed with them is told to act
//! in the role's account as the role's session.
//!
//! Modelled: the principal registry stands for "the role exists and trusts the caller" (no
//! trust policies), an external id registered with the role must be given, DurationSeconds
//! bounds (a chained session at most one hour), expiry. Not modelled: session policies,
//! tags, source identity, MFA, the role's own MaxSessionDuration (taken as 12 hours).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::identity::{Identity, error_xml, xml_escape};
use super::wire::{ApiError, Body};

pub const OPERATIONS: &[&str] = &["GetCallerIdentity", "AssumeRole"];

/// STS's default and bounds for DurationSeconds (STS API reference, AssumeRole).
pub const DEFAULT_SESSION_SECONDS: u64 = 3_600;
pub const MIN_SESSION_SECONDS: u64 = 900;
const MAX_SESSION_SECONDS: u64 = 43_200;
/// "Role chaining limits your ... role session to a maximum of one hour" (IAM User Guide).
const MAX_CHAINED_SECONDS: u64 = 3_600;
/// How long an expired session is remembered (answered `ExpiredTokenException`) before
/// its key id is forgotten and reads as plain credentials again.
const FORGET_AFTER: Duration = Duration::from_secs(3_600);

/// Credentials AssumeRole issued.
#[derive(Clone, Debug)]
pub struct Session {
    pub identity: Identity,
    pub expires: SystemTime,
    /// Assumed with credentials of another session (role chaining).
    pub chained: bool,
    /// The access key id that called AssumeRole (tests attribute a session's calls to it).
    pub source_access_key_id: String,
}

/// Who a request's access key id stands for.
pub enum Resolved {
    /// Not issued here: the configured caller in the first account.
    Plain,
    Session(Identity),
    Expired(Identity),
}

#[derive(Debug, Default)]
pub struct StsState {
    sessions: HashMap<String, Session>,
    /// Role ARN -> the external id AssumeRole must carry.
    external_ids: BTreeMap<String, String>,
}

impl StsState {
    pub fn resolve(&self, access_key_id: &str, now: SystemTime) -> Resolved {
        match self.sessions.get(access_key_id) {
            None => Resolved::Plain,
            Some(s) if now >= s.expires => Resolved::Expired(s.identity.clone()),
            Some(s) => Resolved::Session(s.identity.clone()),
        }
    }

    pub fn set_external_id(&mut self, role_arn: &str, external_id: &str) {
        self.external_ids
            .insert(role_arn.to_string(), external_id.to_string());
    }

    pub fn external_ids(&self) -> &BTreeMap<String, String> {
        &self.external_ids
    }

    /// Issues credentials for `session`; returns (access key id, secret, token).
    fn issue(&mut self, session: Session, now: SystemTime) -> (String, String, String) {
        self.sessions.retain(|_, s| s.expires + FORGET_AFTER > now);
        let akid = loop {
            // `ASIA` marks temporary credentials, as AWS's do; 16 more characters.
            let candidate = format!("ASIA{}", random_base32(16));
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        self.sessions.insert(akid.clone(), session);
        let secret = random_base32(40);
        let token = format!("FwoGZXIvYXdzE{}", random_base32(96));
        (akid, secret, token)
    }

    /// The sessions, for `/_emulator/state` (no secrets).
    pub fn to_json(&self, now: SystemTime) -> Value {
        let mut list: Vec<_> = self.sessions.iter().collect();
        list.sort_by_key(|(_, s)| s.expires);
        let sessions: Vec<Value> = list
            .into_iter()
            .map(|(akid, s)| {
                json!({
                    "access_key_id": akid,
                    "arn": s.identity.arn,
                    "role_arn": s.identity.principal_arn,
                    "account": s.identity.account,
                    "expiration": rfc3339(s.expires),
                    "expired": now >= s.expires,
                    "chained": s.chained,
                    "source_access_key_id": s.source_access_key_id,
                })
            })
            .collect();
        json!(sessions)
    }
}

fn random_base32(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What AssumeRole needs besides the request.
pub struct AssumeCtx<'a> {
    /// The caller, and whether it is itself a session issued here (role chaining).
    pub caller: &'a Identity,
    pub chained: bool,
    /// The access key id the AssumeRole request was signed with.
    pub source_access_key_id: &'a str,
    /// The principal registry: the roles that exist.
    pub known: &'a BTreeSet<String>,
    /// The accounts the emulator serves.
    pub accounts: &'a [String],
    /// The shortest DurationSeconds accepted (STS's 900 unless lowered for tests).
    pub min_seconds: u64,
    pub now: SystemTime,
}

struct AssumeRequest<'b> {
    role_arn: &'b str,
    session_name: &'b str,
    external_id: Option<&'b str>,
    seconds: u64,
}

/// STS's constraint on ExternalId: 2 to 1,224 characters of `[\w+=,.@:/-]`.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (2..=1_224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "external id {id:?} must be 2 to 1224 characters of [\\w+=,.@:/-]"
        ))
    }
}

fn validation(message: String) -> ApiError {
    ApiError::client("ValidationError", message)
}

fn access_denied(message: String) -> ApiError {
    ApiError {
        status: 403,
        code: "AccessDenied",
        message,
    }
}

/// The parameters' constraints (STS API reference, AssumeRole).
fn parse_request<'b>(body: &'b Body, ctx: &AssumeCtx<'_>) -> Result<AssumeRequest<'b>, ApiError> {
    let required = |name: &str| {
        body.str(name).ok().flatten().ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
            ))
        })
    };
    let role_arn = required("RoleArn")?;
    let session_name = required("RoleSessionName")?;
    let name_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !name_ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    let external_id = body.str("ExternalId").ok().flatten();
    if let Some(id) = external_id {
        check_external_id(id).map_err(validation)?;
    }
    let seconds = match body.str("DurationSeconds").ok().flatten() {
        None => DEFAULT_SESSION_SECONDS,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| validation(format!("DurationSeconds {s:?} is not an integer")))?,
    };
    let max = if ctx.chained {
        MAX_CHAINED_SECONDS
    } else {
        MAX_SESSION_SECONDS
    };
    if seconds < ctx.min_seconds || seconds > max {
        return Err(validation(format!(
            "The requested DurationSeconds ({seconds}) must be between {} and {max} seconds{}",
            ctx.min_seconds,
            if ctx.chained { " (role chaining)" } else { "" }
        )));
    }
    Ok(AssumeRequest {
        role_arn,
        session_name,
        external_id,
        seconds,
    })
}

/// AssumeRole: checks the role and the external id, issues credentials, answers the XML.
pub fn assume_role(
    body: &Body,
    ctx: &AssumeCtx<'_>,
    state: &mut StsState,
    request_id: &str,
) -> Result<String, ApiError> {
    let req = parse_request(body, ctx)?;
    let denied = || {
        access_denied(format!(
            "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
            ctx.caller.arn, req.role_arn
        ))
    };
    let identity = Identity::role_session(req.role_arn, req.session_name).map_err(|_| {
        validation(format!(
            "{} is invalid: RoleArn must be an IAM role ARN",
            req.role_arn
        ))
    })?;
    let exists = ctx.known.contains(req.role_arn) && ctx.accounts.contains(&identity.account);
    let wanted = state.external_ids.get(req.role_arn).map(String::as_str);
    if !exists || wanted.is_some_and(|w| Some(w) != req.external_id) {
        return Err(denied());
    }
    let expires = ctx.now + Duration::from_secs(req.seconds);
    let session = Session {
        identity: identity.clone(),
        expires,
        chained: ctx.chained,
        source_access_key_id: ctx.source_access_key_id.to_string(),
    };
    let (akid, secret, token) = state.issue(session, ctx.now);
    Ok(assume_role_xml(
        &identity, &akid, &secret, &token, expires, request_id,
    ))
}

fn assume_role_xml(
    id: &Identity,
    akid: &str,
    secret: &str,
    token: &str,
    expires: SystemTime,
    request_id: &str,
) -> String {
    format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleResult>\n    <AssumedRoleUser>\n      <Arn>{}</Arn>\n      <AssumedRoleId>{}</AssumedRoleId>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{akid}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n",
        xml_escape(&id.arn),
        xml_escape(&id.user_id),
        rfc3339(expires)
    )
}

/// The answer to a request signed with expired credentials: STS's modelled error for STS,
/// the AWS front end's `ExpiredTokenException` for the JSON services.
pub fn expired_token() -> ApiError {
    ApiError::client(
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )
}

/// An STS answer: the XML body or the XML error.
pub fn answer(result: Result<String, ApiError>, request_id: &str) -> (u16, String) {
    match result {
        Ok(xml) => (200, xml),
        Err(e) => (e.status, error_xml(e.code, &e.message, request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::222222222222:role/msf-cmk-operator";

    fn ctx<'a>(
        caller: &'a Identity,
        known: &'a BTreeSet<String>,
        accounts: &'a [String],
    ) -> AssumeCtx<'a> {
        AssumeCtx {
            caller,
            chained: false,
            source_access_key_id: "AKIDTEST",
            known,
            accounts,
            min_seconds: MIN_SESSION_SECONDS,
            now: SystemTime::now(),
        }
    }

    fn form(s: &str) -> Body {
        Body::from_form(s.as_bytes())
    }

    #[test]
    fn assume_resolve_expire() {
        let caller = Identity::parse("arn:aws:iam::111111111111:role/hub").unwrap();
        let known: BTreeSet<String> = [ROLE.to_string()].into();
        let accounts = vec!["111111111111".to_string(), "222222222222".to_string()];
        let mut state = StsState::default();
        let c = ctx(&caller, &known, &accounts);
        let body = form(&format!(
            "Action=AssumeRole&RoleArn={ROLE}&RoleSessionName=s1"
        ));
        let xml = assume_role(&body, &c, &mut state, "r").unwrap();
        assert!(
            xml.contains("<Arn>arn:aws:sts::222222222222:assumed-role/msf-cmk-operator/s1</Arn>")
        );
        let akid = xml
            .split("<AccessKeyId>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        assert!(akid.starts_with("ASIA") && akid.len() == 20, "{akid}");
        let Resolved::Session(id) = state.resolve(akid, c.now) else {
            panic!("not a session")
        };
        assert_eq!(id.account, "222222222222");
        // The state tells which access key assumed it (the soak attributes calls with it).
        let listed = state.to_json(c.now);
        assert_eq!(listed[0]["access_key_id"], akid);
        assert_eq!(listed[0]["source_access_key_id"], "AKIDTEST");
        let later = c.now + Duration::from_secs(DEFAULT_SESSION_SECONDS);
        assert!(matches!(state.resolve(akid, later), Resolved::Expired(_)));
        assert!(matches!(state.resolve("AKIDOTHER", c.now), Resolved::Plain));
    }

    #[test]
    fn refusals() {
        let caller = Identity::parse("arn:aws:iam::111111111111:role/hub").unwrap();
        let known: BTreeSet<String> = [ROLE.to_string()].into();
        let accounts = vec!["222222222222".to_string()];
        let mut state = StsState::default();
        state.set_external_id(ROLE, "team-b");
        let c = ctx(&caller, &known, &accounts);
        let code = |s: &str, state: &mut StsState| {
            assume_role(&form(s), &c, state, "r")
                .err()
                .map(|e| (e.status, e.code))
        };
        let base = format!("RoleArn={ROLE}&RoleSessionName=s1");
        assert_eq!(code(&base, &mut state), Some((403, "AccessDenied")));
        assert_eq!(
            code(&format!("{base}&ExternalId=team-x"), &mut state),
            Some((403, "AccessDenied"))
        );
        assert_eq!(code(&format!("{base}&ExternalId=team-b"), &mut state), None);
        let unknown = "RoleArn=arn:aws:iam::222222222222:role/nope&RoleSessionName=s1";
        assert_eq!(code(unknown, &mut state), Some((403, "AccessDenied")));
        let short = format!("{base}&ExternalId=team-b&DurationSeconds=60");
        assert_eq!(code(&short, &mut state), Some((400, "ValidationError")));
        assert_eq!(
            code("RoleSessionName=s1", &mut state),
            Some((400, "ValidationError"))
        );
        let bad_name = format!("RoleArn={ROLE}&RoleSessionName=a%20b&ExternalId=team-b");
        assert_eq!(code(&bad_name, &mut state), Some((400, "ValidationError")));
    }
}
