//! Write fencing for leader election: no AWS write after this replica's lease may have passed
//! to another replica.
//!
//! Why: `kube-lease-manager` only logs when renewing the Lease fails, and keeps telling this
//! replica that it leads. A leader cut off from the API server would go on reconciling and
//! writing to AWS after the standby took over: two writers of one key policy, two restarts
//! of one application.
//!
//! How: the [`WriteFence`] knows the deadline of the Lease as the API server last showed it
//! to this replica (holder = us, `renewTime + leaseDurationSeconds`, minus a safety margin for
//! clock skew and for requests already on the wire). The deadline only moves forward on
//! evidence: a read of the Lease that names us ([`WriteFence::observe_lease`], fed by the
//! leader module's poller). Every AWS write asks [`WriteFence::permit`] first, in the write
//! path itself ([`FencedMsf`], [`FencedKms`] wrap the adapters, so the reconcile, the
//! finalizer's cleanup and anything added later are all covered), and a permitted write is
//! cut off (dropped, no SDK retry starts) when the deadline passes while it runs.
//!
//! The standby can take the Lease at `renewTime + leaseDurationSeconds` at the earliest (by
//! its own clock), so with the margin this replica stops writing before anyone else may start.
//! A request already sent cannot be recalled; the margin is what covers it.
//!
//! Time is an input of the pure parts (`*_at`); the clock is tokio's, so tests run on a paused
//! clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::aws::{AwsError, KmsApi, MsfApi};
use crate::domain::{
    ApplicationDescription, ApplicationOperation, ApplicationSummary, EncryptionUpdate,
    ErrorCategory, ObservedKey, UpdateAccepted,
};

/// The error code of a write refused by the fence (not an AWS code: nothing was sent).
pub const FENCED_CODE: &str = "LeaseNotRenewed";

/// What the fence knows about this replica's Lease, as last read from the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// Nothing read yet, or held by someone else, or gone: no write.
    NotHeld,
    /// Held by us; writes until this instant.
    HeldUntil(Instant),
}

#[derive(Debug)]
struct LeaseFence {
    identity: String,
    margin: Duration,
    state: watch::Sender<Lease>,
}

/// Consulted before every AWS write. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct WriteFence(Option<Arc<LeaseFence>>);

impl WriteFence {
    /// No leader election: this process is the only writer, every write is permitted.
    pub fn unfenced() -> Self {
        Self(None)
    }

    /// Leader election as `identity`: closed until a read of the Lease shows us as holder;
    /// then open until `renewTime + leaseDuration - margin`.
    pub fn for_lease(identity: &str, margin: Duration) -> Self {
        let (state, _) = watch::channel(Lease::NotHeld);
        Self(Some(Arc::new(LeaseFence {
            identity: identity.to_string(),
            margin,
            state,
        })))
    }

    /// Records a read of the Lease (holder, `renewTime`, `leaseDurationSeconds`).
    pub fn observe_lease(
        &self,
        holder: Option<&str>,
        renew_time: Option<SystemTime>,
        duration: Option<Duration>,
    ) {
        self.observe_lease_at(
            holder,
            renew_time,
            duration,
            SystemTime::now(),
            Instant::now(),
        );
    }

    /// [`Self::observe_lease`] at a given wall-clock and monotonic time. The deadline is
    /// converted to the monotonic clock at once, so a later wall-clock jump cannot extend it.
    pub fn observe_lease_at(
        &self,
        holder: Option<&str>,
        renew_time: Option<SystemTime>,
        duration: Option<Duration>,
        now_wall: SystemTime,
        now: Instant,
    ) {
        let Some(f) = &self.0 else { return };
        let next = match (holder, renew_time, duration) {
            (Some(h), Some(renewed), Some(d)) if h == f.identity => {
                // Remaining validity as of now; a renewTime in the future (clock skew) counts
                // as now, never as extra time.
                let expires = renewed.min(now_wall) + d;
                let left = expires
                    .duration_since(now_wall)
                    .unwrap_or(Duration::ZERO)
                    .saturating_sub(f.margin);
                Lease::HeldUntil(now + left)
            }
            _ => Lease::NotHeld,
        };
        f.state.send_if_modified(|cur| {
            // A stale read (an older renewTime of ours) must not shorten a known deadline, but
            // losing the holder always closes the fence.
            let merged = match (*cur, next) {
                (Lease::HeldUntil(a), Lease::HeldUntil(b)) => Lease::HeldUntil(a.max(b)),
                (_, n) => n,
            };
            let changed = merged != *cur;
            *cur = merged;
            changed
        });
    }

