//! Removal safeguards: the seed's "Require administrator approval when more
//! than X users will be disabled or removed", per-action and percentage
//! limits, per-item departure budgets and protected users. `split` decides,
//! for one plan, what is applied now, what is held for approval (each with
//! the limit that held it) and which departures are dropped as protected.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::filter::normalize_dn;
use crate::plan::{Action, Change, Plan};

/// A percentage is kept as percent × 10,000: four decimals, exact arithmetic.
const PERCENT_SCALE: u64 = 10_000;
const PERCENT_DECIMALS: usize = 4;

/// A limit on departures: a count (1..=999) or a percentage of the directory
/// users stored before the cycle (`"2%"`, 0 < p ≤ 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Count(u32),
    /// Percent × 10,000 (`"2.5%"` is 25,000).
    Percent(u32),
}

impl Threshold {
    /// `"2%"`, `"0.5 %"`: a percentage above 0 and at most 100, four decimals at most.
    pub fn parse_percent(text: &str) -> Result<Threshold, String> {
        let shape = || format!("{text:?} is not a count (1 to 999) or a percentage such as \"2%\"");
        let number = text.trim().strip_suffix('%').ok_or_else(shape)?.trim();
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || whole.len() > 3 {
            return Err(shape());
        }
        if fraction.len() > PERCENT_DECIMALS {
            return Err(format!("{text:?}: at most {PERCENT_DECIMALS} decimals"));
        }
        let padded = format!("{fraction:0<width$}", width = PERCENT_DECIMALS);
        let scaled = whole.parse::<u64>().map_err(|_| shape())? * PERCENT_SCALE
            + padded.parse::<u64>().map_err(|_| shape())?;
        if scaled == 0 || scaled > 100 * PERCENT_SCALE {
            return Err(format!(
                "{text:?}: a percentage must be above 0% and at most 100%"
            ));
        }
        u32::try_from(scaled)
            .map(Threshold::Percent)
            .map_err(|_| shape())
    }

    /// How many departures pass with `population` directory users stored:
    /// the count, or floor(p% × population).
    pub fn limit(self, population: usize) -> usize {
        match self {
            Threshold::Count(n) => n as usize,
            Threshold::Percent(scaled) => {
                let allowed = population as u128 * scaled as u128 / (100 * PERCENT_SCALE as u128);
                usize::try_from(allowed).unwrap_or(usize::MAX)
            }
        }
    }

    pub fn is_percent(self) -> bool {
        matches!(self, Threshold::Percent(_))
    }

    /// The percentage as written back: `2%`, `2.5%`.
    fn percent_text(scaled: u32) -> String {
        let scaled = u64::from(scaled);
        let (whole, fraction) = (scaled / PERCENT_SCALE, scaled % PERCENT_SCALE);
        if fraction == 0 {
            return format!("{whole}%");
        }
        let fraction = format!("{fraction:0>width$}", width = PERCENT_DECIMALS);
        format!("{whole}.{}%", fraction.trim_end_matches('0'))
    }
}

/// As in the configuration file: `5`, `"2%"`.
impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "\"{}\"", Threshold::percent_text(p)),
        }
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Threshold::Count(n) => s.serialize_u32(n),
            Threshold::Percent(p) => s.serialize_str(&Threshold::percent_text(p)),
        }
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ThresholdVisitor)
    }
}

struct ThresholdVisitor;

impl serde::de::Visitor<'_> for ThresholdVisitor {
    type Value = Threshold;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a count (1 to 999) or a percentage such as \"2%\"")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threshold, E> {
        // the range (1..=999) is checked by `config::validate`, key named
        u32::try_from(v)
            .map(Threshold::Count)
            .map_err(|_| E::custom("must be between 1 and 999"))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threshold, E> {
        u32::try_from(v)
            .map(Threshold::Count)
            .map_err(|_| E::custom("must be between 1 and 999"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threshold, E> {
        Threshold::parse_percent(v).map_err(E::custom)
    }
}

/// A sync item's departure budget (`[[sync.items]] max_departures`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The item's DN as configured.
    pub item: String,
    pub max: u32,
}

/// The limits in force for one cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `approval_threshold`: disables and removals together.
    pub total: Option<Threshold>,
    /// `approval_threshold_disables`.
    pub disables: Option<Threshold>,
    /// `approval_threshold_removals`.
    pub removals: Option<Threshold>,
    pub budgets: Vec<Budget>,
    /// Directory users stored before the cycle (what a percentage is of).
    pub population: usize,
}

impl Limits {
    /// The limits of `[sync]`; `population` matters only for percentages.
    pub fn of(sync: &crate::config::Sync, population: usize) -> Limits {
        Limits {
            total: sync.approval_threshold,
            disables: sync.approval_threshold_disables,
            removals: sync.approval_threshold_removals,
            budgets: sync
                .items
                .iter()
                .filter_map(|it| {
                    it.max_departures.map(|max| Budget {
                        item: it.dn.clone(),
                        max,
                    })
                })
                .collect(),
            population,
        }
    }

    /// Whether some threshold is a percentage (then the population is needed).
    pub fn needs_population(sync: &crate::config::Sync) -> bool {
        [
            sync.approval_threshold,
            sync.approval_threshold_disables,
            sync.approval_threshold_removals,
        ]
        .iter()
        .flatten()
        .any(|t| t.is_percent())
    }

    /// Whether any limit may hold something.
    pub fn any(&self) -> bool {
        self.total.is_some()
            || self.disables.is_some()
            || self.removals.is_some()
            || !self.budgets.is_empty()
    }
}

/// The limit that held a departure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBy {
    /// `key` (`approval_threshold`, `_disables`, `_removals`) was exceeded.
    Threshold {
        key: &'static str,
        threshold: Threshold,
        limit: usize,
        population: usize,
    },
    /// The item's `max_departures` was used up by departures before it.
    Budget { max: u32, item: String },
    /// Some departure of the set was rejected by an administrator before.
    Rejected,
    /// Held by `limit` (an item budget) in an approval still pending.
    Pending { limit: String },
}

