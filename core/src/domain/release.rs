//! Plugin releases: which admitted version of a plugin serves (`stable`), which one gets a
//! sticky share of traffic (`canary`), which one is called beside the stable off the response
//! path to compare decisions (`shadow`), and the rules that change them.
//!
//! A release has a generation, incremented by every change; changes are compare-and-set on it,
//! so two operators (or an operator and the automatic rollback) never overwrite each other
//! unknowingly. Every change is audited: who, when, from what, to what, why.
//!
//! Routing is sticky: [`bucket`] hashes a routing key (the idempotency key of a new order,
//! the order id of a transition) to one of 10 000 buckets, so a retry of the same request is
//! decided by the same version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets of the routing hash: weights have a resolution of 0.01%.
pub const BUCKETS: u32 = 10_000;

/// A canary: a version that serves `weight` percent of the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The canary version's digest.
    pub digest: String,
    /// Percent of routing keys (1-100) it serves.
    pub weight: u8,
}

/// A shadow: a version called beside the serving one for a fraction of the requests; its
/// decisions are compared, never used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// The shadow version's digest.
    pub digest: String,
    /// Fraction of requests (0 < sample <= 1) also sent to it.
    pub sample: f64,
}

/// What an operator asks a plugin's release to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredRelease {
    /// The digest serving everything not routed to the canary.
    pub stable: String,
    /// An optional canary.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// An optional shadow.
    #[serde(default)]
    pub shadow: Option<Shadow>,
}

/// The release of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Plugin name.
    pub name: String,
    /// Incremented by every change; 1 for the first release.
    pub generation: i64,
    /// The serving digest.
    pub stable: String,
    /// The stable digest before the last change of `stable` (where `rollback` goes).
    pub previous_stable: Option<String>,
    /// Canary, if any.
    pub canary: Option<Canary>,
    /// Shadow, if any.
    pub shadow: Option<Shadow>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last (an admin token's name, `startup`, `auto-rollback`).
    pub updated_by: String,
}

/// A change to a release.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseChange {
    /// Become exactly this.
    Set(DesiredRelease),
    /// The canary becomes the stable version.
    Promote,
    /// Back to the previous stable version at once (canary and shadow removed).
    Rollback,
    /// The canary is removed (the automatic rollback of a failing canary).
    DropCanary,
}

impl ReleaseChange {
    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            ReleaseChange::Set(_) => "set",
            ReleaseChange::Promote => "promote",
            ReleaseChange::Rollback => "rollback",
            ReleaseChange::DropCanary => "auto_rollback",
        }
    }
}

/// A change that breaks a release rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRuleError {
    /// A canary weight outside 1-100.
    #[error("canary weight must be between 1 and 100, not {0}")]
    Weight(u8),
    /// A shadow sample outside (0, 1].
    #[error("shadow sample must be above 0 and at most 1")]
    Sample,
    /// The canary or shadow is the stable version itself.
    #[error("the {0} must be another version than the stable one")]
    SameAsStable(&'static str),
    /// `promote` without a canary.
    #[error("there is no canary to promote")]
    NoCanary,
    /// `rollback` without a previous stable version.
    #[error("there is no previous stable version to roll back to")]
    NoPrevious,
    /// A first release that is not a plain `set`.
    #[error("the plugin has no release yet: set one first")]
    NoRelease,
}

/// Which versions a release names.
#[derive(Debug, Clone, PartialEq)]
pub struct Versions {
    /// The serving digest.
    pub stable: String,
    /// Where `rollback` goes.
    pub previous_stable: Option<String>,
    /// Canary, if any.
    pub canary: Option<Canary>,
    /// Shadow, if any.
    pub shadow: Option<Shadow>,
}

