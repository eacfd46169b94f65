//! Cron expressions as crontab reads them, and their fire times in a time zone.
//!
//! Five fields (minute hour day-of-month month day-of-week) or six (seconds first), or one of
//! crontab's `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. The day of the week is
//! crontab's: 0 to 7, 0 and 7 both Sunday, or names. When both day fields are restricted (neither
//! starts with `*`), a day matches either, as in crontab (`0 9 1 * MON`: the 1st, and Mondays).
//! The `cron` crate matches the fields (its weekdays count from 1, Sunday, and it requires both
//! days to match); this module translates to it.
//!
//! Fire times are wall-clock times in a zone, placed on real instants across daylight-saving
//! changes: a time in the spring gap fires at the first valid instant after it (the end of the
//! gap), a time in the autumn overlap fires once, at its first occurrence.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Cron {
    /// As written.
    expression: String,
    /// One schedule, or two when either day field may match (crontab's rule).
    parts: Vec<cron::Schedule>,
}

const WEEKDAYS: [[&str; 3]; 7] = [
    ["sun", "sunday", "sun"],
    ["mon", "monday", "mon"],
    ["tue", "tuesday", "tues"],
    ["wed", "wednesday", "wed"],
    ["thu", "thursday", "thurs"],
    ["fri", "friday", "fri"],
    ["sat", "saturday", "sat"],
];

