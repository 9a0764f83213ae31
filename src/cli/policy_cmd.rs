//! `policy simulate|check|merge` and `iam-policy`: the pure key-policy engine on files.
//!
//! Exit codes: 0 done (check: compliant), 1 check found the policy not compliant,
//! 2 bad input (unreadable file, malformed policy, invalid ARN or principal).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::BadInput;
use crate::arn::Arn;
use crate::policy::InstanceName;
use crate::policy::merge::{Grant, merge_for};
use crate::policy::requirements::MsfRequirements;
use crate::policy::{self, Decision, PolicyDocument, Principal, Request, check, evaluate, iam};

pub use super::output::OutputFormat as Output;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate one request against a key policy; prints the decision and deciding statements.
    Simulate(SimulateArgs),
    /// Check that a key policy grants everything MSF needs for an application.
    Check(CheckArgs),
    /// Add (or remove) applications' controller-owned statements; prints the merged policy.
    Merge(MergeArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Key policy file (JSON).
    #[arg(long)]
    pub policy: PathBuf,
    /// AWS:<arn-or-account> or Service:<name>.
    #[arg(long)]
    pub principal: String,
    /// e.g. kms:Decrypt.
    #[arg(long)]
    pub action: String,
    /// The key ARN (the resource of every key policy request).
    #[arg(long, default_value = "*")]
    pub resource: String,
    /// KEY=VALUE; repeat a key to make it multi-valued. Always wins over the keys derived
    /// from --principal (aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalIsAWSService,
    /// aws:PrincipalType, aws:PrincipalServiceName).
    #[arg(long = "context")]
    pub context: Vec<String>,
    /// A key present in the request whose value is unknown (repeatable): the decision then
    /// lists it in dependsOn when it hinges on it. Keys given neither way are absent.
    #[arg(long = "unknown")]
    pub unknown: Vec<String>,
    /// Output format: text for people, json or yaml for programs.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Key policy file (JSON).
    #[arg(long)]
    pub policy: PathBuf,
    /// The application whose needs are checked (arn:aws:kinesisanalytics:REGION:ACCOUNT:application/NAME).
    #[arg(long)]
    pub application_arn: String,
    /// The role that calls UpdateApplication for it (the controller's operator role).
    #[arg(long)]
    pub operator_role_arn: String,
    /// Defaults to a key in the application's account and region (statements with
    /// `Resource: "*"`, as key policies use, match any key).
    #[arg(long)]
    pub key_arn: Option<String>,
    /// Output format: text for people, json or yaml for programs.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Key policy file (JSON) to merge into; it is not modified.
    #[arg(long)]
    pub policy: PathBuf,
    /// An application to grant (repeatable: one flag per application).
    #[arg(long = "application-arn")]
    pub application_arns: Vec<String>,
    /// The operator role for the granted applications (required with --application-arn).
    #[arg(long)]
    pub operator_role_arn: Option<String>,
    /// An application whose statements' values are removed (repeatable: one flag per
    /// application).
    #[arg(long = "remove-application-arn")]
    pub remove_application_arns: Vec<String>,
    /// With -o text: indented JSON instead of the compact form PutKeyPolicy would be sent.
    #[arg(long)]
    pub pretty: bool,
    /// Merge as this controller instance: only its statements are changed, the other
    /// instances' are kept as they are (docs/fleet.md).
    #[arg(long, env = "MSF_CMK_INSTANCE_NAME", default_value = "default")]
    pub instance_name: InstanceName,
    /// Output format: text is the policy as JSON (compact, or --pretty), json indented, yaml.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct IamPolicyArgs {
    /// An application the controller manages (repeatable: one flag per application).
    #[arg(long = "application-arn", required_unless_present = "accounts_config")]
    pub application_arns: Vec<String>,
    /// A KMS key the applications use (repeatable: one flag per key).
    #[arg(long = "key-arn", required_unless_present = "accounts_config")]
    pub key_arns: Vec<String>,
    /// Without it the key policy statements hold the service principals' statements only.
    #[arg(long, conflicts_with = "accounts_config")]
    pub operator_role_arn: Option<String>,
    /// Per account of this accounts file (as for `run`): the operator's and key
    /// administrator's policies and trust policies, and the controller role's (docs/fleet.md).
    /// ARNs given with --application-arn / --key-arn go to their accounts; an account without
    /// any gets wildcards over its regions.
    #[arg(long, requires = "controller_role_arn")]
    pub accounts_config: Option<PathBuf>,
    /// With --accounts-config: the controller's own role (IRSA or EKS Pod Identity), which
    /// the accounts' roles trust.
    #[arg(long, requires = "accounts_config")]
    pub controller_role_arn: Option<String>,
    /// Output format: text and json print the documents as indented JSON, yaml as YAML.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(c: PolicyCommand) -> anyhow::Result<ExitCode> {
    match c {
        PolicyCommand::Simulate(a) => simulate(a),
        PolicyCommand::Check(a) => run_check(a),
        PolicyCommand::Merge(a) => run_merge(a),
    }
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadInput(msg.into()).into()
}