impl fmt::Display for HeldBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldBy::Threshold {
                key,
                threshold,
                limit,
                population,
            } if threshold.is_percent() => write!(
                f,
                "{key} = {threshold} ({} of {} users)",
                thousands(*limit),
                thousands(*population)
            ),
            HeldBy::Threshold { key, threshold, .. } => write!(f, "{key} = {threshold}"),
            HeldBy::Budget { max, item } => write!(f, "max_departures = {max} of item {item}"),
            HeldBy::Rejected => f.write_str("an administrator rejected some of these departures"),
            HeldBy::Pending { limit } if limit.ends_with(STILL_PENDING) => f.write_str(limit),
            HeldBy::Pending { limit } => write!(f, "{limit}{STILL_PENDING}"),
        }
    }
}

/// Said after the limit of a departure held again while its approval waits.
const STILL_PENDING: &str = " (still waiting for approval)";

/// Whether a stored limit text is an item budget's (`HeldBy::Budget`).
pub fn is_budget_limit(limit: &str) -> bool {
    limit.starts_with("max_departures = ")
}

/// 1234567 as "1,234,567".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Who may never be disabled or removed by a sync (`sync.protected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    Known {
        /// Protected usernames, lower-cased.
        usernames: HashSet<String>,
        /// Normalised member DN -> the protected group it is in (as configured).
        members: HashMap<String, String>,
        /// Member unique id -> its protected group (found even after a move).
        ids: HashMap<String, String>,
    },
    /// A protected group could not be read: no departure is safe this cycle.
    Unreadable(String),
}

impl Default for Protection {
    fn default() -> Self {
        Protection::Known {
            usernames: HashSet::new(),
            members: HashMap::new(),
            ids: HashMap::new(),
        }
    }
}

impl Protection {
    /// The protected usernames of `sync.protected` (entries without `=`);
    /// group members are added with [`Protection::add_member`].
    pub fn of_names(protected: &[String]) -> Protection {
        Protection::Known {
            usernames: protected
                .iter()
                .filter(|p| !is_group_entry(p))
                .map(|p| p.trim().to_lowercase())
                .collect(),
            members: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    /// The user `dn` (with unique id `id`, when known) is protected as a
    /// member of `group`.
    pub fn add_member(&mut self, dn: &str, id: Option<&str>, group: &str) {
        if let Protection::Known { members, ids, .. } = self {
            members
                .entry(normalize_dn(dn))
                .or_insert_with(|| group.to_string());
            if let Some(id) = id {
                ids.entry(id.to_string())
                    .or_insert_with(|| group.to_string());
            }
        }
    }

    /// Why `c`'s departure must not be made, if it must not.
    pub fn why(&self, c: &Change) -> Option<String> {
        let (usernames, members, ids) = match self {
            Protection::Unreadable(why) => {
                return Some(format!("no departure is made this cycle: {why}"))
            }
            Protection::Known {
                usernames,
                members,
                ids,
            } => (usernames, members, ids),
        };
        let user = c.before.as_ref().unwrap_or(&c.user);
        let names = [&c.user.username, &user.username];
        if let Some(name) = names.iter().find(|n| usernames.contains(&n.to_lowercase())) {
            return Some(format!("protected user {name} (sync.protected)"));
        }
        // by unique id (the user may have moved), else by the stored DN
        let by_id = [user.directory_id.as_deref(), c.user.directory_id.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|id| ids.get(id));
        let by_dn = || {
            [user.dn.as_deref(), c.user.dn.as_deref()]
                .into_iter()
                .flatten()
                .find_map(|dn| members.get(&normalize_dn(dn)))
        };
        by_id
            .or_else(by_dn)
            .map(|group| format!("member of protected group {group} (sync.protected)"))
    }
}

/// A `sync.protected` entry that names a group (a DN) rather than a username.
pub fn is_group_entry(entry: &str) -> bool {
    entry.contains('=')
}

/// A departure held for approval, and the limit that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<'p> {
    pub change: &'p Change,
    pub by: HeldBy,
}

/// A departure dropped from the plan because its user is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped<'p> {
    pub change: &'p Change,
    pub why: String,
}

