//! Client-side pacing per AWS operation, adaptive (AIMD), so that a thousand resources
//! reconciling at once neither throttle the account (throttling there also hurts every other
//! client of the account) nor crawl at a guessed constant.
//!
//! Per account, region and operation ([`Aimd`]): a token bucket holding one second of its
//! rate, whose rate starts at a configured start, is halved when AWS answers a throttling
//! error (`ThrottlingException`, `RequestLimitExceeded`, HTTP 429, ... see
//! [`super::classify::is_throttling`]), grows additively (about 1/20 of the ceiling per second)
//! while calls are waiting for it, and never exceeds a configured ceiling. KMS starts at half
//! of its documented per-account quotas (DescribeKey 2,000/s, GetKeyPolicy 1,000/s,
//! PutKeyPolicy 15/s: every caller of the account shares them) and stops at 80 %; MSF documents
//! no control-plane quota, so its start and ceiling are settings (`--aws-rate-start`,
//! `--aws-rate-ceiling`). `LimitExceededException` is not a rate signal: from KMS it is an
//! oversize policy, from MSF a resource count (see `classify.rs`).
//!
//! One set of lanes ([`AccountLimiters`]) serves every client of one account: the accounts
//! file's client sets of one account (operator, key administrator, several roles) share it.
//! The pod's own clients have their own set. `PutKeyPolicy` keeps a second, fixed per-key
//! limiter (governor) because KMS also throttles "hot" keys below the account quota.
//!
//! Why not the SDK's `RetryConfig::adaptive()`: it is a CUBIC token bucket too, but (read from
//! aws-smithy-runtime 1.16) it is keyed by retry partition, i.e. one bucket per *service and
//! region* in a process-wide map, shared by every account's clients and every operation: a
//! throttled PutKeyPolicy (15/s) would slow DescribeKey (2,000/s) and another account's calls.
//! It stays off until the first throttle (no start rate), has no ceiling, and exposes no rate
//! to report as a metric. So the pacing is ours, and the SDK keeps what it does well: the
//! standard retry mode (jittered backoff, retry quota) for transient errors (5xx, timeouts).
//! Throttled attempts of a paced call are retried by [`AccountLimiters::send`] instead, each
//! through the lane again, so a retry goes at the halved rate; the SDK is told not to retry
//! them (a per-call retry classifier, `classify::NoRetryOnThrottle`). The lanes see every
//! attempt's answer through a per-call interceptor ([`Paced::observer`]). Calls queued in a
//! lane when it is halved queue again at the new rate ([`AccountLimiters::pace`]).

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use super::classify::{is_throttling, sdk_error_is_throttling};

/// The slowest a lane goes, however often it is throttled (the SDK's adaptive mode uses the same).
pub const FLOOR_PER_SECOND: f64 = 0.5;

/// Start and ceiling of one operation, requests per second per account and region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub start: f64,
    pub ceiling: f64,
}

/// The operations the controller paces, by service, with their defaults (start, ceiling).
/// KMS: half and 80 % of the documented quota; MSF: no documented quota, so a high start that
/// the first throttles halve (see [`MSF_DEFAULT`]).
pub const OPERATIONS: &[(&str, &str, Rate)] = &[
    ("msf", "DescribeApplication", MSF_DEFAULT),
    ("msf", "UpdateApplication", MSF_DEFAULT),
    ("msf", "ListApplicationOperations", MSF_DEFAULT),
    ("msf", "DescribeApplicationOperation", MSF_DEFAULT),
    ("msf", "ListApplications", MSF_DEFAULT),
    ("kms", "DescribeKey", rate(1_000.0, 1_600.0)),
    ("kms", "GetKeyPolicy", rate(500.0, 800.0)),
    ("kms", "PutKeyPolicy", rate(7.5, 12.0)),
];

/// MSF documents no control-plane request quota. A guessed low start is what made `apply` slower
/// than a sequential script (issue 10: 5/s, then 25/s, against no documented limit), so MSF
/// starts high, as the SDK's adaptive mode does (no limit before the first throttle), but with a
/// ceiling: five halvings take 400/s down to 12.5/s, each after one round trip of throttles.
pub const MSF_DEFAULT: Rate = rate(400.0, 2_000.0);

const fn rate(start: f64, ceiling: f64) -> Rate {
    Rate { start, ceiling }
}