/// The versions after `change`, or why not. `current` is `None` before the first release.
/// The generation, time and author are the caller's (see [`Release`]); this decides only the
/// versions.
pub fn apply(
    current: Option<&Release>,
    change: &ReleaseChange,
) -> Result<Versions, ReleaseRuleError> {
    let (stable, previous, canary, shadow) = match (current, change) {
        (_, ReleaseChange::Set(d)) => {
            let previous = match current {
                Some(c) if c.stable != d.stable => Some(c.stable.clone()),
                Some(c) => c.previous_stable.clone(),
                None => None,
            };
            (
                d.stable.clone(),
                previous,
                d.canary.clone(),
                d.shadow.clone(),
            )
        }
        (None, _) => return Err(ReleaseRuleError::NoRelease),
        (Some(c), ReleaseChange::Promote) => {
            let canary = c.canary.as_ref().ok_or(ReleaseRuleError::NoCanary)?;
            let shadow = c.shadow.clone().filter(|s| s.digest != canary.digest);
            (canary.digest.clone(), Some(c.stable.clone()), None, shadow)
        }
        (Some(c), ReleaseChange::Rollback) => {
            let previous = c
                .previous_stable
                .clone()
                .ok_or(ReleaseRuleError::NoPrevious)?;
            (previous, Some(c.stable.clone()), None, None)
        }
        (Some(c), ReleaseChange::DropCanary) => {
            if c.canary.is_none() {
                return Err(ReleaseRuleError::NoCanary);
            }
            (
                c.stable.clone(),
                c.previous_stable.clone(),
                None,
                c.shadow.clone(),
            )
        }
    };
    if let Some(c) = &canary {
        if !(1..=100).contains(&c.weight) {
            return Err(ReleaseRuleError::Weight(c.weight));
        }
        if c.digest == stable {
            return Err(ReleaseRuleError::SameAsStable("canary"));
        }
    }
    if let Some(s) = &shadow {
        if !(s.sample > 0.0 && s.sample <= 1.0) {
            return Err(ReleaseRuleError::Sample);
        }
        if s.digest == stable {
            return Err(ReleaseRuleError::SameAsStable("shadow"));
        }
    }
    Ok(Versions {
        stable,
        previous_stable: previous,
        canary,
        shadow,
    })
}

/// The routing bucket (`0..BUCKETS`) of `key` in the `space` (canary and shadow sampling use
/// different spaces, so whether a key is in the canary says nothing about its sampling).
pub fn bucket(space: &str, key: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(space.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (n % u64::from(BUCKETS)) as u32
}

impl Canary {
    /// Whether the canary serves `key`: the same answer for the same key, for `weight`
    /// percent of keys.
    pub fn serves(&self, key: &str) -> bool {
        bucket("canary", key) < u32::from(self.weight) * (BUCKETS / 100)
    }
}

impl Shadow {
    /// Whether the shadow is also asked about `key`.
    pub fn samples(&self, key: &str) -> bool {
        f64::from(bucket("shadow", key)) < self.sample * f64::from(BUCKETS)
    }
}

/// Calls and unexpected outcomes (traps, exhausted budgets, timeouts, contract violations,
/// plugin-internal errors; not validation errors or business rejections) of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct OutcomeCounts {
    /// Calls counted.
    pub calls: u64,
    /// Calls with an unexpected outcome.
    pub unexpected: u64,
}

impl OutcomeCounts {
    /// `unexpected / calls`, 0 without calls.
    pub fn rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.unexpected as f64 / self.calls as f64
        }
    }
}

/// When a canary is rolled back automatically.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RollbackPolicy {
    /// The canary needs at least this many calls in the window to be judged.
    pub min_calls: u64,
    /// Rolled back when its unexpected-outcome rate exceeds the stable's by more than this.
    pub margin: f64,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            min_calls: 20,
            margin: 0.2,
        }
    }
}

/// Why the canary should be rolled back, or `None` when it should stay.
pub fn should_roll_back(
    canary: OutcomeCounts,
    stable: OutcomeCounts,
    policy: &RollbackPolicy,
) -> Option<String> {
    (canary.calls >= policy.min_calls && canary.rate() > stable.rate() + policy.margin).then(|| {
        format!(
            "canary unexpected-outcome rate {:.3} over {} calls exceeds the stable's {:.3} by more than {}",
            canary.rate(),
            canary.calls,
            stable.rate(),
            policy.margin
        )
    })
}

