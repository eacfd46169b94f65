//! `scheduled`: windows, in a time zone, that override the bounds (raise the floor for an event)
//! and optionally set the count when they start. A window is a cron expression with a
//! `duration`, or a one-off `from`/`until`. Overrides end with their window: nothing to undo.
//!
//! While windows are active the engine uses the highest `min` and the highest `max` among them
//! (where given; the policy's otherwise). A window's `desired` is applied once, at its start.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::Policy;
use crate::config::parse_cron;
use crate::eval_io::{ActiveWindow, EvalInput, Recommendation};
use crate::read::yaml::{Node, Span, Value};
use crate::read::{join, read_named_list, Cx, FromNode, MapReader};

#[derive(Debug, Clone)]
pub enum When {
    Cron {
        expression: String,
        schedule: Box<crate::config::cron::Cron>,
        duration: Duration,
    },
    Once {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub when: When,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub desired: Option<u32>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Scheduled {
    pub timezone: Tz,
    pub windows: Vec<Window>,
}

pub(super) const KEYS: &[&str] = &["timezone", "windows"];
const WINDOW_KEYS: &[&str] = &[
    "name", "cron", "duration", "from", "until", "min", "max", "desired",
];

/// `2026-11-27T08:00`, `2026-11-27 08:00:00` (in the rule's time zone) or RFC 3339 with an offset.
/// A local time in a daylight-saving gap is the gap's end; a repeated one, its first occurrence.
fn parse_instant(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(crate::config::cron::place(tz, naive));
        }
    }
    Err(format!(
        "`{s}` is not a date and time; write e.g. 2026-11-27T08:00 (in the rule's timezone)"
    ))
}

fn read_window(node: &Node, path: &str, cx: &mut Cx, tz: Tz, index: usize) -> Option<Window> {
    let mut m = cx.map(node, path)?;
    let name = m
        .opt::<String>(cx, "name")
        .unwrap_or_else(|| format!("window-{}", index + 1));
    let cron = m.opt_with(cx, "cron", |n, p, cx| {
        let expr = String::from_node(n, p, cx)?;
        match parse_cron(&expr) {
            Ok(s) => Some((expr, s)),
            Err(e) => {
                cx.error(n.span, p, e);
                None
            }
        }
    });
    let duration = m.opt::<Duration>(cx, "duration");
    let instant = |key: &str, m: &mut MapReader<'_>, cx: &mut Cx| {
        m.opt_with(cx, key, |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            parse_instant(&s, tz).map_err(|e| cx.error(n.span, p, e)).ok()
        })
    };
    let from = instant("from", &mut m, cx);
    let until = instant("until", &mut m, cx);
    let min = m.opt::<u32>(cx, "min");
    let max = m.opt::<u32>(cx, "max");
    let desired = m.opt::<u32>(cx, "desired");
    check_when(&m, cx, path);
    check_counts(&m, cx, path, (min, max, desired));
    if let (Some(f), Some(u)) = (from, until) {
        if f >= u {
            cx.error(m.span_of("until"), &join(path, "until"), "must be after `from`");
        }
    }
    if duration.is_some_and(|d| d.is_zero()) {
        cx.error(
            m.span_of("duration"),
            &join(path, "duration"),
            "must be longer than zero",
        );
    }
    m.finish(cx, WINDOW_KEYS);
    let when = match (cron, duration, from, until) {
        (Some((expression, schedule)), Some(duration), None, None) => When::Cron {
            expression,
            schedule: Box::new(schedule),
            duration,
        },
        (None, None, Some(from), Some(until)) => When::Once { from, until },
        _ => return None,
    };
    Some(Window {
        name,
        when,
        min,
        max,
        desired,
        span: node.span,
    })
}

/// A window is repeating (`cron` with `duration`) or once (`from` and `until`), not both.
fn check_when(m: &MapReader<'_>, cx: &mut Cx, path: &str) {
    let span = m.span();
    let (has_cron, has_once) = (m.has("cron"), m.has("from") || m.has("until"));
    if has_cron == has_once {
        cx.error(
            span,
            path,
            "give `cron` with `duration` (a repeating window) or `from` and `until` (once), one of the two",
        );
    } else if has_cron && !m.has("duration") {
        cx.error(
            span,
            &join(path, "duration"),
            "a cron window needs a `duration` (e.g. 4h)",
        );
    } else if has_once && !(m.has("from") && m.has("until")) {
        cx.error(span, path, "a one-off window needs both `from` and `until`");
    }
    if m.has("duration") && !has_cron {
        cx.error(
            m.span_of("duration"),
            &join(path, "duration"),
            "only goes with `cron`",
        );
    }
}