/// Client-side pacing: start and ceiling per operation (an operation not listed is not paced)
/// and the per-key PutKeyPolicy limit (`None` = none).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    pub rates: BTreeMap<&'static str, Rate>,
    /// Writes to one key's policy per second; KMS throttles hot keys below the account quota.
    pub put_key_policy_per_key: Option<NonZeroU32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            rates: OPERATIONS.iter().map(|(_, op, r)| (*op, *r)).collect(),
            put_key_policy_per_key: NonZeroU32::new(1),
        }
    }
}

/// One `--aws-rate-start` / `--aws-rate-ceiling` value: `OPERATION=N`, or `msf=N` / `kms=N`
/// for every operation of the service.
#[derive(Clone, Debug, PartialEq)]
pub struct RateSetting {
    pub target: String,
    pub per_second: f64,
}

impl std::str::FromStr for RateSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (target, n) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected OPERATION=N or msf=N / kms=N"))?;
        let per_second: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a number of requests per second"))?;
        if !per_second.is_finite() || per_second < FLOOR_PER_SECOND {
            return Err(format!(
                "{s:?}: the rate must be at least {FLOOR_PER_SECOND} requests per second"
            ));
        }
        let target = target.trim().to_string();
        operations_of(&target)?;
        Ok(Self { target, per_second })
    }
}

/// The operations a setting names (case-insensitive): a service's, or one.
fn operations_of(target: &str) -> Result<Vec<&'static str>, String> {
    let ops: Vec<&'static str> = OPERATIONS
        .iter()
        .filter(|(svc, op, _)| svc.eq_ignore_ascii_case(target) || op.eq_ignore_ascii_case(target))
        .map(|(_, op, _)| *op)
        .collect();
    if ops.is_empty() {
        let known: Vec<&str> = OPERATIONS.iter().map(|(_, op, _)| *op).collect();
        return Err(format!(
            "unknown operation {target:?} (msf, kms, or one of {})",
            known.join(", ")
        ));
    }
    Ok(ops)
}

impl RateLimits {
    /// No client-side limit at all: for benchmarks and tests of the server side.
    pub fn unlimited() -> Self {
        Self {
            rates: BTreeMap::new(),
            put_key_policy_per_key: None,
        }
    }

    /// `operation` paced from `start` up to `ceiling` (tests, benchmarks).
    pub fn with(mut self, operation: &'static str, start: f64, ceiling: f64) -> Self {
        self.rates
            .insert(operation, rate(start.min(ceiling), ceiling));
        self
    }

    /// The defaults with the flags' settings: service-wide values first, then per operation. A
    /// start above the ceiling is refused when both were given, else the start is lowered to
    /// the ceiling.
    pub fn configured(start: &[RateSetting], ceiling: &[RateSetting]) -> Result<Self, String> {
        let mut limits = Self::default();
        let explicit_start = ordered(start)?;
        for (op, n) in ordered(ceiling)? {
            limits.rates.entry(op).and_modify(|r| r.ceiling = n);
        }
        for (op, n) in &explicit_start {
            limits.rates.entry(op).and_modify(|r| r.start = *n);
        }
        for (op, r) in &mut limits.rates {
            if r.start > r.ceiling {
                if explicit_start.contains_key(op) && ceiling.iter().any(|c| names(c, op)) {
                    return Err(format!(
                        "--aws-rate-start {op}={} is above --aws-rate-ceiling {op}={}",
                        r.start, r.ceiling
                    ));
                }
                r.start = r.ceiling;
            }
        }
        Ok(limits)
    }
}

fn names(setting: &RateSetting, op: &str) -> bool {
    operations_of(&setting.target).is_ok_and(|ops| ops.contains(&op))
}

/// Settings applied service-wide first, then the ones naming one operation.
fn ordered(settings: &[RateSetting]) -> Result<BTreeMap<&'static str, f64>, String> {
    let mut out = BTreeMap::new();
    let (service_wide, single): (Vec<_>, Vec<_>) = settings.iter().partition(|s| {
        OPERATIONS
            .iter()
            .any(|(svc, _, _)| svc.eq_ignore_ascii_case(&s.target))
    });
    for s in service_wide.into_iter().chain(single) {
        for op in operations_of(&s.target)? {
            out.insert(op, s.per_second);
        }
    }
    Ok(out)
}

/// One lane: the pace of one operation in one account and region. Pure: time is an input.
#[derive(Clone, Debug)]
pub struct Aimd {
    rate: f64,
    ceiling: f64,
    /// Added per second of calls that waited for the lane (additive increase).
    step: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Bumped by every decrease: throttles of calls reserved before it do not halve again
    /// (they were sent at the old rate).
    epoch: u64,
}

