//! Retention policies for `forget`: which snapshots a policy keeps, and why. Pure logic: no I/O,
//! no clock (the caller passes "now" and the time zone), so every rule is unit-tested here.
//!
//! The semantics are restic's (`internal/restic/snapshot_policy.go`, as released in restic
//! 0.14.0, which the golden table in `tests/fixtures/forget_policies.json` was produced with),
//! so that users moving from restic keep exactly the same snapshots:
//!
//! - Snapshots are first filtered (`--host`, `--tag`, `--path`), then grouped (`--group-by`,
//!   default `host,paths`); the policy is applied to each group on its own.
//! - Within a group, snapshots are visited newest first. Each count policy (`--keep-last`,
//!   `--keep-hourly`, ...) keeps a snapshot whenever its period (hour, day, ISO week, month,
//!   year; for `--keep-last` every snapshot is its own period) differs from the period of the
//!   previously kept one, until its count is spent. So it keeps the newest snapshot of each of
//!   the N most recent periods that have a snapshot.
//! - `--keep-within D` keeps every snapshot strictly newer than `latest - D`, where `latest` is
//!   the newest snapshot of the group that is not in the future. `--keep-within-daily D` (and
//!   hourly, weekly, monthly, yearly) keeps the newest snapshot of each period among those.
//!   `latest - D` is computed like Go's `AddDate(-y, -m, -d)` on the local calendar (so
//!   31 March minus one month is 3 March, not 28 February), then minus `h` hours of real time.
//! - `--keep-tag a,b` keeps snapshots that have all of the tags `a` and `b`; repeated, a
//!   snapshot is kept if any of the lists matches.
//! - A snapshot is kept if any policy keeps it; the reasons list every policy that did.
//!
//! Where cairn deliberately differs from restic 0.14.0:
//!
//! - A count of `-1` or `unlimited` keeps every period (restic >= 0.15). restic 0.14.0 treats
//!   negative counts as "nothing", so `--keep-last -1` removes every snapshot; cairn does not
//!   mirror that. Other negative counts are refused.
//! - Ties: snapshots with the same time are ordered by id (newest first means highest id first,
//!   the reverse of `cairn snapshots`), so the result never depends on listing order. restic's
//!   order for equal times is whatever its (unstable) sort leaves.
//! - Time zone: periods are taken in the time zone the caller passes (the CLI passes the
//!   system's, i.e. `TZ`). restic uses the zone the snapshot's time was parsed in, which is the
//!   local zone when backup and forget run in the same zone; the two agree then.
//! - restic >= 0.17 additionally keeps the oldest snapshot of a group when a count policy has
//!   counts left; 0.14.0 does not, and neither does cairn.

use std::collections::BTreeMap;
use std::fmt;

use jiff::tz::TimeZone;

use crate::error::{Error, Result};
use crate::format::Timestamp;
use crate::id::Id;

/// What the policy needs to know of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: Id,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

/// How many periods a count policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// Keep the newest snapshot of this many periods (0: the policy is off).
    #[default]
    Off,
    N(u32),
    /// Keep the newest snapshot of every period.
    Unlimited,
}

impl Count {
    fn active(self) -> bool {
        !matches!(self, Count::Off | Count::N(0))
    }

    /// The count left after keeping one more snapshot.
    fn spend(self) -> Count {
        match self {
            Count::N(n) if n > 1 => Count::N(n - 1),
            Count::N(_) => Count::N(0),
            c => c,
        }
    }
}

impl std::str::FromStr for Count {
    type Err = Error;
    fn from_str(s: &str) -> Result<Count> {
        let t = s.trim();
        if t == "unlimited" || t == "-1" {
            return Ok(Count::Unlimited);
        }
        match t.parse::<u32>() {
            Ok(0) => Ok(Count::Off),
            Ok(n) => Ok(Count::N(n)),
            Err(_) => Err(Error::InvalidInput(format!(
                "{s:?} is not a count: use a number of 0 or more, or -1 / \"unlimited\" to keep all"
            ))),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Off => write!(f, "0"),
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => write!(f, "unlimited"),
        }
    }
}