/// One audited change of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseAudit {
    /// Plugin name.
    pub name: String,
    /// The generation the change produced.
    pub generation: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// `set`, `promote`, `rollback`, `auto_rollback`, `startup`.
    pub action: String,
    /// The release before (absent for the first one).
    pub from: Option<Release>,
    /// The release after.
    pub to: Release,
    /// Why, as given by the actor.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(stable: &str, previous: Option<&str>, canary: Option<(&str, u8)>) -> Release {
        Release {
            name: "orders".into(),
            generation: 3,
            stable: stable.into(),
            previous_stable: previous.map(Into::into),
            canary: canary.map(|(d, w)| Canary {
                digest: d.into(),
                weight: w,
            }),
            shadow: None,
            updated_at: Utc::now(),
            updated_by: "ops".into(),
        }
    }

    #[test]
    fn promote_rollback_and_drop_follow_the_rules() {
        let r = release("a", None, Some(("b", 20)));
        let v = |stable: &str, previous: Option<&str>| Versions {
            stable: stable.into(),
            previous_stable: previous.map(Into::into),
            canary: None,
            shadow: None,
        };
        assert_eq!(
            apply(Some(&r), &ReleaseChange::Promote).unwrap(),
            v("b", Some("a"))
        );
        let promoted = release("b", Some("a"), None);
        assert_eq!(
            apply(Some(&promoted), &ReleaseChange::Rollback).unwrap(),
            v("a", Some("b"))
        );
        assert_eq!(
            apply(Some(&promoted), &ReleaseChange::Promote),
            Err(ReleaseRuleError::NoCanary)
        );
        assert_eq!(
            apply(Some(&release("a", None, None)), &ReleaseChange::Rollback),
            Err(ReleaseRuleError::NoPrevious)
        );
        assert_eq!(
            apply(Some(&r), &ReleaseChange::DropCanary).unwrap(),
            v("a", None)
        );
        assert_eq!(
            apply(None, &ReleaseChange::Promote),
            Err(ReleaseRuleError::NoRelease)
        );
    }

    #[test]
    fn set_validates_weights_samples_and_distinct_versions() {
        let set = |stable: &str, canary: Option<(&str, u8)>, shadow: Option<(&str, f64)>| {
            ReleaseChange::Set(DesiredRelease {
                stable: stable.into(),
                canary: canary.map(|(d, w)| Canary {
                    digest: d.into(),
                    weight: w,
                }),
                shadow: shadow.map(|(d, s)| Shadow {
                    digest: d.into(),
                    sample: s,
                }),
            })
        };
        let cur = release("a", None, None);
        assert_eq!(
            apply(Some(&cur), &set("b", None, None))
                .unwrap()
                .previous_stable,
            Some("a".into()),
            "the old stable becomes the previous one"
        );
        assert_eq!(
            apply(None, &set("a", None, None)).unwrap().previous_stable,
            None
        );
        assert_eq!(
            apply(Some(&cur), &set("a", Some(("b", 0)), None)),
            Err(ReleaseRuleError::Weight(0))
        );
        assert_eq!(
            apply(Some(&cur), &set("a", Some(("a", 5)), None)),
            Err(ReleaseRuleError::SameAsStable("canary"))
        );
        assert_eq!(
            apply(Some(&cur), &set("a", None, Some(("b", 1.5)))),
            Err(ReleaseRuleError::Sample)
        );
        assert!(apply(Some(&cur), &set("a", Some(("b", 20)), Some(("c", 0.5)))).is_ok());
    }

    #[test]
    fn routing_is_sticky_and_proportional() {
        let canary = Canary {
            digest: "b".into(),
            weight: 20,
        };
        let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i}")).collect();
        let served = keys.iter().filter(|k| canary.serves(k)).count();
        // 20% of 20 000 keys: a binomial with sd = sqrt(20000 * 0.2 * 0.8) ~ 57; 5 sd.
        assert!((3_715..=4_285).contains(&served), "{served}");
        assert!(keys.iter().all(|k| canary.serves(k) == canary.serves(k)));
        let all = Canary {
            weight: 100,
            ..canary
        };
        assert!(keys.iter().all(|k| all.serves(k)));
        assert_ne!(bucket("canary", "k"), bucket("shadow", "k"));
    }

    #[test]
    fn a_canary_is_rolled_back_only_with_enough_calls_and_a_clear_margin() {
        let policy = RollbackPolicy {
            min_calls: 10,
            margin: 0.2,
        };
        let c = |calls, unexpected| OutcomeCounts { calls, unexpected };
        assert!(
            should_roll_back(c(9, 9), c(100, 0), &policy).is_none(),
            "too few calls"
        );
        assert!(
            should_roll_back(c(10, 3), c(100, 10), &policy).is_none(),
            "within the margin"
        );
        assert!(should_roll_back(c(10, 4), c(100, 10), &policy).is_some());
        assert!(should_roll_back(c(10, 10), c(0, 0), &policy).is_some());
    }
}