/// What a reservation returns: how long to wait, and what the feedback needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub wait: Duration,
    pub epoch: u64,
    /// The lane was the limit (the call waited, or the bucket is now empty): only then does a
    /// success raise the rate, so an idle lane does not drift up to its ceiling.
    pub binding: bool,
}

impl Aimd {
    pub fn new(r: Rate) -> Self {
        let ceiling = r.ceiling.max(FLOOR_PER_SECOND);
        let rate = r.start.clamp(FLOOR_PER_SECOND, ceiling);
        Self {
            rate,
            ceiling,
            step: (ceiling / 20.0).max(FLOOR_PER_SECOND),
            tokens: rate.max(1.0),
            last: None,
            epoch: 0,
        }
    }

    /// The rate now allowed, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Reserves a slot for one call at `now`. Calls queue in the bucket's debt, so waits are
    /// handed out in order.
    pub fn reserve(&mut self, now: Instant) -> Ticket {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.tokens -= 1.0;
        let wait = if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        };
        Ticket {
            wait,
            epoch: self.epoch,
            binding: self.tokens < 1.0,
        }
    }

    /// AWS throttled a call reserved under `epoch`: halve (once per epoch), down to the floor,
    /// and start the bucket empty (AWS just said it has no room). Calls still queued at the old
    /// rate queue again ([`AccountLimiters::pace`]), so their debt is forgiven.
    pub fn throttled(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.rate = (self.rate / 2.0).max(FLOOR_PER_SECOND);
        self.tokens = 0.0;
        self.epoch += 1;
        true
    }

    /// A call reserved under `epoch` succeeded: a binding lane grows by `step / rate` (about
    /// `step` per second). A call sent before the last decrease says nothing about the new rate.
    pub fn succeeded(&mut self, epoch: u64, binding: bool) {
        if binding && epoch == self.epoch {
            self.rate = (self.rate + self.step / self.rate).min(self.ceiling);
        }
    }
}

type Lane = Arc<Mutex<Aimd>>;

/// One keyed fixed-rate limiter (the per-key PutKeyPolicy limit); `None` when unlimited.
#[derive(Clone)]
pub(crate) struct Limiter(Option<Arc<DefaultKeyedRateLimiter<String>>>);

impl Limiter {
    pub(crate) fn new(per_second: Option<NonZeroU32>) -> Self {
        Self(per_second.map(|r| Arc::new(RateLimiter::keyed(Quota::per_second(r)))))
    }

    /// Waits until one more request for `key` is allowed.
    pub(crate) async fn wait(&self, key: &str) {
        if let Some(l) = &self.0 {
            l.until_key_ready(&key.to_string()).await;
            // Forget keys that have been idle long enough to be back at full burst,
            // so the per-key map does not grow with every key ever touched.
            if l.len() > 1024 {
                l.retain_recent();
            }
        }
    }
}

/// Every lane of one AWS account (per region and operation inside): clones share them.
#[derive(Clone)]
pub struct AccountLimiters {
    rates: Arc<BTreeMap<&'static str, Rate>>,
    lanes: Arc<Mutex<HashMap<(String, &'static str), Lane>>>,
    pub(crate) put_key_policy_per_key: Limiter,
}

impl fmt::Debug for AccountLimiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLimiters")
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}

