//! The call log: one record per AWS request the emulator answered, in arrival order, for
//! checks made from outside the controller (e.g. "the fenced leader made zero writes after
//! losing its lease": two processes are told apart by their access key id).
//!
//! Bounded: only the last [`CALL_LOG_CAPACITY`] records are kept; sequence numbers keep
//! counting, so `?since=SEQ` still works after old records were dropped.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many records the log keeps.
pub const CALL_LOG_CAPACITY: usize = 100_000;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// 1, 2, 3...: never reused, not even after a clear.
    pub seq: u64,
    /// When the request arrived, in milliseconds since the Unix epoch: the moment the caller
    /// acted (a fenced writer's request counts from here, however long the answer took).
    pub time_ms: u64,
    /// When the answer was ready (after injected latency), in milliseconds since the epoch.
    pub answered_ms: u64,
    /// The operation (`UpdateApplication`, `PutKeyPolicy`, `GetCallerIdentity`, `Unknown`).
    pub operation: String,
    pub region: String,
    pub account: String,
    /// From the SigV4 `Authorization` header's `Credential=`; empty when unsigned.
    pub access_key_id: String,
    /// The identity the emulator answered as (see `GET /_emulator/config`).
    pub caller_arn: String,
    /// The application name or key id the request names, as sent, when it names one.
    pub target: Option<String>,
    /// `ok` or the error code returned.
    pub outcome: String,
}

/// What the server knows of a call before it is answered.
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    /// Arrival, in milliseconds since the Unix epoch.
    pub received_ms: u64,
    pub operation: String,
    pub region: String,
    pub account: String,
    pub access_key_id: String,
    pub caller_arn: String,
    pub target: Option<String>,
}

pub struct CallLog {
    records: VecDeque<CallRecord>,
    next_seq: u64,
    capacity: usize,
}

impl Default for CallLog {
    fn default() -> Self {
        Self::with_capacity(CALL_LOG_CAPACITY)
    }
}

impl CallLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: VecDeque::new(),
            next_seq: 1,
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, info: CallInfo, outcome: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        let CallInfo {
            received_ms,
            operation,
            region,
            account,
            access_key_id,
            caller_arn,
            target,
        } = info;
        self.records.push_back(CallRecord {
            seq,
            time_ms: received_ms,
            answered_ms: now_ms(),
            operation,
            region,
            account,
            access_key_id,
            caller_arn,
            target,
            outcome: outcome.to_string(),
        });
        seq
    }

    /// Records with a sequence number greater than `since` (0 = all kept).
    pub fn since(&self, since: u64) -> Vec<CallRecord> {
        // Records are in sequence order: skip the older ones without scanning them all.
        let start = self.records.partition_point(|r| r.seq <= since);
        self.records.range(start..).cloned().collect()
    }

    /// Forgets every record; sequence numbers go on from where they were.
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// The sequence number of the last record written (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The access key id of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/kms/aws4_request, ...`.
pub fn access_key_from_authorization(header: &str) -> Option<&str> {
    let cred = header.split("Credential=").nth(1)?;
    let akid = cred.split('/').next()?;
    (!akid.is_empty() && !akid.contains([',', ' '])).then_some(akid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(op: &str) -> CallInfo {
        CallInfo {
            operation: op.into(),
            ..CallInfo::default()
        }
    }

    #[test]
    fn bounded_and_since() {
        let mut log = CallLog::with_capacity(3);
        for op in ["A", "B", "C", "D"] {
            log.push(info(op), "ok");
        }
        let all = log.since(0);
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(log.since(3).len(), 1);
        log.clear();
        assert!(log.since(0).is_empty());
        assert_eq!(log.push(info("E"), "ThrottlingException"), 5);
        assert_eq!(log.last_seq(), 5);
    }

    #[test]
    fn access_key() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDLEADER/20240101/eu-west-1/kms/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(access_key_from_authorization(h), Some("AKIDLEADER"));
        assert_eq!(access_key_from_authorization("Bearer x"), None);
    }
}