fn read_policy(path: &Path) -> anyhow::Result<PolicyDocument> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read policy file {}: {e}", path.display())))?;
    PolicyDocument::parse(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
}

fn simulate(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let doc = read_policy(&a.policy)?;
    let principal = Principal::parse_cli(&a.principal).map_err(bad)?;
    if a.action.trim().is_empty() || a.action.contains(char::is_whitespace) {
        return Err(bad(format!(
            "--action {:?} is not an action name",
            a.action
        )));
    }
    let mut given: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kv in &a.context {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(bad(format!("--context {kv:?}: expected KEY=VALUE")));
        };
        given
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.to_string());
    }
    // --context always wins over what the principal implies.
    let mut context = principal_keys(&principal);
    context.extend(given);
    let req = Request {
        principal,
        action: a.action,
        resource: a.resource,
        context,
        unknown: a.unknown.iter().map(|k| k.to_ascii_lowercase()).collect(),
    };
    let e = evaluate(&doc, &req);
    match a.output {
        Output::Text => print_simulation(&req, &e),
        structured => structured.print_doc(&e)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_simulation(req: &Request, e: &policy::Evaluation) {
    println!(
        "{}: {} {} on {}",
        e.decision, req.principal, req.action, req.resource
    );
    match e.decision {
        Decision::ImplicitDeny => println!("no statement allows it"),
        _ => println!("decided by: {}", e.statements.join(", ")),
    }
    if e.delegated_to_iam {
        println!(
            "delegated to IAM: {} names the caller's account, so an identity-based policy of \
             the caller could allow it (the key policy alone does not)",
            e.delegating_statements.join(", ")
        );
    }
    if !e.depends_on.is_empty() {
        println!(
            "depends on: {} (statements {})",
            e.depends_on.join(", "),
            e.conditional_statements.join(", ")
        );
    }
}

/// The global keys AWS derives from who is calling (IAM User Guide, "AWS global condition
/// context keys"): lower-cased, as evaluation expects.
fn principal_keys(p: &Principal) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        m.insert(k.to_string(), vec![v.to_string()]);
    };
    match p {
        Principal::Service(name) => {
            put("aws:principalisawsservice", "true");
            put("aws:principalservicename", name);
        }
        Principal::Aws(s) => {
            put("aws:principalisawsservice", "false");
            let arn = Arn::parse(s).ok();
            let account = arn.as_ref().map_or(s.as_str(), |a| a.account.as_str());
            put("aws:principalaccount", account);
            let (arn_value, kind) = match &arn {
                None => (format!("arn:aws:iam::{s}:root"), "Account"),
                Some(a) if a.resource == "root" => (s.clone(), "Account"),
                Some(a) if a.resource.starts_with("role/") => (s.clone(), "AssumedRole"),
                Some(a) if a.resource.starts_with("user/") => (s.clone(), "User"),
                Some(a) if a.resource.starts_with("assumed-role/") => {
                    // aws:PrincipalArn of a session is its role's ARN (without the role path,
                    // which the session ARN does not carry).
                    let role = a.resource.split('/').nth(1).unwrap_or_default();
                    let role_arn = format!("arn:{}:iam::{}:role/{role}", a.partition, a.account);
                    (role_arn, "AssumedRole")
                }
                Some(a) if a.resource.starts_with("federated-user/") => {
                    (s.clone(), "FederatedUser")
                }
                Some(_) => (s.clone(), "User"),
            };
            put("aws:principalarn", &arn_value);
            put("aws:principaltype", kind);
        }
    }
    m
}