/// A window sets a count, its `min` is not above its `max`, and its `desired` is within them.
fn check_counts(m: &MapReader<'_>, cx: &mut Cx, path: &str, counts: (Option<u32>, Option<u32>, Option<u32>)) {
    let (min, max, desired) = counts;
    let span = m.span();
    if !m.has("min") && !m.has("max") && !m.has("desired") {
        cx.error(
            span,
            path,
            "a window sets at least one of `min`, `max`, `desired`",
        );
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            cx.error(
                m.span_of("max"),
                &join(path, "max"),
                format!("is below this window's min ({lo})"),
            );
        }
    }
    for (bound, v) in [("min", min), ("max", max)] {
        if let (Some(d), Some(b)) = (desired, v) {
            let outside = if bound == "min" { d < b } else { d > b };
            if outside {
                cx.error(
                    m.span_of("desired"),
                    &join(path, "desired"),
                    format!("{d} is outside this window's {bound} ({b})"),
                );
            }
        }
    }
}

impl Scheduled {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let timezone = m
            .opt_with(cx, "timezone", |n, p, cx| {
                let s = String::from_node(n, p, cx)?;
                Tz::from_str(&s)
                    .map_err(|_| {
                        cx.error(
                            n.span,
                            p,
                            format!("unknown time zone `{s}` (an IANA name such as Europe/Paris or UTC)"),
                        )
                    })
                    .ok()
            })
            .unwrap_or(Tz::UTC);
        let windows = m.req_with(cx, "windows", |n, p, cx| {
            if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
                cx.error(n.span, p, "give at least one window");
                return None;
            }
            read_named_list(
                n,
                p,
                cx,
                ("window", "name"),
                |i, item, ip, cx| read_window(item, ip, cx, timezone, i),
                |w| &w.name,
            )
        });
        Some(Scheduled {
            timezone,
            windows: windows?,
        })
    }

    /// The windows in force at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> Vec<ActiveWindow<'_>> {
        let mut out = Vec::new();
        for w in &self.windows {
            let span = match &w.when {
                When::Once { from, until } => (*from <= now && now < *until).then_some((*from, *until)),
                When::Cron {
                    schedule, duration, ..
                } => {
                    // The latest start, if its window (in real time) still runs: a start in a
                    // daylight-saving gap at the gap's end, one in a repeated hour once.
                    let d = TimeDelta::from_std(*duration).unwrap_or(TimeDelta::MAX);
                    schedule
                        .last_at_or_before(self.timezone, now)
                        .filter(|s| now < *s + d)
                        .map(|s| (s, s + d))
                }
            };
            if let Some((started, ends)) = span {
                out.push(ActiveWindow {
                    name: &w.name,
                    started,
                    ends,
                    min: w.min,
                    max: w.max,
                    desired: w.desired,
                });
            }
        }
        out
    }
}