/// A calendar duration as restic writes it: `1y2m3d4h` (years, months, days, hours; any
/// subset, in that order or another; each unit at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Duration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Duration {
    pub fn is_zero(&self) -> bool {
        *self == Duration::default()
    }
}

impl std::str::FromStr for Duration {
    type Err = Error;
    /// Stricter than restic, which ignores unknown units and lets a repeated unit override
    /// an earlier one: both are refused here.
    fn from_str(s: &str) -> Result<Duration> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "duration {s:?}: {why} (use e.g. 1y2m3d4h: years, months, days, hours)"
            ))
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let mut d = Duration::default();
        let mut seen = [false; 4];
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("no unit after the last number"))?;
            let (slot, field) = match unit {
                'y' => (0, &mut d.years),
                'm' => (1, &mut d.months),
                'd' => (2, &mut d.days),
                'h' => (3, &mut d.hours),
                _ => return Err(bad(&format!("unknown unit {unit:?}"))),
            };
            if seen[slot] {
                return Err(bad(&format!("unit {unit:?} given twice")));
            }
            seen[slot] = true;
            *field = n;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl fmt::Display for Duration {
    /// As restic prints it: non-zero parts only, `y m d h` order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.years != 0 {
            write!(f, "{}y", self.years)?;
        }
        if self.months != 0 {
            write!(f, "{}m", self.months)?;
        }
        if self.days != 0 {
            write!(f, "{}d", self.days)?;
        }
        if self.hours != 0 {
            write!(f, "{}h", self.hours)?;
        }
        Ok(())
    }
}

/// `--keep-tag` / `keep-tag` values: each a comma-separated list of tags that must all be
/// present.
pub fn keep_tag_lists(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// A retention policy. The default keeps nothing by itself: it is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    pub within: Duration,
    pub within_hourly: Duration,
    pub within_daily: Duration,
    pub within_weekly: Duration,
    pub within_monthly: Duration,
    pub within_yearly: Duration,
    /// Keep snapshots that have every tag of any one of these lists.
    pub tags: Vec<Vec<String>>,
}

/// The remaining counts of the count policies after a snapshot was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Each,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Policy {
    /// Whether no rule is set (restic's `Empty`): such a policy would keep nothing.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && [
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            ]
            .iter()
            .all(|c| !c.active())
            && [
                self.within,
                self.within_hourly,
                self.within_daily,
                self.within_weekly,
                self.within_monthly,
                self.within_yearly,
            ]
            .iter()
            .all(Duration::is_zero)
    }

    fn counts(&self) -> [(Count, Period, &'static str); 6] {
        [
            (self.last, Period::Each, "last snapshot"),
            (self.hourly, Period::Hour, "hourly snapshot"),
            (self.daily, Period::Day, "daily snapshot"),
            (self.weekly, Period::Week, "weekly snapshot"),
            (self.monthly, Period::Month, "monthly snapshot"),
            (self.yearly, Period::Year, "yearly snapshot"),
        ]
    }

    fn withins(&self) -> [(Duration, Period, &'static str); 5] {
        [
            (self.within_hourly, Period::Hour, "hourly within"),
            (self.within_daily, Period::Day, "daily within"),
            (self.within_weekly, Period::Week, "weekly within"),
            (self.within_monthly, Period::Month, "monthly within"),
            (self.within_yearly, Period::Year, "yearly within"),
        ]
    }
}

impl fmt::Display for Policy {
    /// A one-line summary, worded like restic's ("keep 7 daily, 4 weekly snapshots ...").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ["latest", "hourly", "daily", "weekly", "monthly", "yearly"];
        let mut keeps = Vec::new();
        for ((c, _, _), name) in self.counts().iter().zip(names) {
            match c {
                Count::N(n) if *n > 0 => keeps.push(format!("{n} {name}")),
                Count::Unlimited => keeps.push(format!("all {name}")),
                _ => {}
            }
        }
        let mut s = String::new();
        if !keeps.is_empty() {
            s = format!("{} snapshots", keeps.join(", "));
        }
        let wnames = ["hourly", "daily", "weekly", "monthly", "yearly"];
        for ((d, _, _), name) in self.withins().iter().zip(wnames) {
            if !d.is_zero() {
                if !s.is_empty() {
                    s.push_str(", ");
                }
                s.push_str(&format!("{name} snapshots within {d}"));
            }
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list(l)).collect();
            s.push_str(&format!("all snapshots with tags [{}]", lists.join(" ")));
        }
        if !self.within.is_zero() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        write!(f, "keep {s}")
    }
}