fn run_check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let doc = read_policy(&a.policy)?;
    let reqs = MsfRequirements::for_application(&a.application_arn, &a.operator_role_arn)
        .map_err(|e| bad(e.to_string()))?;
    let key_arn = match a.key_arn {
        Some(k) => {
            Arn::parse_key(&k).map_err(|e| bad(e.to_string()))?;
            k
        }
        None => default_key_arn(&a.application_arn)?,
    };
    let report = check(&doc, &key_arn, &reqs);
    match a.output {
        structured @ (Output::Json | Output::Yaml) => structured.print_doc(&report)?,
        Output::Text => {
            let verdict = if report.compliant {
                "compliant"
            } else {
                "NOT compliant"
            };
            println!(
                "{}: {verdict} for {}",
                a.policy.display(),
                a.application_arn
            );
            for m in report.missing() {
                let why = match m.decision {
                    Decision::ExplicitDeny => format!("denied by {}", m.statements.join(", ")),
                    _ if !m.depends_on.is_empty() => format!(
                        "no statement allows it unless {} match",
                        m.depends_on.join(", ")
                    ),
                    _ => "no statement allows it".to_string(),
                };
                println!(
                    "  missing: {} {} ({why}; needed because {})",
                    m.principal, m.action, m.purpose
                );
            }
            for f in &report.findings {
                println!(
                    "  finding {} in statement {}: {}",
                    f.code, f.statement, f.message
                );
            }
        }
    }
    Ok(if report.compliant {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A stand-in key in the application's account and region.
fn default_key_arn(application_arn: &str) -> anyhow::Result<String> {
    let app = Arn::parse_application(application_arn).map_err(|e| bad(e.to_string()))?;
    Ok(format!(
        "arn:{}:kms:{}:{}:key/00000000-0000-0000-0000-000000000000",
        app.partition, app.region, app.account
    ))
}

fn run_merge(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let doc = read_policy(&a.policy)?;
    // Without changes, a merge still rewrites the Sids of an older release (docs/policy.md).
    let legacy =
        a.instance_name.is_default() && doc.statements().iter().any(|s| s.has_legacy_sid());
    if a.application_arns.is_empty() && a.remove_application_arns.is_empty() && !legacy {
        return Err(bad(
            "nothing to do: give --application-arn or --remove-application-arn",
        ));
    }
    let grants = match (&a.operator_role_arn, a.application_arns.is_empty()) {
        (_, true) => Vec::new(),
        (Some(role), false) => a
            .application_arns
            .iter()
            .map(|app| Grant {
                application_arn: app.clone(),
                operator_role_arn: role.clone(),
            })
            .collect(),
        (None, false) => return Err(bad("--application-arn needs --operator-role-arn")),
    };
    let merged = merge_for(&doc, &a.instance_name, &grants, &a.remove_application_arns).map_err(
        |e| match e {
            policy::merge::MergeError::Internal(_) => anyhow::Error::new(e),
            other => bad(other.to_string()),
        },
    )?;
    // merge refuses a result over the limit, measured on the compact form that is sent.
    let out = match a.output {
        Output::Text if a.pretty => merged.to_pretty_json(),
        Output::Text => merged.to_compact_json(),
        structured => {
            let doc: serde_json::Value = serde_json::from_str(&merged.to_compact_json())
                .context("re-reading the merged policy")?;
            structured.print_doc(&doc)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn run_iam_policy(a: IamPolicyArgs) -> anyhow::Result<ExitCode> {
    if let (Some(path), Some(hub)) = (&a.accounts_config, &a.controller_role_arn) {
        return crate::cli::iam_fleet_cmd::run(
            path,
            hub,
            &a.application_arns,
            &a.key_arns,
            a.output,
        );
    }
    for app in &a.application_arns {
        Arn::parse_application(app).map_err(|e| bad(e.to_string()))?;
    }
    for key in &a.key_arns {
        Arn::parse_key(key).map_err(|e| bad(e.to_string()))?;
    }
    let statements = match &a.operator_role_arn {
        Some(role) => {
            Arn::parse_role(role).map_err(|e| bad(e.to_string()))?;
            let grants: Vec<Grant> = a
                .application_arns
                .iter()
                .map(|app| Grant {
                    application_arn: app.clone(),
                    operator_role_arn: role.clone(),
                })
                .collect();
            iam::key_policy_statements(&grants)
        }
        None => iam::service_statements(&a.application_arns),
    };
    a.output.print_doc(&json!({
        "operatorIamPolicy": iam::operator_iam_policy(&a.application_arns, &a.key_arns),
        "keyPolicyStatements": statements,
    }))?;
    Ok(ExitCode::SUCCESS)
}
