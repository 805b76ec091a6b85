//! API keys and usage plans for routes that require a key (`x-api-key`): keys are kept only as
//! SHA-256 hashes, plans give a token bucket (governor's GCRA) and daily/monthly quotas whose
//! counts are committed to the store before the request goes on.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Bucket, RateLimiter};
use rampart_model::UsagePlan;
use rampart_store::{ApiKey, Quota, Store};
use sha2::{Digest, Sha256};

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or not a known one: 403.
    Forbidden,
    /// Over the plan's rate: 429 with the wait.
    Throttled(Duration),
    /// A quota is used up: 429 "Limit Exceeded".
    QuotaExceeded,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    plan: Option<String>,
}

/// Keys and plans in memory, in front of the store.
#[derive(Default)]
pub struct Keys {
    by_hash: RwLock<HashMap<String, Entry>>,
    plans: RwLock<HashMap<String, UsagePlan>>,
    /// Token buckets by key name; dropped when the key's plan changes.
    buckets: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

/// Lower-hex SHA-256 of a key secret.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new key secret: 32 random bytes, hex.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(format!(
        "rk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// `day:YYYY-MM-DD` and `month:YYYY-MM` of now (UTC).
fn periods() -> (String, String) {
    let now = jiff::Timestamp::now();
    (
        format!("day:{}", now.strftime("%Y-%m-%d")),
        format!("month:{}", now.strftime("%Y-%m")),
    )
}

fn bucket(plan: &UsagePlan) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = plan.rate_per_second?;
    let period = Duration::from_secs_f64(1.0 / rate);
    let burst = plan.burst.unwrap_or_else(|| (rate.ceil() as u32).max(1));
    let quota = Bucket::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
    Some(Arc::new(RateLimiter::direct(quota)))
}

impl Keys {
    /// Loads keys and plans.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn load(store: &Store) -> Result<Self, rampart_store::Error> {
        let keys = Self::default();
        for key in store.list_keys().await? {
            keys.remember(&key);
        }
        for (name, plan) in store.list_plans().await? {
            keys.plans.write().expect("plans lock").insert(name, plan);
        }
        Ok(keys)
    }

    /// Adds a stored key to the cache.
    pub fn remember(&self, key: &ApiKey) {
        self.by_hash.write().expect("keys lock").insert(
            key.hash.clone(),
            Entry {
                name: key.name.clone(),
                plan: key.plan.clone(),
            },
        );
    }

    /// Forgets a deleted key.
    pub fn forget(&self, name: &str) {
        self.by_hash
            .write()
            .expect("keys lock")
            .retain(|_, e| e.name != name);
        self.buckets.lock().expect("buckets lock").remove(name);
    }

    /// Sets (or, with `None`, removes) a plan; keys on it get fresh buckets.
    pub fn set_plan(&self, name: &str, plan: Option<UsagePlan>) {
        let mut plans = self.plans.write().expect("plans lock");
        match plan {
            Some(p) => plans.insert(name.to_owned(), p),
            None => plans.remove(name),
        };
        let on_plan: Vec<String> = self
            .by_hash
            .read()
            .expect("keys lock")
            .values()
            .filter(|e| e.plan.as_deref() == Some(name))
            .map(|e| e.name.clone())
            .collect();
        let mut buckets = self.buckets.lock().expect("buckets lock");
        for key in on_plan {
            buckets.remove(&key);
        }
    }

    /// Whether a plan exists.
    pub fn has_plan(&self, name: &str) -> bool {
        self.plans.read().expect("plans lock").contains_key(name)
    }

    /// Admits a request carrying `presented` (the `x-api-key` header), counting it against its
    /// plan's quotas.
    ///
    /// # Errors
    /// The [`Refusal`]; a store failure is reported as `Forbidden` (fail closed) and logged.
    pub async fn admit(&self, store: &Store, presented: Option<&str>) -> Result<(), Refusal> {
        let entry = presented
            .and_then(|k| {
                self.by_hash
                    .read()
                    .expect("keys lock")
                    .get(&hash(k))
                    .cloned()
            })
            .ok_or(Refusal::Forbidden)?;
        let plan = entry
            .plan
            .as_ref()
            .and_then(|p| self.plans.read().expect("plans lock").get(p).cloned());
        let Some(plan) = plan else {
            return Ok(());
        };
        let limiter = {
            let mut buckets = self.buckets.lock().expect("buckets lock");
            match buckets.get(&entry.name) {
                Some(b) => Some(b.clone()),
                None => bucket(&plan).inspect(|b| {
                    buckets.insert(entry.name.clone(), b.clone());
                }),
            }
        };
        if let Some(limiter) = limiter
            && let Err(not_until) = limiter.check()
        {
            return Err(Refusal::Throttled(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        if plan.quota_per_day.is_none() && plan.quota_per_month.is_none() {
            return Ok(());
        }
        let (day, month) = periods();
        match store
            .count_request(
                entry.name,
                day,
                month,
                plan.quota_per_day,
                plan.quota_per_month,
            )
            .await
        {
            Ok(Quota::Counted { .. }) => Ok(()),
            Ok(Quota::Exceeded) => Err(Refusal::QuotaExceeded),
            Err(e) => {
                tracing::error!(error = %e, "counting an API key request failed");
                Err(Refusal::Forbidden)
            }
        }
    }

    /// Today's and this month's counts of a key.
    pub async fn usage(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<(u64, u64), rampart_store::Error> {
        let (day, month) = periods();
        store.usage(name, &day, &month).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("rk_") && a.len() == 67);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn buckets_follow_the_plan() {
        let plan = UsagePlan {
            rate_per_second: Some(1.0),
            burst: Some(2),
            ..UsagePlan::default()
        };
        let b = bucket(&plan).unwrap();
        assert!(b.check().is_ok());
        assert!(b.check().is_ok());
        assert!(b.check().is_err(), "burst of 2");
        assert!(bucket(&UsagePlan::default()).is_none());
    }
}
