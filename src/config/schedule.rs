//! When the daemon runs what: cron schedules (crontab's five fields, or six with seconds
//! first; `@daily` and the other shorthands), each in a time zone (UTC by default), parsed by
//! the `jiff-cron` crate. Crontab's numbered days of the week (0 or 7 Sunday, 1 Monday...) are
//! translated to names, as `jiff-cron` counts them from 1 = Sunday. Both day fields given
//! means both must match (the crate's rule), not either as in Vixie cron.
//!
//! A fire time is missed when the daemon was not running at it; at start-up the latest missed
//! one runs once if it is within `catch-up` of now.

use std::str::FromStr;
use std::time::Duration;

use jiff_cron::jiff as cronjiff;

use crate::error::{Error, Result};

/// A parsed schedule and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written.
    pub expression: String,
    pub timezone: String,
    cron: jiff_cron::Schedule,
    tz: cronjiff::tz::TimeZone,
}

/// Crontab's day-of-week numbers as names.
fn day_names(field: &str) -> String {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let name = |s: &str| match s.parse::<usize>() {
        Ok(n) if n < NAMES.len() => NAMES[n].to_string(),
        _ => s.to_string(),
    };
    field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let range = match range.split_once('-') {
                Some((a, b)) => format!("{}-{}", name(a), name(b)),
                None => name(range),
            };
            match step {
                Some(s) => format!("{range}/{s}"),
                None => range,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Schedule {
    /// `expression` in time zone `timezone` (an IANA name such as `Europe/Berlin`, or `UTC`).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule> {
        let e = expression.trim();
        let fields: Vec<&str> = e.split_whitespace().collect();
        let full = match fields.len() {
            // Crontab: minute hour day-of-month month day-of-week.
            5 => format!(
                "0 {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                day_names(fields[4])
            ),
            // With seconds first.
            6 => format!(
                "{} {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                fields[4],
                day_names(fields[5])
            ),
            1 if e.starts_with('@') => e.to_string(),
            _ => {
                return Err(Error::invalid(format!(
                    "schedule {e:?}: give five fields (minute hour day month weekday), six \
                     with seconds first, or @daily/@weekly/@monthly/@hourly/@yearly"
                )));
            }
        };
        let cron = jiff_cron::Schedule::from_str(&full)
            .map_err(|err| Error::invalid(format!("schedule {e:?}: {err}")))?;
        let tz_name = timezone.unwrap_or("UTC");
        let tz = if tz_name == "UTC" {
            cronjiff::tz::TimeZone::UTC
        } else {
            cronjiff::tz::TimeZone::get(tz_name)
                .map_err(|err| Error::invalid(format!("time zone {tz_name:?}: {err}")))?
        };
        Ok(Schedule {
            expression: e.to_string(),
            timezone: tz_name.to_string(),
            cron,
            tz,
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let start = cronjiff::Timestamp::from_second(t.as_second())
            .ok()?
            .to_zoned(self.tz.clone());
        let next = self.cron.after(start).next()?;
        jiff::Timestamp::from_second(next.timestamp().as_second()).ok()
    }

    /// The latest fire time in `(since, now]`, looking back at most `window` from `now`.
    pub fn latest_in(
        &self,
        since: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
        window: Duration,
    ) -> Option<jiff::Timestamp> {
        let floor = now.as_second() - window.as_secs() as i64;
        let from = since.map_or(floor, |s| s.as_second().max(floor));
        let mut t = jiff::Timestamp::from_second(from).ok()?;
        let mut latest = None;
        // Fire times come in order; stop at the first after now.
        for _ in 0..100_000 {
            match self.next_after(t) {
                Some(n) if n <= now => {
                    latest = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn crontab_lines_fire_when_cron_would() {
        let daily = Schedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(
            daily.next_after(ts("2026-12-03T01:59:59Z")),
            Some(ts("2026-12-03T02:00:00Z"))
        );
        assert_eq!(
            daily.next_after(ts("2026-12-03T02:00:00Z")),
            Some(ts("2026-12-04T02:00:00Z"))
        );
        // Sunday at 01:00: 2026-12-06 is a Sunday; 0 and 7 and SUN alike.
        for e in ["0 1 * * 0", "0 1 * * 7", "0 1 * * SUN", "0 1 * * sun"] {
            let s = Schedule::parse(e, None).unwrap();
            assert_eq!(
                s.next_after(ts("2026-12-03T00:00:00Z")),
                Some(ts("2026-12-06T01:00:00Z")),
                "{e}"
            );
        }
        // Weekdays: Friday 2026-12-04, then Monday 2026-12-07.
        let wd = Schedule::parse("30 6 * * 1-5", None).unwrap();
        assert_eq!(
            wd.next_after(ts("2026-12-04T07:00:00Z")),
            Some(ts("2026-12-07T06:30:00Z"))
        );
        // The 1st at 03:00.
        let monthly = Schedule::parse("0 3 1 * *", None).unwrap();
        assert_eq!(
            monthly.next_after(ts("2026-12-03T00:00:00Z")),
            Some(ts("2027-01-01T03:00:00Z"))
        );
        // Seconds first.
        let s = Schedule::parse("*/5 * * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-12-03T00:00:01Z")),
            Some(ts("2026-12-03T00:00:05Z"))
        );
        assert!(Schedule::parse("@daily", None).is_ok());
    }

    #[test]
    fn time_zones_move_the_wall_clock() {
        // 02:00 in Berlin is 01:00 UTC in winter.
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-12-03T00:00:00Z")),
            Some(ts("2026-12-03T01:00:00Z"))
        );
        assert!(Schedule::parse("0 2 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn bad_expressions_are_named() {
        for e in ["", "0 2 * *", "61 2 * * *", "0 2 * * FUNDAY", "a b c d e"] {
            let err = Schedule::parse(e, None).unwrap_err().to_string();
            assert!(err.contains("schedule"), "{e}: {err}");
        }
    }

    #[test]
    fn the_latest_missed_fire_within_the_window() {
        let s = Schedule::parse("0 2 * * *", None).unwrap();
        let now = ts("2026-12-03T05:00:00Z");
        let six = Duration::from_secs(6 * 3600);
        assert_eq!(
            s.latest_in(None, now, six),
            Some(ts("2026-12-03T02:00:00Z"))
        );
        // Already fired at 02:00: nothing missed.
        assert_eq!(
            s.latest_in(Some(ts("2026-12-03T02:00:00Z")), now, six),
            None
        );
        // Down since two days: only the latest counts, and only within the window.
        assert_eq!(
            s.latest_in(Some(ts("2026-12-01T02:00:00Z")), now, six),
            Some(ts("2026-12-03T02:00:00Z"))
        );
        assert_eq!(
            s.latest_in(None, ts("2026-12-03T09:00:00Z"), six),
            None,
            "02:00 is 7h before 09:00"
        );
    }
}