    /// Closes the fence now (the Lease is gone or we released it).
    pub fn revoke(&self) {
        if let Some(f) = &self.0 {
            f.state.send_if_modified(|cur| {
                let changed = *cur != Lease::NotHeld;
                *cur = Lease::NotHeld;
                changed
            });
        }
    }

    /// May a write start now? `Ok(None)`: unfenced; `Ok(Some(left))`: until `left` from now.
    pub fn permit(&self, operation: &'static str) -> Result<Option<Duration>, AwsError> {
        self.permit_at(operation, Instant::now())
    }

    pub fn permit_at(
        &self,
        operation: &'static str,
        now: Instant,
    ) -> Result<Option<Duration>, AwsError> {
        let Some(f) = &self.0 else { return Ok(None) };
        match *f.state.borrow() {
            Lease::HeldUntil(until) if until > now => Ok(Some(until - now)),
            Lease::HeldUntil(_) => Err(fenced(
                operation,
                "this replica's Lease was not renewed in time (it may already belong to another replica)",
            )),
            Lease::NotHeld => Err(fenced(operation, "this replica does not hold the Lease")),
        }
    }

    /// Whether a write would be permitted now.
    pub fn is_open(&self) -> bool {
        self.permit("check").is_ok()
    }

    /// Resolves once a write would be permitted (at once when unfenced).
    pub async fn opened(&self) {
        let Some(f) = &self.0 else { return };
        let mut rx = f.state.subscribe();
        loop {
            if let Lease::HeldUntil(until) = *rx.borrow_and_update()
                && until > Instant::now()
            {
                return;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `f`; unreachable, but never spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once writes stop being permitted: the deadline passed without a renewal
    /// being seen, or the Lease names someone else. Never resolves when unfenced.
    pub async fn closed(&self) {
        let Some(f) = &self.0 else {
            return std::future::pending().await;
        };
        let mut rx = f.state.subscribe();
        loop {
            let until = match *rx.borrow_and_update() {
                Lease::HeldUntil(until) if until > Instant::now() => until,
                _ => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                r = rx.changed() => {
                    if r.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Runs `write` if permitted, and cuts it off at the deadline: a write still running
    /// then is dropped, so no SDK retry starts after the deadline.
    async fn guard<T, Fut>(&self, operation: &'static str, write: Fut) -> Result<T, AwsError>
    where
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        let left = match self.permit(operation) {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!(operation, error = %e, "AWS write refused by the leader-election fence");
                return Err(e);
            }
        };
        let Some(left) = left else {
            return write.await;
        };
        match tokio::time::timeout(left, write).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    operation,
                    "AWS write cut off: the Lease deadline passed while it ran"
                );
                Err(fenced(
                    operation,
                    "the Lease deadline passed during the call; its effect is unknown and is re-read next time",
                ))
            }
        }
    }

    /// Wraps the MSF adapter so that its writes ask the fence first.
    pub fn msf(&self, inner: Arc<dyn MsfApi>) -> Arc<dyn MsfApi> {
        match self.0 {
            None => inner,
            Some(_) => Arc::new(FencedMsf {
                inner,
                fence: self.clone(),
            }),
        }
    }

    /// Wraps the KMS adapter so that its writes ask the fence first.
    pub fn kms(&self, inner: Arc<dyn KmsApi>) -> Arc<dyn KmsApi> {
        match self.0 {
            None => inner,
            Some(_) => Arc::new(FencedKms {
                inner,
                fence: self.clone(),
            }),
        }
    }
}

fn fenced(operation: &'static str, why: &str) -> AwsError {
    AwsError {
        // Transient: the reconcile backs off; by then the Lease is renewed or the controllers
        // of this replica are stopped.
        category: ErrorCategory::Transient,
        operation,
        code: FENCED_CODE.into(),
        message: format!("not sent: {why}"),
    }
}

/// MSF adapter whose write (`UpdateApplication`) is fenced; reads pass through.
pub struct FencedMsf {
    inner: Arc<dyn MsfApi>,
    fence: WriteFence,
}

#[async_trait]
impl MsfApi for FencedMsf {
    async fn describe_application_detail(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ApplicationDescription, AwsError> {
        self.inner
            .describe_application_detail(region, application_name)
            .await
    }

    async fn start_encryption_update(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<UpdateAccepted, AwsError> {
        self.fence
            .guard(
                "UpdateApplication",
                self.inner.start_encryption_update(update),
            )
            .await
    }

    async fn list_application_operations(
        &self,
        region: &str,
        application_name: &str,
        operation: &str,
    ) -> Result<Vec<ApplicationOperation>, AwsError> {
        self.inner
            .list_application_operations(region, application_name, operation)
            .await
    }

    async fn list_applications(&self, region: &str) -> Result<Vec<ApplicationSummary>, AwsError> {
        self.inner.list_applications(region).await
    }

    async fn describe_application_operation(
        &self,
        region: &str,
        application_name: &str,
        operation_id: &str,
    ) -> Result<ApplicationOperation, AwsError> {
        self.inner
            .describe_application_operation(region, application_name, operation_id)
            .await
    }
}

/// KMS adapter whose write (`PutKeyPolicy`) is fenced; reads pass through.
pub struct FencedKms {
    inner: Arc<dyn KmsApi>,
    fence: WriteFence,
}

#[async_trait]
impl KmsApi for FencedKms {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        self.inner.describe_key(region, key_id).await
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        self.inner.get_key_policy(region, key_arn).await
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        self.fence
            .guard(
                "PutKeyPolicy",
                self.inner.put_key_policy(region, key_arn, policy),
            )
            .await
    }

    async fn reserve_put_key_policy(&self, region: &str, key_arn: &str) {
        // Pacing only, no AWS call: not fenced.
        self.inner.reserve_put_key_policy(region, key_arn).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const ME: &str = "replica-a";
    const MARGIN: Duration = Duration::from_secs(2);
    const LEASE: Duration = Duration::from_secs(15);

    /// A fake clock: wall-clock and monotonic time that advance together, by hand.
    struct FakeClock {
        wall: SystemTime,
        mono: Instant,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                mono: Instant::now(),
            }
        }
        fn advance(&mut self, d: Duration) {
            self.wall += d;
            self.mono += d;
        }
        /// The Lease as a read at the current time shows it.
        fn read(&self, fence: &WriteFence, holder: Option<&str>, renewed: SystemTime) {
            fence.observe_lease_at(holder, Some(renewed), Some(LEASE), self.wall, self.mono);
        }
        fn permitted(&self, fence: &WriteFence) -> bool {
            fence.permit_at("PutKeyPolicy", self.mono).is_ok()
        }
    }

    #[test]
    fn unfenced_permits_every_write() {
        let f = WriteFence::unfenced();
        assert_eq!(f.permit("PutKeyPolicy"), Ok(None));
        assert!(f.is_open());
    }

    #[test]
    fn closed_until_a_read_names_us() {
        let mut clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, MARGIN);
        assert!(!clock.permitted(&f), "closed before any read of the Lease");
        clock.read(&f, Some("replica-b"), clock.wall);
        assert!(!clock.permitted(&f), "another holder");
        clock.read(&f, Some(ME), clock.wall);
        assert!(clock.permitted(&f));
        let e = f.permit_at("PutKeyPolicy", clock.mono + LEASE).unwrap_err();
        assert_eq!(e.code, FENCED_CODE);
        assert_eq!(e.category, ErrorCategory::Transient);
        clock.advance(Duration::from_secs(1));
        assert!(clock.permitted(&f));
    }

    #[test]
    fn deadline_is_last_renewal_plus_duration_minus_margin() {
        let mut clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, MARGIN);
        let renewed = clock.wall;
        // Read 1 s after the renewal: the deadline still counts from the renewal.
        clock.advance(Duration::from_secs(1));
        clock.read(&f, Some(ME), renewed);
        let left = f.permit_at("PutKeyPolicy", clock.mono).unwrap().unwrap();
        assert_eq!(left, LEASE - MARGIN - Duration::from_secs(1));
        clock.advance(left - Duration::from_millis(1));
        assert!(clock.permitted(&f), "1 ms before the deadline");
        clock.advance(Duration::from_millis(1));
        assert!(!clock.permitted(&f), "at the deadline");
        // The API server is unreachable: no read, the fence stays closed however long.
        clock.advance(Duration::from_secs(600));
        assert!(!clock.permitted(&f));
        // A renewal seen again reopens it.
        clock.read(&f, Some(ME), clock.wall);
        assert!(clock.permitted(&f));
    }

    #[test]
    fn renewals_extend_and_stale_reads_do_not_shorten() {
        let mut clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, MARGIN);
        let first = clock.wall;
        clock.read(&f, Some(ME), first);
        clock.advance(Duration::from_secs(10));
        let second = clock.wall;
        clock.read(&f, Some(ME), second);
        clock.advance(Duration::from_secs(10));
        assert!(clock.permitted(&f), "extended by the second renewal");
        // A read that still shows the first renewal (a lagging cache) changes nothing.
        clock.read(&f, Some(ME), first);
        assert!(clock.permitted(&f));
        clock.advance(Duration::from_secs(3));
        assert!(
            !clock.permitted(&f),
            "second renewal + 15 s - 2 s has passed"
        );
    }