impl AccountLimiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            rates: Arc::new(limits.rates.clone()),
            lanes: Arc::default(),
            put_key_policy_per_key: Limiter::new(limits.put_key_policy_per_key),
        }
    }

    fn lane(&self, region: &str, operation: &'static str) -> Option<Lane> {
        let r = *self.rates.get(operation)?;
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            lanes
                .entry((region.to_string(), operation))
                .or_insert_with(|| Arc::new(Mutex::new(Aimd::new(r))))
                .clone(),
        )
    }

    /// Waits for `operation`'s lane in `region`; the result feeds AWS's answer back.
    pub(crate) async fn pace(&self, region: &str, operation: &'static str) -> Paced {
        let Some(lane) = self.lane(region, operation) else {
            return Paced(None);
        };
        loop {
            let ticket = lock(&lane).reserve(Instant::now());
            if ticket.wait.is_zero() {
                return Paced(Some((lane, ticket)));
            }
            tokio::time::sleep(ticket.wait).await;
            // Halved while this call queued: its place was given at the old rate, so it
            // queues again at the new one (the halving forgave the queue's debt).
            if lock(&lane).epoch == ticket.epoch {
                return Paced(Some((lane, ticket)));
            }
        }
    }

    /// Sends one call through its lane (`first`: a pass taken ahead, else one is waited for).
    /// A paced call retries throttled attempts itself, up to `attempts` in all, each waiting
    /// for the lane again: the lane has just been halved, so the retry goes at the new rate
    /// (`send` must then tell the SDK not to retry throttles: [`Paced::is_paced`]). Other
    /// errors, and unpaced calls, are the SDK's to retry.
    pub(crate) async fn send<T, E, F, Fut>(
        &self,
        region: &str,
        operation: &'static str,
        attempts: u32,
        first: Option<Paced>,
        mut send: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata,
        F: FnMut(Paced) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let mut paced = match first {
            Some(p) => p,
            None => self.pace(region, operation).await,
        };
        let mut attempt = 1;
        loop {
            let again = paced.is_paced();
            match send(paced).await {
                Err(e) if again && attempt < attempts && sdk_error_is_throttling(&e) => {
                    attempt += 1;
                    paced = self.pace(region, operation).await;
                }
                result => return result,
            }
        }
    }

    /// The rate each lane allows now: `(region, operation, requests per second)`.
    pub fn rates(&self) -> Vec<(String, &'static str, f64)> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = lanes
            .iter()
            .map(|((region, op), lane)| (region.clone(), *op, lock(lane).rate()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Whether two handles share their lanes (one account's clients).
    pub fn same_as(&self, other: &AccountLimiters) -> bool {
        Arc::ptr_eq(&self.lanes, &other.lanes)
    }
}

fn lock(lane: &Lane) -> std::sync::MutexGuard<'_, Aimd> {
    lane.lock().unwrap_or_else(|p| p.into_inner())
}

/// A call that passed its lane; [`Paced::observer`] reports each attempt's answer.
#[derive(Clone)]
pub(crate) struct Paced(Option<(Lane, Ticket)>);

impl Paced {
    /// Whether the call went through a lane (the operation has a rate).
    pub(crate) fn is_paced(&self) -> bool {
        self.0.is_some()
    }

    /// An interceptor for this call: every attempt (SDK retries included) that AWS throttles
    /// halves the lane; a success lets it grow. `E` is the operation's error type.
    pub(crate) fn observer<E>(&self) -> PaceObserver<E> {
        PaceObserver {
            paced: self.clone(),
            error: PhantomData,
        }
    }

    fn report(&self, throttled: bool) {
        if let Some((lane, ticket)) = &self.0 {
            let mut l = lock(lane);
            if throttled {
                l.throttled(ticket.epoch);
            } else {
                l.succeeded(ticket.epoch, ticket.binding);
            }
        }
    }
}

/// See [`Paced::observer`].
pub(crate) struct PaceObserver<E> {
    paced: Paced,
    error: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for PaceObserver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaceObserver")
    }
}

impl<E> Intercept for PaceObserver<E>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "PaceObserver"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match context.output_or_error() {
            Some(Ok(_)) => self.paced.report(false),
            Some(Err(err)) => {
                let code = err
                    .as_operation_error()
                    .and_then(|e| e.downcast_ref::<E>())
                    .and_then(|e| e.code());
                let status = context.response().map(|r| r.status().as_u16());
                if code.is_some_and(is_throttling) || status == Some(429) {
                    self.paced.report(true);
                }
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: &str = "PutKeyPolicy";

    #[test]
    fn halves_once_per_epoch_recovers_additively_never_above_the_ceiling() {
        let t0 = Instant::now();
        let mut lane = Aimd::new(rate(40.0, 50.0));
        // A burst of one second's worth passes at once; the next call waits 1/rate.
        let tickets: Vec<Ticket> = (0..41).map(|_| lane.reserve(t0)).collect();
        assert!(tickets[..40].iter().all(|t| t.wait.is_zero()));
        assert_eq!(tickets[40].wait, Duration::from_millis(25));
        // The burst is throttled: the first answer halves, the others were sent at the old
        // rate and do not halve again.
        assert!(lane.throttled(tickets[0].epoch));
        assert!(!lane.throttled(tickets[1].epoch));
        assert_eq!(lane.rate(), 20.0);
        // A call reserved after the decrease that is throttled halves again, down to the floor.
        let t = lane.reserve(t0);
        assert!(lane.throttled(t.epoch));
        assert_eq!(lane.rate(), 10.0);
        for _ in 0..20 {
            let t = lane.reserve(t0);
            lane.throttled(t.epoch);
        }
        assert_eq!(lane.rate(), FLOOR_PER_SECOND);
        // Recovery: step = ceiling / 20 = 2.5 per second of binding calls, so from 0.5 the
        // first success adds 5, the next 2.5 / 5.5 ...
        let epoch = lane.reserve(t0).epoch;
        lane.succeeded(epoch, true);
        assert_eq!(lane.rate(), 5.5);
        // A success of a call that did not wait (the lane was not the limit), or of one sent
        // before the last decrease, changes nothing.
        lane.succeeded(epoch, false);
        lane.succeeded(tickets[0].epoch, true);
        assert_eq!(lane.rate(), 5.5);
        for _ in 0..10_000 {
            lane.succeeded(epoch, true);
            assert!(lane.rate() <= 50.0);
        }
        assert_eq!(lane.rate(), 50.0, "recovers up to the ceiling, not beyond");
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_holds_one_second() {
        let t0 = Instant::now();
        let mut lane = Aimd::new(rate(10.0, 10.0));
        for _ in 0..10 {
            assert!(lane.reserve(t0).wait.is_zero());
        }
        let t = lane.reserve(t0);
        assert_eq!(t.wait, Duration::from_millis(100));
        assert!(t.binding);
        // Long idle: back to one second of burst, not more.
        let later = t0 + Duration::from_secs(60);
        let passed = (0..20)
            .filter(|_| lane.reserve(later).wait.is_zero())
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn settings_parse_and_combine() {
        let s = |v: &str| v.parse::<RateSetting>().unwrap();
        let l = RateLimits::configured(
            &[s("msf=20"), s("UpdateApplication=5")],
            &[s("kms=100"), s("describeapplication=30")],
        )
        .unwrap();
        // Per operation beats service-wide, whatever the order on the command line.
        assert_eq!(l.rates["UpdateApplication"], rate(5.0, 2_000.0));
        assert_eq!(l.rates["ListApplicationOperations"], rate(20.0, 2_000.0));
        assert_eq!(l.rates["DescribeApplication"], rate(20.0, 30.0));
        // A default start above a given ceiling is lowered to it.
        assert_eq!(l.rates["DescribeKey"], rate(100.0, 100.0));
        assert_eq!(l.rates["PutKeyPolicy"], rate(7.5, 100.0));
        assert_eq!(RateLimits::default().rates["PutKeyPolicy"], rate(7.5, 12.0));
        // Both given and contradictory: refused.
        let err =
            RateLimits::configured(&[s("msf=40")], &[s("DescribeApplication=30")]).unwrap_err();
        assert!(err.contains("above"), "{err}");
        assert!(
            "Nope=1"
                .parse::<RateSetting>()
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!("msf".parse::<RateSetting>().is_err());
        assert!("msf=0".parse::<RateSetting>().is_err());
        assert!("msf=fast".parse::<RateSetting>().is_err());
        assert!("msf=NaN".parse::<RateSetting>().is_err());
    }

    #[tokio::test]
    async fn clones_share_the_lanes_of_one_account() {
        let limits = RateLimits::unlimited().with(OP, 1.0, 1.0);
        let a = AccountLimiters::new(&limits);
        let b = a.clone();
        let other_account = AccountLimiters::new(&limits);
        a.pace("us-east-1", OP).await;
        a.pace("eu-west-1", OP).await;
        other_account.pace("us-east-1", OP).await;
        // The same account and region through a clone (another role's clients) shares the
        // lane: its bucket is empty. Another region and another account had their own.
        let lanes = |l: &AccountLimiters| {
            l.lanes
                .lock()
                .unwrap()
                .iter()
                .map(|((r, _), lane)| (r.clone(), lane.lock().unwrap().tokens))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(lanes(&b)["us-east-1"], 0.0);
        assert_eq!(lanes(&b)["eu-west-1"], 0.0);
        assert_eq!(lanes(&other_account)["us-east-1"], 0.0);
        assert_eq!(lanes(&b).len(), 2);
        assert!(a.same_as(&b) && !a.same_as(&other_account));
        // An operation without a rate is not paced and has no lane.
        assert!(a.pace("us-east-1", "DescribeKey").await.0.is_none());
    }
}