/// `[a, b]`, as restic prints a tag list.
fn tag_list(l: &[String]) -> String {
    format!("[{}]", l.join(", "))
}

/// Which snapshot properties form a group (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    /// A comma-separated list of `host`, `paths`, `tags` (singular forms too); empty means one
    /// group of everything.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',') {
            match part.trim() {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                other => {
                    return Err(Error::InvalidInput(format!(
                        "unknown grouping option {other:?} (use a comma-separated list of host, paths, tags, or \"\")"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// The key of a group: the grouped-by properties (paths and tags sorted), `None` for those not
/// grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl GroupBy {
    pub fn key(&self, s: &SnapshotInfo) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: self.host.then(|| s.host.clone()),
            paths: self.paths.then(|| sorted(&s.paths)),
            tags: self.tags.then(|| sorted(&s.tags)),
        }
    }
}

/// Which snapshots `forget` considers at all (the others are neither kept nor removed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// The snapshot's host is one of these (any, if empty).
    pub hosts: Vec<String>,
    /// The snapshot has every one of these tags (as `cairn snapshots --tag`).
    pub tags: Vec<String>,
    /// The snapshot has every one of these paths.
    pub paths: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    pub fn matches(&self, s: &SnapshotInfo) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// A snapshot a policy keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Index into the slice given to [`apply_policy`] / [`plan`].
    pub index: usize,
    /// Every rule that keeps it, worded as restic does ("daily snapshot", "within 7d", ...).
    pub matches: Vec<String>,
    /// The counts left after it was judged.
    pub counters: Counters,
}

/// The decision for one group: both lists newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    pub key: GroupKey,
    pub keep: Vec<Kept>,
    /// Indices into the slice given to [`plan`].
    pub remove: Vec<usize>,
}

/// The calendar periods a time falls in, in `tz`.
#[derive(Debug, Clone, Copy)]
struct Periods {
    hour: i64,
    day: i64,
    week: i64,
    month: i64,
    year: i64,
}

fn periods(t: Timestamp, tz: &TimeZone) -> Periods {
    let Some(j) = t.to_jiff() else {
        // Outside jiff's range (years beyond +-9999): one period of its own, by seconds.
        let s = t.secs;
        return Periods {
            hour: s,
            day: s,
            week: s,
            month: s,
            year: s,
        };
    };
    let z = j.to_zoned_datetime(tz.clone());
    let (y, m, d, h) = (
        z.year() as i64,
        z.month() as i64,
        z.day() as i64,
        z.hour() as i64,
    );
    let iso = z.date().iso_week_date();
    Periods {
        hour: ((y * 100 + m) * 100 + d) * 100 + h,
        day: (y * 100 + m) * 100 + d,
        week: iso.year() as i64 * 100 + iso.week() as i64,
        month: y * 100 + m,
        year: y,
    }
}

impl Periods {
    fn of(&self, p: Period, nr: usize) -> i64 {
        match p {
            Period::Each => nr as i64,
            Period::Hour => self.hour,
            Period::Day => self.day,
            Period::Week => self.week,
            Period::Month => self.month,
            Period::Year => self.year,
        }
    }
}