/// A plan split by the safeguards: the plan's own changes, borrowed (a
/// cycle's plan can hold many thousands; none is copied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split<'p> {
    /// Applied now, in the plan's order.
    pub now: Vec<&'p Change>,
    /// Held for approval, each with its limit.
    pub held: Vec<Held<'p>>,
    /// Dropped: neither applied nor held.
    pub protected: Vec<Skipped<'p>>,
}

impl<'p> Split<'p> {
    /// The held changes alone (for the fingerprint and the stored approval).
    pub fn held_changes(&self) -> Vec<&'p Change> {
        self.held.iter().map(|h| h.change).collect()
    }
}

pub fn is_departure(c: &Change) -> bool {
    matches!(c.action, Action::Disable | Action::Remove)
}

/// Split `plan`: protected departures are dropped, then every departure is
/// held when `approval_threshold` is exceeded, every disable (removal) when
/// its own threshold is, and an item's departures past its `max_departures`
/// (the first ones in the plan's order pass). Everything else is applied now.
pub fn split<'p>(plan: &'p Plan, limits: &Limits, protection: &Protection) -> Split<'p> {
    let changes = &plan.changes;
    let mut protected: HashMap<usize, String> = HashMap::new();
    let mut departures: Vec<usize> = Vec::new();
    for (i, c) in changes.iter().enumerate().filter(|(_, c)| is_departure(c)) {
        match protection.why(c) {
            Some(why) => {
                protected.insert(i, why);
            }
            None => departures.push(i),
        }
    }
    let mut held: HashMap<usize, HeldBy> = HashMap::new();
    for (i, by) in over_thresholds(changes, &departures, limits) {
        held.entry(i).or_insert(by);
    }
    let within: Vec<usize> = departures
        .into_iter()
        .filter(|i| !held.contains_key(i))
        .collect();
    held.extend(over_budgets(changes, &within, &limits.budgets));
    let mut out = Split::default();
    for (i, change) in changes.iter().enumerate() {
        if let Some(by) = held.remove(&i) {
            out.held.push(Held { change, by });
        } else if let Some(why) = protected.remove(&i) {
            out.protected.push(Skipped { change, why });
        } else {
            out.now.push(change);
        }
    }
    out
}

/// The departures (indices into `changes`) held by an exceeded threshold
/// (`approval_threshold` first, then the per-action ones), each counted over
/// every unprotected departure.
fn over_thresholds(
    changes: &[Change],
    departures: &[usize],
    limits: &Limits,
) -> Vec<(usize, HeldBy)> {
    let checks: [(&'static str, Option<Threshold>, Option<Action>); 3] = [
        ("approval_threshold", limits.total, None),
        (
            "approval_threshold_disables",
            limits.disables,
            Some(Action::Disable),
        ),
        (
            "approval_threshold_removals",
            limits.removals,
            Some(Action::Remove),
        ),
    ];
    let mut out = Vec::new();
    for (key, threshold, action) in checks {
        let Some(threshold) = threshold else { continue };
        let counted: Vec<usize> = departures
            .iter()
            .copied()
            .filter(|&i| action.is_none_or(|a| changes[i].action == a))
            .collect();
        let limit = threshold.limit(limits.population);
        if counted.len() > limit {
            let by = HeldBy::Threshold {
                key,
                threshold,
                limit,
                population: limits.population,
            };
            out.extend(counted.into_iter().map(|i| (i, by.clone())));
        }
    }
    out
}

/// The departures past their governing item's budget (the stored user's
/// `sync_item`), in the plan's order.
fn over_budgets(
    changes: &[Change],
    departures: &[usize],
    budgets: &[Budget],
) -> Vec<(usize, HeldBy)> {
    let by_item: HashMap<String, &Budget> =
        budgets.iter().map(|b| (normalize_dn(&b.item), b)).collect();
    let mut used: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::new();
    for &i in departures {
        let Some(item) = governing_item(&changes[i]) else {
            continue;
        };
        let key = normalize_dn(item);
        let Some(budget) = by_item.get(&key) else {
            continue;
        };
        let n = used.entry(key).or_default();
        *n += 1;
        if *n > budget.max {
            let by = HeldBy::Budget {
                max: budget.max,
                item: budget.item.clone(),
            };
            out.push((i, by));
        }
    }
    out
}

/// The item DN that governed the departing user when it was stored.
fn governing_item(c: &Change) -> Option<&str> {
    c.before
        .as_ref()
        .and_then(|b| b.sync_item.as_deref())
        .or(c.user.sync_item.as_deref())
}

/// A stable fingerprint of a set of held changes (action + directory id), so a
/// rejected set is not asked about again until the directory changes.
pub fn fingerprint<'c>(held: impl IntoIterator<Item = &'c Change>) -> String {
    let mut keys: Vec<String> = held
        .into_iter()
        .map(|c| {
            format!(
                "{}:{}",
                c.action.as_str(),
                c.user.directory_id.as_deref().unwrap_or(&c.user.username)
            )
        })
        .collect();
    keys.sort();
    keys.join(",")
}

#[cfg(test)]
mod tests;
