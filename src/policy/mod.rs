//! The key-policy engine, pure (no I/O): a lossless policy model ([`PolicyDocument`]), the
//! evaluator ([`evaluate`]), MSF's requirements ([`requirements`]), compliance checks and
//! findings ([`check`]), the merge of controller-owned statements ([`merge`]) and the
//! operator's IAM policy ([`iam`]).
//!
//! Limits, stated once: only the key policy is evaluated (IAM policies, grants, SCPs and
//! session policies are out of scope). Where the answer depends on them, the engine says so
//! instead of guessing: an Allow that names the caller's account delegates to IAM
//! (`delegated_to_iam`), and a condition on a key the controller cannot know (such as
//! `aws:PrincipalOrgID`) makes the decision depend on it (`depends_on`).

mod compliance;
mod condition;
mod document;
mod evaluator;
mod findings;
pub mod glob;
pub mod iam;
pub mod iam_fleet;
pub mod instance;
pub mod merge;
mod owned;
mod parsed;
mod principal;
pub mod requirements;
mod sid;
mod strict_json;
mod variables;

pub use compliance::{AccessCheck, ComplianceReport, check, check_many};
pub use document::{Effect, ParseError, PolicyDocument, Statement};
pub use evaluator::{Decision, Evaluation, Request, evaluate};
pub use findings::Finding;
pub use instance::InstanceName;
pub use parsed::{limit_parse_cache, parse_shared};
pub use principal::Principal;

/// KMS's limit for a key policy, in bytes of the document as sent.
pub const MAX_POLICY_BYTES: usize = 32_768;

/// Statements whose Sid starts with this are the controller's (when their shape is exactly the
/// controller's too, see `owned::recognise`); all others belong to people. The Sid grammar
/// is in `sid`.
pub const OWNED_SID_PREFIX: &str = "MsfCmk";