/// `latest - d` as restic computes it: Go's `AddDate(-years, -months, -days)` on the wall clock
/// in `tz` (months roll over into years, days into months, so 31 March - 1m = "31 February"
/// = 3 March), then minus `hours` of elapsed time. `None` when that is before anything jiff can
/// represent: every snapshot is then within.
fn within_threshold(latest: Timestamp, d: &Duration, tz: &TimeZone) -> Option<Timestamp> {
    let z = latest.to_jiff()?.to_zoned_datetime(tz.clone());
    let months =
        z.year() as i64 * 12 + (z.month() as i64 - 1) - d.months as i64 - d.years as i64 * 12;
    let year = i16::try_from(months.div_euclid(12)).ok()?;
    let month = (months.rem_euclid(12) + 1) as i8;
    let first = jiff::civil::Date::new(year, month, 1).ok()?;
    let days = z.day() as i64 - 1 - d.days as i64;
    let date = first
        .checked_add(jiff::Span::new().try_days(days).ok()?)
        .ok()?;
    let wall = date.to_datetime(z.time());
    let ts = wall.to_zoned_datetime(tz.clone()).ok()?.timestamp();
    let ts = ts
        .checked_sub(jiff::SignedDuration::from_hours(d.hours as i64))
        .ok()?;
    Some(Timestamp::from_jiff(ts))
}

/// Whether `t` is strictly after the threshold (`None`: before every time).
fn after(t: Timestamp, threshold: Option<Timestamp>) -> bool {
    threshold.is_none_or(|th| t > th)
}

/// Newest first; equal times by id, highest first (the reverse of `cairn snapshots`).
fn newest_first(snaps: &[SnapshotInfo], idx: &mut [usize]) {
    idx.sort_by(|&a, &b| {
        snaps[b]
            .time
            .cmp(&snaps[a].time)
            .then(snaps[b].id.cmp(&snaps[a].id))
    });
}

/// Apply `policy` to one group: the snapshots of `snaps` at `members`. Returns what is kept
/// (with reasons) and what is removed, both newest first. `now` bounds which snapshot counts
/// as the latest for the `within` rules (one in the future does not). An empty policy keeps
/// everything, with the reason "policy is empty" (callers refuse it before getting here).
pub fn apply_policy(
    snaps: &[SnapshotInfo],
    members: &[usize],
    policy: &Policy,
    tz: &TimeZone,
    now: Timestamp,
) -> (Vec<Kept>, Vec<usize>) {
    let mut order = members.to_vec();
    newest_first(snaps, &mut order);
    if policy.is_empty() {
        let keep = order
            .into_iter()
            .map(|index| Kept {
                index,
                matches: vec!["policy is empty".into()],
                counters: Counters::default(),
            })
            .collect();
        return (keep, Vec::new());
    }
    // The newest snapshot that is not in the future; none: every snapshot is within.
    let latest = order
        .iter()
        .map(|&i| snaps[i].time)
        .filter(|t| *t < now)
        .max();
    let threshold = |d: &Duration| latest.and_then(|l| within_threshold(l, d, tz));
    let within = (!policy.within.is_zero()).then(|| threshold(&policy.within));

    let mut counts = policy.counts().map(|(c, p, r)| (c, p, r, None::<i64>));
    let mut withins = policy
        .withins()
        .map(|(d, p, r)| (d, p, r, threshold(&d), None::<i64>));

    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for (nr, &i) in order.iter().enumerate() {
        let s = &snaps[i];
        let per = periods(s.time, tz);
        let mut matches = Vec::new();
        for l in &policy.tags {
            if l.iter().all(|t| s.tags.contains(t)) {
                matches.push(format!("has tags {}", tag_list(l)));
            }
        }
        if let Some(th) = within
            && after(s.time, th)
        {
            matches.push(format!("within {}", policy.within));
        }
        for (count, period, reason, last) in counts.iter_mut() {
            if !count.active() {
                continue;
            }
            let val = per.of(*period, nr);
            if *last != Some(val) {
                *last = Some(val);
                *count = count.spend();
                matches.push((*reason).to_string());
            }
        }
        for (d, period, reason, th, last) in withins.iter_mut() {
            if d.is_zero() || !after(s.time, *th) {
                continue;
            }
            let val = per.of(*period, nr);
            if *last != Some(val) {
                *last = Some(val);
                matches.push(format!("{reason} {d}"));
            }
        }
        if matches.is_empty() {
            remove.push(i);
        } else {
            let c = |k: usize| counts[k].0;
            keep.push(Kept {
                index: i,
                matches,
                counters: Counters {
                    last: c(0),
                    hourly: c(1),
                    daily: c(2),
                    weekly: c(3),
                    monthly: c(4),
                    yearly: c(5),
                },
            });
        }
    }
    (keep, remove)
}