impl Policy for Scheduled {
    /// Scheduled rules act through the bounds (the engine reads [`Policy::windows`]); as a
    /// vote they only report what is in force.
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let active = self.active(input.now);
        if active.is_empty() {
            return Recommendation::Abstain {
                reason: "no window in force".into(),
            };
        }
        let parts: Vec<String> = active
            .iter()
            .map(|w| {
                let mut s = format!(
                    "{} until {}",
                    w.name,
                    w.ends
                        .with_timezone(&self.timezone)
                        .format("%Y-%m-%d %H:%M %Z (%:z)")
                );
                for (k, v) in [("min", w.min), ("max", w.max), ("desired", w.desired)] {
                    if let Some(v) = v {
                        s.push_str(&format!(" {k} {v}"));
                    }
                }
                s
            })
            .collect();
        Recommendation::Abstain {
            reason: format!("in force: {}", parts.join("; ")),
        }
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .windows
            .iter()
            .map(|w| {
                let when = match &w.when {
                    When::Cron {
                        expression, duration, ..
                    } => {
                        format!("`{expression}` for {}", humantime::format_duration(*duration))
                    }
                    When::Once { from, until } => format!(
                        "{} to {}",
                        from.with_timezone(&self.timezone).format("%Y-%m-%d %H:%M"),
                        until.with_timezone(&self.timezone).format("%Y-%m-%d %H:%M")
                    ),
                };
                let sets: Vec<String> = [("min", w.min), ("max", w.max), ("desired", w.desired)]
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                    .collect();
                format!("{} {when}: {}", w.name, sets.join(", "))
            })
            .collect();
        format!("scheduled ({}) {}", self.timezone, parts.join("; "))
    }

    fn windows(&self, now: DateTime<Utc>) -> Vec<ActiveWindow<'_>> {
        self.active(now)
    }

    fn is_schedule(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cron::Cron;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// One daily window `cron` of `minutes` in `zone`, with a desired count.
    fn daily(zone: &str, cron: &str, minutes: u64) -> Scheduled {
        Scheduled {
            timezone: zone.parse().unwrap(),
            windows: vec![Window {
                name: "w".into(),
                when: When::Cron {
                    expression: cron.into(),
                    schedule: Box::new(Cron::parse(cron).unwrap()),
                    duration: Duration::from_secs(minutes * 60),
                },
                min: Some(5),
                max: None,
                desired: Some(8),
                span: Span::default(),
            }],
        }
    }

    /// Every minute from `from` for `minutes`: the (start, end) in force, if any, as RFC 3339.
    fn minute_by_minute(s: &Scheduled, from: &str, minutes: i64) -> Vec<(String, Option<(String, String)>)> {
        let t0 = utc(from);
        (0..minutes)
            .map(|k| {
                let now = t0 + TimeDelta::minutes(k);
                let w = s.active(now).first().map(|w| {
                    (
                        w.started.format("%H:%MZ").to_string(),
                        w.ends.format("%H:%MZ").to_string(),
                    )
                });
                (now.format("%H:%MZ").to_string(), w)
            })
            .collect()
    }

    /// The distinct windows seen minute by minute: (start, end, minutes in force).
    fn windows_seen(s: &Scheduled, from: &str, minutes: i64) -> Vec<(String, String, usize)> {
        let mut out: Vec<(String, String, usize)> = Vec::new();
        for (_, w) in minute_by_minute(s, from, minutes) {
            let Some((a, b)) = w else { continue };
            match out.last_mut() {
                Some(last) if last.0 == a => last.2 += 1,
                _ => out.push((a, b, 1)),
            }
        }
        out
    }

    #[test]
    fn new_york_spring_gap_starts_the_window_when_the_gap_ends() {
        // 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC): 02:30 does not exist that day.
        let s = daily("America/New_York", "30 2 * * *", 20);
        let seen = windows_seen(&s, "2026-03-08T05:00:00Z", 180);
        assert_eq!(seen, [("07:00Z".to_string(), "07:20Z".to_string(), 20)]);
        // The next day, 02:30 EDT again.
        let seen = windows_seen(&s, "2026-03-09T05:00:00Z", 180);
        assert_eq!(seen, [("06:30Z".to_string(), "06:50Z".to_string(), 20)]);
    }

    #[test]
    fn new_york_autumn_overlap_starts_the_window_once_for_its_real_duration() {
        // 2026-11-01 02:00 EDT → 01:00 EST (06:00 UTC): 01:30 comes at 05:30 and 06:30 UTC.
        let s = daily("America/New_York", "30 1 * * *", 20);
        let seen = windows_seen(&s, "2026-11-01T04:00:00Z", 240);
        assert_eq!(seen, [("05:30Z".to_string(), "05:50Z".to_string(), 20)]);
        // One start, so one `desired` to apply: a single key all day.
        let keys: std::collections::BTreeSet<DateTime<Utc>> = (0..240)
            .flat_map(|k| s.active(utc("2026-11-01T04:00:00Z") + TimeDelta::minutes(k)))
            .map(|w| w.started)
            .collect();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn sydney_transitions_are_handled_the_same_way() {
        // 2026-10-04 02:00 AEST → 03:00 AEDT (16:00 UTC the day before): 02:30 does not exist.
        let s = daily("Australia/Sydney", "30 2 * * *", 20);
        let seen = windows_seen(&s, "2026-10-03T14:00:00Z", 240);
        assert_eq!(seen, [("16:00Z".to_string(), "16:20Z".to_string(), 20)]);
        // 2026-04-05 03:00 AEDT → 02:00 AEST (16:00 UTC the day before): 02:30 comes twice,
        // at 15:30 and 16:30 UTC; the window runs once, from the first.
        let seen = windows_seen(&s, "2026-04-04T14:00:00Z", 240);
        assert_eq!(seen, [("15:30Z".to_string(), "15:50Z".to_string(), 20)]);
    }

    #[test]
    fn reasons_show_the_offset_in_force() {
        let s = daily("America/New_York", "30 1 * * *", 20);
        let reason = |now: &str| {
            let metrics = crate::eval_io::MetricSet::uniform(std::iter::empty(), 60, utc(now));
            let externals = Default::default();
            let input = EvalInput::new(utc(now), 4, &metrics, &|_| None, &externals);
            match s.evaluate(&input) {
                Recommendation::Abstain { reason } => reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            reason("2026-11-01T05:40:00Z"),
            "in force: w until 2026-11-01 01:50 EDT (-04:00) min 5 desired 8"
        );
        assert_eq!(
            reason("2026-11-02T06:40:00Z"),
            "in force: w until 2026-11-02 01:50 EST (-05:00) min 5 desired 8"
        );
    }
}
