//! Leader election must fence (issue 9, item 8), on a real kube-apiserver.
//!
//! Replica `a` reaches the API server only through a TCP proxy the test controls
//! (`support::proxy`); replica `b` connects directly. Both talk to the scenario's emulator with
//! their own access key id, so the emulator's call log tells their AWS calls apart.
//!
//! `a` leads and converges two resources. The test then cuts `a` off the API server:
//! `kube-lease-manager` keeps telling `a` it leads (it only logs failed renewals), so without
//! the fence `a` would go on reconciling. `b` takes the Lease over; then drift is made in AWS
//! (the key policy stripped of MSF's statements, one application switched back to the AWS
//! owned key), which `a`'s 2 s resync would repair with PutKeyPolicy and UpdateApplication.
//! `b` is given a long resync so that it does not repair the drift first (it would take away
//! `a`'s reason to write). The assertion: `a` makes **zero** AWS writes after its deadline
//! (last renewal + lease duration - margin, bounded above by partition time + lease duration -
//! margin), none after `b` took over, and reports itself on standby.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use msf_cmk_controller::domain::{AppliedEncryption, AppliedKeyType};
use msf_cmk_controller::emulator::CallRecord;
use support::cluster::{CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT};
use support::controller::http_get;
use support::proxy::TcpProxy;
use support::scenario::{Replica, Scenario, appenc};

/// The Lease of this scenario: `a` renews every 4 s (grace 2 s) and fences its writes 1 s
/// before the Lease could expire (margin = grace / 2).
const LEASE: Duration = Duration::from_secs(6);
const MARGIN: Duration = Duration::from_secs(1);
const KEY_A: &str = "AKIDFENCELEADERA";
const KEY_B: &str = "AKIDFENCESTANDBYB";
/// How long `a` is watched after the drift: an unfenced `a` (2 s resync, then backoff 5, 10,
/// 20 s as its status patches fail) would have written within this window.
const WATCH: Duration = Duration::from_secs(40);

const WRITES: [&str; 2] = ["PutKeyPolicy", "UpdateApplication"];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The emulator's call log through its admin API (`GET /_emulator/calls?since=0`), the
/// interface other tools use.
fn call_log(s: &Scenario) -> Vec<CallRecord> {
    let (status, body) =
        http_get(s.emu.addr(), "/_emulator/calls?since=0").expect("GET /_emulator/calls answered");
    assert_eq!(status, 200, "GET /_emulator/calls: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("call log JSON");
    serde_json::from_value(v["calls"].clone()).expect("call records")
}

fn writes_by<'a>(calls: &'a [CallRecord], access_key: &str) -> Vec<&'a CallRecord> {
    calls
        .iter()
        .filter(|c| c.access_key_id == access_key && WRITES.contains(&c.operation.as_str()))
        .collect()
}