/// Filter, group and apply `policy` to each group. Groups come in the order of their keys.
pub fn plan(
    snaps: &[SnapshotInfo],
    filter: &Filter,
    group_by: GroupBy,
    policy: &Policy,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<GroupPlan> {
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, s) in snaps.iter().enumerate() {
        if filter.matches(s) {
            groups.entry(group_by.key(s)).or_default().push(i);
        }
    }
    groups
        .into_iter()
        .map(|(key, members)| {
            let (keep, remove) = apply_policy(snaps, &members, policy, tz, now);
            GroupPlan { key, keep, remove }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// "YYYY-MM-DD HH:MM:SS" in UTC.
    fn t(s: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = s.replacen(' ', "T", 1).parse().unwrap();
        Timestamp::from_jiff(dt.to_zoned_datetime(TimeZone::UTC).unwrap().timestamp())
    }

    fn snap(n: u8, time: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: Id([n; 32]),
            time: t(time),
            host: "h".into(),
            paths: vec!["/p".into()],
            tags: vec![],
        }
    }

    fn far_future() -> Timestamp {
        t("2100-01-01 00:00:00")
    }

    /// The kept snapshots' ids (first byte), newest first.
    fn kept(snaps: &[SnapshotInfo], p: &Policy) -> Vec<u8> {
        let all: Vec<usize> = (0..snaps.len()).collect();
        let (keep, remove) = apply_policy(snaps, &all, p, &utc(), far_future());
        assert_eq!(keep.len() + remove.len(), snaps.len());
        keep.iter().map(|k| snaps[k.index].id.0[0]).collect()
    }

    fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    fn series() -> Vec<SnapshotInfo> {
        vec![
            snap(1, "2025-12-30 10:00:00"), // Tue, ISO 2026-W01
            snap(2, "2025-12-31 23:59:59"), // Wed, ISO 2026-W01, last of 2025
            snap(3, "2026-01-01 00:00:00"), // Thu, ISO 2026-W01
            snap(4, "2026-01-01 00:30:00"),
            snap(5, "2026-01-01 01:00:00"),
            snap(6, "2026-01-04 12:00:00"), // Sun, ISO 2026-W01
            snap(7, "2026-01-05 08:00:00"), // Mon, ISO 2026-W02
            snap(8, "2026-02-01 08:00:00"),
            snap(9, "2026-03-31 08:00:00"),
        ]
    }

    #[test]
    fn count_policies_keep_the_newest_of_each_period() {
        let s = series();
        assert_eq!(kept(&s, &policy(|p| p.last = Count::N(3))), [9, 8, 7]);
        assert_eq!(kept(&s, &policy(|p| p.hourly = Count::N(4))), [9, 8, 7, 6]);
        // 01:00 and 00:30 are different hours; 00:30 and 00:00 the same.
        assert_eq!(
            kept(&s, &policy(|p| p.hourly = Count::N(7))),
            [9, 8, 7, 6, 5, 4, 2]
        );
        assert_eq!(
            kept(&s, &policy(|p| p.daily = Count::N(10))),
            [9, 8, 7, 6, 5, 2, 1]
        );
        // ISO weeks: 30 Dec 2025 .. 4 Jan 2026 are all week 1 of 2026.
        assert_eq!(kept(&s, &policy(|p| p.weekly = Count::N(10))), [9, 8, 7, 6]);
        assert_eq!(
            kept(&s, &policy(|p| p.monthly = Count::N(10))),
            [9, 8, 7, 2]
        );
        assert_eq!(kept(&s, &policy(|p| p.yearly = Count::N(10))), [9, 2]);
        assert_eq!(kept(&s, &policy(|p| p.yearly = Count::N(1))), [9]);
    }

    #[test]
    fn a_snapshot_is_kept_if_any_policy_keeps_it_with_all_reasons() {
        let s = series();
        let p = policy(|p| {
            p.last = Count::N(1);
            p.daily = Count::N(2);
            p.yearly = Count::N(2);
        });
        let all: Vec<usize> = (0..s.len()).collect();
        let (keep, remove) = apply_policy(&s, &all, &p, &utc(), far_future());
        let ids: Vec<u8> = keep.iter().map(|k| s[k.index].id.0[0]).collect();
        assert_eq!(ids, [9, 8, 2]);
        assert_eq!(
            keep[0].matches,
            ["last snapshot", "daily snapshot", "yearly snapshot"]
        );
        assert_eq!(keep[0].counters.last, Count::N(0));
        assert_eq!(keep[0].counters.daily, Count::N(1));
        assert_eq!(keep[1].matches, ["daily snapshot"]);
        assert_eq!(keep[2].matches, ["yearly snapshot"]);
        assert_eq!(keep[2].counters.yearly, Count::N(0));
        let removed: Vec<u8> = remove.iter().map(|&i| s[i].id.0[0]).collect();
        assert_eq!(removed, [7, 6, 5, 4, 3, 1]);
    }

    #[test]
    fn unlimited_keeps_every_period() {
        let s = series();
        assert_eq!(
            kept(&s, &policy(|p| p.daily = Count::Unlimited)),
            [9, 8, 7, 6, 5, 2, 1]
        );
        assert_eq!(kept(&s, &policy(|p| p.last = Count::Unlimited)).len(), 9);
        assert_eq!("-1".parse::<Count>().unwrap(), Count::Unlimited);
        assert_eq!("unlimited".parse::<Count>().unwrap(), Count::Unlimited);
        assert_eq!("0".parse::<Count>().unwrap(), Count::Off);
        assert_eq!("7".parse::<Count>().unwrap(), Count::N(7));
        for bad in ["-2", "x", "", "1.5", "99999999999"] {
            assert!(bad.parse::<Count>().is_err(), "{bad}");
        }
    }

    #[test]
    fn within_is_relative_to_the_latest_and_strict() {
        let s = series();
        // Latest is 31 March 08:00; 1m back is "31 February" = 3 March 08:00: nothing between.
        let p = policy(|p| p.within = "1m".parse().unwrap());
        assert_eq!(kept(&s, &p), [9]);
        // 2m back is 31 January 08:00: 1 February is after it.
        let p = policy(|p| p.within = "2m".parse().unwrap());
        assert_eq!(kept(&s, &p), [9, 8]);
        // Exactly on the threshold is not within: 31 March 08:00 - 85d 20h = 4 Jan 12:00.
        let p = policy(|p| p.within = "85d20h".parse().unwrap());
        assert_eq!(kept(&s, &p), [9, 8, 7]);
        let p = policy(|p| p.within = "85d21h".parse().unwrap());
        assert_eq!(kept(&s, &p), [9, 8, 7, 6]);
        // A huge duration keeps everything.
        let p = policy(|p| p.within = "30000y".parse().unwrap());
        assert_eq!(kept(&s, &p).len(), 9);
    }

    #[test]
    fn within_ignores_snapshots_in_the_future_when_finding_the_latest() {
        let s = series();
        let all: Vec<usize> = (0..s.len()).collect();
        let p = policy(|p| p.within = "2d".parse().unwrap());
        // "Now" is 2 Feb: the 31 March snapshot is in the future; latest is 1 Feb 08:00.
        let (keep, _) = apply_policy(&s, &all, &p, &utc(), t("2026-02-02 00:00:00"));
        let ids: Vec<u8> = keep.iter().map(|k| s[k.index].id.0[0]).collect();
        assert_eq!(ids, [9, 8]);
        // Everything in the future: every snapshot is within.
        let (keep, _) = apply_policy(&s, &all, &p, &utc(), t("2000-01-01 00:00:00"));
        assert_eq!(keep.len(), 9);
    }

    #[test]
    fn within_periods_keep_the_newest_of_each_period_inside_the_window() {
        let s = series();
        let p = policy(|p| p.within_daily = "90d".parse().unwrap());
        // Window starts 31 Dec 08:00 (exclusive): 30 Dec is outside.
        assert_eq!(kept(&s, &p), [9, 8, 7, 6, 5, 2]);
        let all: Vec<usize> = (0..s.len()).collect();
        let (keep, _) = apply_policy(&s, &all, &p, &utc(), far_future());
        assert_eq!(keep[0].matches, ["daily within 90d"]);
        let p = policy(|p| {
            p.within_monthly = "1y".parse().unwrap();
            p.within_weekly = "3m".parse().unwrap();
        });
        // Monthly: the newest of March, February, January, December; weekly within 3 months
        // (after 31 Dec 08:00): the newest of ISO weeks 14, 5, 2, 1.
        assert_eq!(kept(&s, &p), [9, 8, 7, 6, 2]);
    }

    #[test]
    fn keep_tag_lists_need_every_tag_of_one_list() {
        let mut s = series();
        s[0].tags = vec!["a".into(), "b".into()];
        s[1].tags = vec!["a".into()];
        s[2].tags = vec!["c".into()];
        let p = policy(|p| p.tags = vec![vec!["a".into(), "b".into()], vec!["c".into()]]);
        assert_eq!(kept(&s, &p), [3, 1]);
        let all: Vec<usize> = (0..s.len()).collect();
        let (keep, _) = apply_policy(&s, &all, &p, &utc(), far_future());
        assert_eq!(keep[1].matches, ["has tags [a, b]"]);
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let s = vec![
            snap(5, "2026-01-01 10:00:00"),
            snap(9, "2026-01-01 10:00:00"),
            snap(7, "2026-01-01 10:00:00"),
        ];
        assert_eq!(kept(&s, &policy(|p| p.daily = Count::N(1))), [9]);
        assert_eq!(kept(&s, &policy(|p| p.last = Count::N(2))), [9, 7]);
    }

    #[test]
    fn periods_are_those_of_the_given_time_zone() {
        let s = vec![
            snap(1, "2026-01-01 21:30:00"),
            snap(2, "2026-01-01 22:30:00"),
        ];
        let all = [0, 1];
        let p = policy(|p| p.daily = Count::N(10));
        let (keep, _) = apply_policy(&s, &all, &p, &utc(), far_future());
        assert_eq!(keep.len(), 1, "one UTC day");
        // At +02:00 they are 23:30 on 1 January and 00:30 on 2 January: two days.
        let east = TimeZone::fixed(jiff::tz::offset(2));
        let (keep, _) = apply_policy(&s, &all, &p, &east, far_future());
        assert_eq!(keep.len(), 2, "two days at +02:00");
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let s = series();
        let p = Policy::default();
        assert!(p.is_empty());
        assert!(policy(|p| p.last = Count::N(0)).is_empty());
        assert!(!policy(|p| p.tags = vec![vec!["x".into()]]).is_empty());
        assert!(!policy(|p| p.within_hourly.hours = 1).is_empty());
        assert_eq!(kept(&s, &p).len(), 9);
    }

    #[test]
    fn durations_parse_like_restic_but_strictly() {
        let d: Duration = "1y2m3d4h".parse().unwrap();
        assert_eq!(
            d,
            Duration {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(d.to_string(), "1y2m3d4h");
        assert_eq!("4h1y".parse::<Duration>().unwrap().to_string(), "1y4h");
        assert_eq!(" 7d ".parse::<Duration>().unwrap().days, 7);
        assert!("0d".parse::<Duration>().unwrap().is_zero());
        for bad in [
            "",
            "3",
            "3x",
            "d",
            "-1d",
            "1d1d",
            "1.5d",
            "99999999999d",
            "1dd",
            "1d٣h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn go_adddate_normalisation() {
        let tz = utc();
        let d = |s: &str| s.parse::<Duration>().unwrap();
        let at = |s: &str, dur: &str| within_threshold(t(s), &d(dur), &tz).unwrap();
        assert_eq!(at("2026-03-31 08:00:00", "1m"), t("2026-03-03 08:00:00"));
        assert_eq!(at("2024-03-31 08:00:00", "1m"), t("2024-03-02 08:00:00"));
        assert_eq!(at("2024-02-29 00:00:00", "1y"), t("2023-03-01 00:00:00"));
        assert_eq!(
            at("2026-01-10 05:00:00", "1y13m10d6h"),
            t("2023-11-29 23:00:00")
        );
    }

    #[test]
    fn grouping_and_filters() {
        let mk = |n: u8, host: &str, paths: &[&str], tags: &[&str], time: &str| SnapshotInfo {
            id: Id([n; 32]),
            time: t(time),
            host: host.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        };
        let s = vec![
            mk(1, "a", &["/x", "/y"], &["n"], "2026-01-01 00:00:00"),
            mk(2, "a", &["/y", "/x"], &[], "2026-01-02 00:00:00"),
            mk(3, "b", &["/x"], &["n"], "2026-01-03 00:00:00"),
            mk(4, "a", &["/x"], &["n", "m"], "2026-01-04 00:00:00"),
        ];
        let last1 = policy(|p| p.last = Count::N(1));
        let run = |f: &Filter, g: GroupBy| {
            plan(&s, f, g, &last1, &utc(), far_future())
                .into_iter()
                .map(|g| {
                    let k: Vec<u8> = g.keep.iter().map(|k| s[k.index].id.0[0]).collect();
                    let r: Vec<u8> = g.remove.iter().map(|&i| s[i].id.0[0]).collect();
                    (g.key, k, r)
                })
                .collect::<Vec<_>>()
        };
        let all = Filter::default();
        // Default host,paths: path order does not matter.
        let g = run(&all, GroupBy::default());
        assert_eq!(g.len(), 3);
        assert_eq!(
            g[0].0,
            GroupKey {
                host: Some("a".into()),
                paths: Some(vec!["/x".into()]),
                tags: None
            }
        );
        assert_eq!((g[1].1.clone(), g[1].2.clone()), (vec![2], vec![1]));
        let g = run(&all, "".parse().unwrap());
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].1.clone(), g[0].2.clone()), (vec![4], vec![3, 2, 1]));
        let g = run(&all, "host".parse().unwrap());
        assert_eq!(g.len(), 2);
        let g = run(&all, "tags".parse().unwrap());
        assert_eq!(g.len(), 3);
        let g = run(&all, "tag,host,paths".parse().unwrap());
        assert_eq!(g.len(), 4);
        assert!("host,bogus".parse::<GroupBy>().is_err());
        // Filters: hosts any, tags all, paths all.
        let f = Filter {
            hosts: vec!["b".into(), "a".into()],
            tags: vec!["n".into()],
            paths: vec!["/x".into()],
        };
        let g = run(&f, "".parse().unwrap());
        assert_eq!((g[0].1.clone(), g[0].2.clone()), (vec![4], vec![3, 1]));
        let f = Filter {
            paths: vec!["/x".into(), "/y".into()],
            ..Filter::default()
        };
        let g = run(&f, "".parse().unwrap());
        assert_eq!((g[0].1.clone(), g[0].2.clone()), (vec![2], vec![1]));
    }

    #[test]
    fn policy_summary_reads_like_restic() {
        let p = policy(|p| {
            p.last = Count::N(1);
            p.daily = Count::N(2);
            p.weekly = Count::Unlimited;
            p.within_weekly = "3y".parse().unwrap();
            p.tags = vec![vec!["a".into()]];
            p.within = "2d".parse().unwrap();
        });
        assert_eq!(
            p.to_string(),
            "keep 1 latest, 2 daily, all weekly snapshots, weekly snapshots within 3y and \
             all snapshots with tags [[a]] and all snapshots within 2d of the newest"
        );
    }
}