fn macro_fields(expr: &str) -> Option<&'static str> {
    Some(match expr {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// A day of the week in crontab's numbering (0 to 7, or a name) as 0 (Sunday) to 6.
fn weekday(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = WEEKDAYS.iter().position(|names| names.contains(&lower.as_str())) {
        return Ok(i as u8);
    }
    match s.parse::<u8>() {
        Ok(n @ 0..=7) => Ok(n % 7),
        _ => Err(format!(
            "`{s}` is not a day of the week (0 to 7, 0 and 7 are Sunday, or SUN to SAT)"
        )),
    }
}

/// The days a day-of-week field names (0 = Sunday); `None` for every day.
fn weekday_set(field: &str) -> Result<Option<BTreeSet<u8>>, String> {
    if field == "*" || field == "?" {
        return Ok(None);
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u8>() {
                Ok(s @ 1..=7) => (r, s),
                _ => return Err(format!("`{item}`: the step after `/` must be 1 to 7")),
            },
            None => (item, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => {
                let (a, b) = (weekday(a)?, weekday(b)?);
                // `5-7` is Friday to Sunday: 7 closes the week.
                let b = if b == 0 && a > 0 { 7 } else { b };
                if a > b {
                    return Err(format!("`{range}` runs backwards"));
                }
                (a, b)
            }
            None if step > 1 => (weekday(range)?, 6),
            None => {
                let d = weekday(range)?;
                (d, d)
            }
        };
        days.extend((lo..=hi).step_by(step as usize).map(|d| d % 7));
    }
    Ok(Some(days))
}

/// Whether a day field is restricted in crontab's sense: it does not start with `*`.
fn restricted(field: &str) -> bool {
    !field.starts_with('*') && field != "?"
}

impl Cron {
    /// Parses 5 or 6 fields (or an `@` macro); the error names what is wrong.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let trimmed = expr.trim();
        let text = macro_fields(trimmed).unwrap_or(trimmed);
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "`{expr}` has {n} field{}; write 5 (minute hour day month weekday) or 6 (second minute hour day month weekday)",
                    if n == 1 { "" } else { "s" }
                ))
            }
        };
        let [min, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        let days = weekday_set(dow).map_err(|e| format!("`{expr}`: day of the week {e}"))?;
        let ordinals = match &days {
            None => "*".to_string(),
            Some(set) => set
                .iter()
                .map(|d| (d + 1).to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let texts = if restricted(dom) && restricted(dow) {
            vec![
                format!("{sec} {min} {hour} {dom} {month} *"),
                format!("{sec} {min} {hour} * {month} {ordinals}"),
            ]
        } else {
            vec![format!("{sec} {min} {hour} {dom} {month} {ordinals}")]
        };
        let parts = texts
            .iter()
            .map(|t| cron::Schedule::from_str(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`{expr}` is not a valid cron expression: {e}"))?;
        let c = Cron {
            expression: expr.to_string(),
            parts,
        };
        if c.next_wall(Utc::now().naive_utc()).is_none() {
            return Err(format!("`{expr}` never fires (no such date)"));
        }
        Ok(c)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first wall-clock fire time after `t`.
    pub fn next_wall(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = Utc.from_utc_datetime(&t);
        self.parts
            .iter()
            .filter_map(|s| s.after(&at).next())
            .min()
            .map(|d| d.naive_utc())
    }

    /// The last wall-clock fire time at or before `t`.
    fn last_wall(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = Utc.from_utc_datetime(&(t + TimeDelta::seconds(1)));
        self.parts
            .iter()
            .filter_map(|s| s.after(&at).next_back())
            .max()
            .map(|d| d.naive_utc())
    }

    /// The first fire instant after `t`, the fields read in `tz`.
    pub fn next_after(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = self.next_wall(local(tz, t) - TimeDelta::hours(3))?;
        // Wall times map onto instants in order; the margin covers an overlap's repeated hour.
        for _ in 0..100_000 {
            let at = place(tz, wall);
            if at > t {
                return Some(at);
            }
            wall = self.next_wall(wall)?;
        }
        None
    }

    /// The latest fire instant at or before `t`, the fields read in `tz`.
    pub fn last_at_or_before(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let wall_now = local(tz, t);
        let mut best = self.last_wall(wall_now).map(|w| place(tz, w));
        // In the second pass through an overlap, later wall times were placed earlier.
        let mut wall = wall_now;
        while let Some(w) = self
            .next_wall(wall)
            .filter(|w| *w <= wall_now + TimeDelta::hours(3))
        {
            let at = place(tz, w);
            if at > t {
                break;
            }
            best = Some(at);
            wall = w;
        }
        best
    }
}

/// The wall-clock time in `tz` at `t`.
fn local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The instant a wall-clock time stands for in `tz`: the first occurrence of a repeated time,
/// and for a time that does not exist (a spring gap), the first instant after it.
pub fn place(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are whole minutes (at most a day, Samoa 2011): the first minute that exists
            // is the gap's end.
            use chrono::Timelike;
            let mut m = wall
                .with_second(0)
                .and_then(|m| m.with_nanosecond(0))
                .unwrap_or(wall);
            for _ in 0..=1440 {
                m += TimeDelta::minutes(1);
                if let Some(t) = tz.from_local_datetime(&m).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            wall.and_utc()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn next_utc(c: &Cron, s: &str) -> String {
        c.next_after(Tz::UTC, utc(s)).unwrap().to_rfc3339()
    }

    #[test]
    fn five_or_six_fields_and_nothing_else() {
        assert!(Cron::parse("*/5 * * * *").is_ok());
        assert!(Cron::parse("30 */5 * * * *").is_ok());
        let e = Cron::parse("0 0 0 1 1 * 2020").unwrap_err();
        assert!(e.contains("has 7 fields"), "{e}");
        let e = Cron::parse("* * * *").unwrap_err();
        assert!(e.contains("has 4 fields"), "{e}");
        let e = Cron::parse("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        let e = Cron::parse("0 9 * * 8").unwrap_err();
        assert!(e.contains("`8` is not a day of the week"), "{e}");
        let e = Cron::parse("0 9 * * FRI-MON").unwrap_err();
        assert!(e.contains("runs backwards"), "{e}");
    }

    #[test]
    fn weekdays_count_as_crontab_does() {
        // 2026-12-04 is a Friday. `1-5` is Monday to Friday; 0 and 7 are Sunday.
        let weekdays = Cron::parse("0 9 * * 1-5").unwrap();
        assert_eq!(
            next_utc(&weekdays, "2026-12-04T10:00:00Z"),
            "2026-12-07T09:00:00+00:00"
        );
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN", "0 9 * * sunday"] {
            let c = Cron::parse(sunday).unwrap();
            assert_eq!(
                next_utc(&c, "2026-12-04T10:00:00Z"),
                "2026-12-06T09:00:00+00:00",
                "{sunday}"
            );
        }
        let weekend = Cron::parse("0 9 * * 6-7").unwrap();
        assert_eq!(
            next_utc(&weekend, "2026-12-06T10:00:00Z"),
            "2026-12-12T09:00:00+00:00"
        );
        let every_other = Cron::parse("0 9 * * */2").unwrap();
        // Sunday, Tuesday, Thursday, Saturday.
        assert_eq!(
            next_utc(&every_other, "2026-12-04T10:00:00Z"),
            "2026-12-05T09:00:00+00:00"
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either_one() {
        // The 1st of the month, and every Monday: after Friday 2026-12-04, Monday the 7th; after
        // Monday 2026-12-28, Friday 2027-01-01.
        let c = Cron::parse("0 9 1 * MON").unwrap();
        assert_eq!(next_utc(&c, "2026-12-04T10:00:00Z"), "2026-12-07T09:00:00+00:00");
        assert_eq!(next_utc(&c, "2026-12-28T10:00:00Z"), "2027-01-01T09:00:00+00:00");
        // A day field starting with `*` restricts with the other (both must match).
        let c = Cron::parse("0 9 */2 * MON").unwrap();
        assert_eq!(next_utc(&c, "2026-12-04T10:00:00Z"), "2026-12-07T09:00:00+00:00");
        assert_eq!(next_utc(&c, "2026-12-07T10:00:00Z"), "2026-12-21T09:00:00+00:00");
    }

    #[test]
    fn seconds_and_macros() {
        let c = Cron::parse("15,45 * * * * *").unwrap();
        assert_eq!(next_utc(&c, "2026-12-04T10:00:15Z"), "2026-12-04T10:00:45+00:00");
        let c = Cron::parse("@hourly").unwrap();
        assert_eq!(next_utc(&c, "2026-12-04T10:00:00Z"), "2026-12-04T11:00:00+00:00");
        let c = Cron::parse("@weekly").unwrap();
        assert_eq!(next_utc(&c, "2026-12-04T10:00:00Z"), "2026-12-06T00:00:00+00:00");
    }

    #[test]
    fn daylight_saving_gaps_fire_at_their_end_and_overlaps_once() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let c = Cron::parse("30 2 * * *").unwrap();
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist.
        assert_eq!(
            c.next_after(ny, utc("2026-03-08T05:00:00Z")).unwrap(),
            utc("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            c.next_after(ny, utc("2026-03-08T07:00:00Z")).unwrap(),
            utc("2026-03-09T06:30:00Z")
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice, fires at the first.
        let c = Cron::parse("30 1 * * *").unwrap();
        let first = c.next_after(ny, utc("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        assert_eq!(c.next_after(ny, first).unwrap(), utc("2026-11-02T06:30:00Z"));
        // During the second 01:30 (06:30 UTC) the last start is still the first one.
        assert_eq!(
            c.last_at_or_before(ny, utc("2026-11-01T06:40:00Z")).unwrap(),
            first
        );
    }
}