fn describe(calls: &[&CallRecord]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "#{} {} {} {:?} {} at {}",
                c.seq, c.access_key_id, c.operation, c.target, c.outcome, c.time_ms
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The controller's ServiceAccount kubeconfig with its server replaced by the proxy.
fn proxied_kubeconfig(s: &Scenario, proxy: &TcpProxy) -> std::path::PathBuf {
    let direct = s
        .cluster()
        .service_account_kubeconfig(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT);
    let text = std::fs::read_to_string(&direct).expect("read the ServiceAccount kubeconfig");
    let server = s.cluster().server_url();
    assert!(text.contains(server), "kubeconfig names {server}:\n{text}");
    s.write_file(
        "replica-a-via-proxy.kubeconfig",
        &text.replace(server, &proxy.url()),
    )
}

#[test]
fn a_partitioned_leader_makes_no_aws_write_after_its_deadline() {
    let started = Instant::now();
    let mut s = Scenario::shared("fencing");
    let ns = s.namespace("fencing");
    let key = s.key();
    let apps = ["fence-app-1", "fence-app-2"];
    for app in apps {
        s.application(app);
    }
    let upstream: SocketAddr = s
        .cluster()
        .server_url()
        .trim_start_matches("https://")
        .parse()
        .expect("API server address");
    let proxy = TcpProxy::start(upstream);
    let kubeconfig = proxied_kubeconfig(&s, &proxy);
    let lease = format!("{}s", LEASE.as_secs());

    let a = s.start_replica(
        Replica::new("a")
            .leader_election()
            .env("MSF_CMK_LEASE_DURATION", &lease)
            .env("KUBECONFIG", &kubeconfig.display().to_string())
            .env("AWS_ACCESS_KEY_ID", KEY_A),
    );
    s.wait(
        "replica a to hold the Lease",
        Duration::from_secs(30),
        |s| match s.lease_holder() {
            Some(h) if h.ends_with("-a") => Ok(()),
            other => Err(format!("holder {other:?}")),
        },
    );
    let b = s.start_replica(
        Replica::new("b")
            .leader_election()
            .env("MSF_CMK_LEASE_DURATION", &lease)
            .env("MSF_CMK_RESYNC_PERIOD", "120s")
            .env("AWS_ACCESS_KEY_ID", KEY_B),
    );
    for (i, app) in apps.iter().enumerate() {
        s.apply(&ns, &appenc(&format!("fence-{i}"), app, Some(&key), ""));
    }
    for i in 0..apps.len() {
        s.wait_converged(&ns, &format!("fence-{i}"));
    }
    let before = call_log(&s);
    assert!(
        !writes_by(&before, KEY_A).is_empty(),
        "the leader a made the writes of the first convergence"
    );
    assert_eq!(
        writes_by(&before, KEY_B).len(),
        0,
        "the standby wrote:\n{}",
        describe(&writes_by(&before, KEY_B))
    );

    // Cut a off the API server. Its last renewal was at most now, so its deadline is at most
    // partitioned + LEASE - MARGIN.
    let partitioned_ms = now_ms();
    proxy.partition();
    let deadline_bound_ms = partitioned_ms + (LEASE - MARGIN).as_millis() as u64;
    s.wait("replica b to take the Lease", LEASE * 4, |s| {
        match s.lease_holder() {
            Some(h) if h.ends_with("-b") => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    });
    let takeover_ms = now_ms();
    eprintln!(
        "takeover {} ms after the partition (lease {LEASE:?})",
        takeover_ms - partitioned_ms
    );
    // b's first reconciles after taking over (reads under b's key): only then is the drift
    // made, so that b, with its long resync, leaves it for a to (not) repair.
    s.wait(
        "replica b to read both applications",
        Duration::from_secs(30),
        |s| {
            let read: Vec<_> = call_log(s)
                .into_iter()
                .filter(|c| {
                    c.access_key_id == KEY_B
                        && c.operation == "DescribeApplication"
                        && c.time_ms >= takeover_ms.saturating_sub(2_000)
                })
                .filter_map(|c| c.target)
                .collect();
            if apps.iter().all(|a| read.iter().any(|t| t == a)) {
                Ok(())
            } else {
                Err(format!("b read {read:?}"))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let drift_ms = now_ms();
    s.emu
        .put_key_policy_direct(&key, &default_key_policy(s.emu.account_id()))
        .expect("strip MSF's statements from the key policy");
    s.emu
        .set_application_encryption(
            support::scenario::REGION,
            apps[1],
            AppliedEncryption {
                key_type: AppliedKeyType::AwsOwnedKey,
                key_id: None,
            },
        )
        .expect("switch one application back to the AWS owned key");

    std::thread::sleep(WATCH);
    let calls = call_log(&s);
    let late: Vec<&CallRecord> = writes_by(&calls, KEY_A)
        .into_iter()
        .filter(|c| c.time_ms > deadline_bound_ms)
        .collect();
    let a_reads_after_drift = calls
        .iter()
        .filter(|c| c.access_key_id == KEY_A && c.time_ms > drift_ms)
        .count();
    eprintln!(
        "after the partition: a made {} AWS calls after the drift, {} writes after its deadline; the proxy refused {} connections",
        a_reads_after_drift,
        late.len(),
        proxy.refused()
    );
    assert!(
        late.is_empty(),
        "the partitioned leader a wrote to AWS after its deadline ({} ms after the partition; b took over {} ms after it):\n{}",
        deadline_bound_ms - partitioned_ms,
        takeover_ms - partitioned_ms,
        describe(&late)
    );
    assert!(
        proxy.refused() > 0,
        "a never tried to reach the API server while partitioned"
    );
    assert!(
        !s.log_lines(a, "AWS writes fenced").is_empty(),
        "a did not log that it fenced its writes"
    );
    assert!(
        s.http_get(a, "/readyz")
            .is_some_and(|(_, body)| body.contains("standby")),
        "a /readyz: {:?}",
        s.http_get(a, "/readyz")
    );
    assert!(
        s.http_get(b, "/readyz")
            .is_some_and(|(_, body)| body.contains("leader")),
        "b /readyz: {:?}",
        s.http_get(b, "/readyz")
    );

    // The new leader acts on a change: application 1 (still on the CMK) back to the AWS owned
    // key, one UpdateApplication made by b.
    proxy.heal();
    s.apply(&ns, &appenc("fence-0", apps[0], None, ""));
    s.wait_converged(&ns, "fence-0");
    let calls = call_log(&s);
    assert!(
        !writes_by(&calls, KEY_B).is_empty(),
        "the new leader b made no write"
    );
    assert!(
        writes_by(&calls, KEY_A)
            .iter()
            .all(|c| c.time_ms <= deadline_bound_ms),
        "a wrote after healing:\n{}",
        describe(&writes_by(&calls, KEY_A))
    );
    s.assert_no_panic();
    proxy.shutdown();
    eprintln!("fencing scenario took {:?}", started.elapsed());
}

/// KMS's default key policy: the account root only, none of MSF's statements.
fn default_key_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}