    #[test]
    fn another_holder_closes_at_once() {
        let clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, MARGIN);
        clock.read(&f, Some(ME), clock.wall);
        assert!(clock.permitted(&f));
        clock.read(&f, Some("replica-b"), clock.wall);
        assert!(!clock.permitted(&f));
        clock.read(&f, Some(ME), clock.wall);
        f.revoke();
        assert!(!clock.permitted(&f), "revoked");
        clock.read(&f, None, clock.wall);
        assert!(!clock.permitted(&f), "released Lease");
    }

    #[test]
    fn a_renewal_time_in_the_future_counts_as_now() {
        let clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, MARGIN);
        clock.read(&f, Some(ME), clock.wall + Duration::from_secs(3600));
        let left = f.permit_at("PutKeyPolicy", clock.mono).unwrap().unwrap();
        assert_eq!(left, LEASE - MARGIN);
    }

    #[test]
    fn a_margin_longer_than_the_lease_never_opens() {
        let clock = FakeClock::new();
        let f = WriteFence::for_lease(ME, Duration::from_secs(60));
        clock.read(&f, Some(ME), clock.wall);
        assert!(!clock.permitted(&f));
    }

    #[derive(Default)]
    struct CountingKms {
        puts: AtomicU32,
        delay: Duration,
    }

    #[async_trait]
    impl KmsApi for CountingKms {
        async fn describe_key(&self, _: &str, _: &str) -> Result<ObservedKey, AwsError> {
            Err(fenced("DescribeKey", "not used"))
        }
        async fn get_key_policy(&self, _: &str, _: &str) -> Result<String, AwsError> {
            Ok("{}".into())
        }
        async fn put_key_policy(&self, _: &str, _: &str, _: &str) -> Result<(), AwsError> {
            tokio::time::sleep(self.delay).await;
            self.puts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// The Lease, read now, renewed now, valid for `left` + margin.
    fn held_for(left: Duration) -> WriteFence {
        let f = WriteFence::for_lease(ME, MARGIN);
        f.observe_lease(Some(ME), Some(SystemTime::now()), Some(left + MARGIN));
        f
    }

    #[tokio::test]
    async fn the_write_path_asks_the_fence_and_reads_pass() {
        let inner = Arc::new(CountingKms::default());
        let f = held_for(Duration::from_secs(30));
        let kms = f.kms(inner.clone());
        kms.put_key_policy("us-east-1", "k", "{}").await.unwrap();
        assert_eq!(inner.puts.load(Ordering::SeqCst), 1);
        f.revoke();
        let e = kms
            .put_key_policy("us-east-1", "k", "{}")
            .await
            .unwrap_err();
        assert_eq!(
            (e.operation, e.code.as_str()),
            ("PutKeyPolicy", FENCED_CODE)
        );
        assert_eq!(inner.puts.load(Ordering::SeqCst), 1, "nothing was sent");
        assert_eq!(kms.get_key_policy("us-east-1", "k").await.unwrap(), "{}");
    }

    /// MSF whose only write counts its calls and answers an error of its own.
    #[derive(Default)]
    struct CountingMsf {
        updates: AtomicU32,
    }

    fn inner_error(operation: &'static str) -> AwsError {
        AwsError {
            category: ErrorCategory::Terminal,
            operation,
            code: "FromInner".into(),
            message: "reached the adapter".into(),
        }
    }

    #[async_trait]
    impl MsfApi for CountingMsf {
        async fn describe_application_detail(
            &self,
            _: &str,
            _: &str,
        ) -> Result<ApplicationDescription, AwsError> {
            Err(inner_error("DescribeApplication"))
        }
        async fn start_encryption_update(
            &self,
            _: &EncryptionUpdate,
        ) -> Result<UpdateAccepted, AwsError> {
            self.updates.fetch_add(1, Ordering::SeqCst);
            Err(inner_error("UpdateApplication"))
        }
        async fn list_application_operations(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Vec<ApplicationOperation>, AwsError> {
            Ok(vec![])
        }
        async fn list_applications(&self, _: &str) -> Result<Vec<ApplicationSummary>, AwsError> {
            Ok(vec![])
        }
        async fn describe_application_operation(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<ApplicationOperation, AwsError> {
            Err(inner_error("DescribeApplicationOperation"))
        }
    }

    #[tokio::test]
    async fn update_application_is_fenced_through_every_entry_point() {
        let inner = Arc::new(CountingMsf::default());
        let f = held_for(Duration::from_secs(30));
        let msf = f.msf(inner.clone());
        let update = EncryptionUpdate {
            region: "us-east-1".into(),
            application_name: "app".into(),
            current_version_id: 1,
            conditional_token: None,
            key_type: crate::domain::AppliedKeyType::AwsOwnedKey,
            key_id: None,
        };
        let e = msf
            .update_application_encryption(&update)
            .await
            .unwrap_err();
        assert_eq!(e.code, "FromInner", "open: the call reaches the adapter");
        f.revoke();
        for e in [
            msf.update_application_encryption(&update)
                .await
                .unwrap_err(),
            msf.start_encryption_update(&update).await.unwrap_err(),
        ] {
            assert_eq!(e.code, FENCED_CODE);
        }
        assert_eq!(
            inner.updates.load(Ordering::SeqCst),
            1,
            "nothing more was sent"
        );
        // Reads are never fenced.
        let e = msf
            .describe_application("us-east-1", "app")
            .await
            .unwrap_err();
        assert_eq!(e.code, "FromInner");
    }

    #[tokio::test]
    async fn a_write_still_running_at_the_deadline_is_cut_off() {
        let inner = Arc::new(CountingKms {
            delay: Duration::from_secs(30),
            ..Default::default()
        });
        let f = held_for(Duration::from_millis(200));
        let kms = f.kms(inner.clone());
        let start = std::time::Instant::now();
        let e = kms
            .put_key_policy("us-east-1", "k", "{}")
            .await
            .unwrap_err();
        assert_eq!(e.code, FENCED_CODE);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(inner.puts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn closed_resolves_at_the_deadline_and_opened_on_a_renewal() {
        let f = held_for(Duration::from_millis(300));
        assert!(f.is_open());
        let start = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), f.closed())
            .await
            .expect("closed() at the deadline");
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert!(!f.is_open());
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.opened().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        f.observe_lease(Some(ME), Some(SystemTime::now()), Some(LEASE));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("opened() after the renewal")
            .unwrap();
        // An unfenced process is always open and never closes.
        WriteFence::unfenced().opened().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), WriteFence::unfenced().closed())
                .await
                .is_err()
        );
    }
}
