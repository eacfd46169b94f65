//! Thresholds (`p95 < 300ms`, `errors < 1%`, `rate_achieved > 99%`) and scaling assertions
//! (`desired >= 6 within 3m`, `running == desired within 5m`, `desired <= 2 within 15m after the
//! load ends`, `direction changes <= 2`): parsed from their one-line form, evaluated on what the
//! run measured and what the watch saw.

use std::time::Duration;

use serde::Serialize;

use super::stats::Acc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" | "=" => Op::Eq,
            _ => return None,
        })
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => (a - b).abs() < 1e-9,
        }
    }
}

/// Splits `p95<300ms` or `p95 < 300ms` into its three parts.
fn split_comparison(s: &str) -> Option<(&str, Op, &str)> {
    let i = s.find(['<', '>', '='])?;
    let len = if s[i + 1..].starts_with('=') { 2 } else { 1 };
    let op = Op::parse(&s[i..i + len])?;
    Some((s[..i].trim(), op, s[i + len..].trim()))
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A latency quantile (0.5…1.0; `max` is 1.0), from the scheduled time or, with
    /// `from_send`, the actual send time; the value in milliseconds.
    Latency {
        quantile: f64,
        from_send: bool,
    },
    MeanLatency {
        from_send: bool,
    },
    /// Errors as a fraction of the requests.
    ErrorRate,
    /// Errors as a count.
    ErrorCount,
    /// Requests answered as a fraction of those planned (open phases only).
    RateAchieved,
    /// Requests answered per second.
    Rate,
}

/// One threshold, as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub check: String,
    #[serde(skip)]
    pub metric: Metric,
    #[serde(skip)]
    pub op: Op,
    #[serde(skip)]
    pub value: f64,
    /// Evaluated over every sliding window of this length instead of the whole scope.
    #[serde(with = "opt_secs")]
    pub window: Option<Duration>,
    /// A failure stops the run.
    pub abort: bool,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// The longest sliding window (the histograms of that many seconds are kept).
pub const MAX_WINDOW: Duration = Duration::from_secs(300);

impl Threshold {
    /// Parses `METRIC OP VALUE`: `p95 < 300ms`, `service_p99 <= 1s`, `max < 2s`, `mean < 50ms`,
    /// `errors < 1%`, `errors == 0`, `rate_achieved > 99%`, `rate >= 1500`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let (metric, op, value) = split_comparison(text).ok_or_else(|| {
            format!(
                "`{text}` is not METRIC OP VALUE (e.g. `p95 < 300ms`, `errors < 1%`, `rate_achieved > 99%`)"
            )
        })?;
        let (name, from_send) = match metric.strip_prefix("service_") {
            Some(rest) => (rest, true),
            None => (metric, false),
        };
        let latency = |v: &str| -> Result<f64, String> {
            let d = humantime::parse_duration(v)
                .map_err(|_| format!("`{v}` in `{text}` is not a duration such as 300ms or 1.5s"))?;
            Ok(d.as_secs_f64() * 1000.0)
        };
        let percent = |v: &str| -> Result<f64, String> {
            v.strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| p / 100.0)
                .ok_or_else(|| format!("`{v}` in `{text}` is not a percentage such as 99%"))
        };
        let (metric, value) = match name {
            "mean" | "avg" => (Metric::MeanLatency { from_send }, latency(value)?),
            "max" => (
                Metric::Latency {
                    quantile: 1.0,
                    from_send,
                },
                latency(value)?,
            ),
            p if p.starts_with('p') && p[1..].parse::<f64>().is_ok() => {
                let q = p[1..].parse::<f64>().unwrap_or_default();
                if !(0.0 < q && q <= 100.0) {
                    return Err(format!("`{p}` in `{text}`: a percentile is between p0 and p100"));
                }
                (
                    Metric::Latency {
                        quantile: q / 100.0,
                        from_send,
                    },
                    latency(value)?,
                )
            }
            _ if from_send => {
                return Err(format!(
                    "`{metric}` in `{text}`: service_ goes with a latency (service_p99, service_max, service_mean)"
                ))
            }
            "errors" if value.ends_with('%') => (Metric::ErrorRate, percent(value)?),
            "errors" => (
                Metric::ErrorCount,
                value
                    .parse::<u64>()
                    .map_err(|_| format!("`{value}` in `{text}`: errors compare with a percentage (1%) or a count (0)"))?
                    as f64,
            ),
            "rate_achieved" => (Metric::RateAchieved, percent(value)?),
            "rate" => (
                Metric::Rate,
                value
                    .trim_end_matches("/s")
                    .parse::<f64>()
                    .map_err(|_| format!("`{value}` in `{text}`: a rate is requests per second, e.g. 1500"))?,
            ),
            other => {
                return Err(format!(
                    "unknown metric `{other}` in `{text}`: use p50…p99.9, max, mean (service_… for the time from the actual send), errors, rate_achieved or rate"
                ))
            }
        };
        Ok(Threshold {
            check: text.trim().to_string(),
            metric,
            op,
            value,
            window: None,
            abort: false,
        })
    }

    /// The measured value over `acc`, `secs` long, with `planned` requests planned (`None` when
    /// the metric does not apply: no requests, or no plan for `rate_achieved`).
    pub fn measure(&self, acc: &Acc, secs: f64, planned: Option<f64>) -> Option<f64> {
        match self.metric {
            Metric::Latency { quantile, from_send } => {
                let h = if from_send { &acc.actual } else { &acc.sched };
                (acc.requests > 0).then(|| {
                    if quantile >= 1.0 {
                        h.max() as f64 / 1000.0
                    } else {
                        h.value_at_quantile(quantile) as f64 / 1000.0
                    }
                })
            }
            Metric::MeanLatency { from_send } => {
                let h = if from_send { &acc.actual } else { &acc.sched };
                (acc.requests > 0).then(|| h.mean() / 1000.0)
            }
            Metric::ErrorRate => (acc.requests > 0).then(|| acc.error_count() as f64 / acc.requests as f64),
            Metric::ErrorCount => Some(acc.error_count() as f64),
            Metric::RateAchieved => planned.filter(|p| *p >= 1.0).map(|p| acc.requests as f64 / p),
            Metric::Rate => (secs > 0.0).then(|| acc.requests as f64 / secs),
        }
    }

    pub fn holds(&self, measured: f64) -> bool {
        self.op.holds(measured, self.value)
    }
}

/// A number of tasks in an assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Desired,
    Running,
    Pending,
    Count(u32),
}

impl Operand {
    fn parse(s: &str) -> Option<Operand> {
        Some(match s {
            "desired" => Operand::Desired,
            "running" => Operand::Running,
            "pending" => Operand::Pending,
            n => Operand::Count(n.parse().ok()?),
        })
    }

    fn value(self, p: &TaskPoint) -> f64 {
        match self {
            Operand::Desired => p.desired as f64,
            Operand::Running => p.running as f64,
            Operand::Pending => p.pending as f64,
            Operand::Count(n) => n as f64,
        }
    }
}

/// Where an assertion's deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    LoadStart,
    LoadEnd,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssertionKind {
    /// `LHS OP RHS within D [after the load ends]`: holds at some observation by the deadline.
    Within {
        lhs: Operand,
        op: Op,
        rhs: Operand,
        within: Duration,
        since: Since,
    },
    /// The desired count changes direction (up then down, or down then up) at most `max` times.
    Flapping { max: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub text: String,
    pub kind: AssertionKind,
}

/// One observation of the watched service, `t` seconds after the load started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TaskPoint {
    pub t: f64,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
}

/// Where an assertion stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Undecided,
    Passed { at_s: f64, detail: String },
    Failed { detail: String },
}

impl Assertion {
    /// Parses the one-line form; see the module doc.
    pub fn parse(text: &str) -> Result<Assertion, String> {
        let t = text.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lw: Vec<&str> = lower.iter().map(String::as_str).collect();
        let kind = match lw.as_slice() {
            ["direction", "changes", op, n] | ["flapping", op, n] => {
                let op = Op::parse(op).filter(|o| matches!(o, Op::Le | Op::Lt));
                let n: u32 = n.parse().map_err(|_| format!("`{n}` in `{t}` is not a count"))?;
                match op {
                    Some(Op::Le) => AssertionKind::Flapping { max: n },
                    Some(_) if n > 0 => AssertionKind::Flapping { max: n - 1 },
                    _ => return Err(format!("`{t}`: write `direction changes <= K`")),
                }
            }
            ["no", "more", "than", n, "direction", "changes"] => AssertionKind::Flapping {
                max: n.parse().map_err(|_| format!("`{n}` in `{t}` is not a count"))?,
            },
            _ => {
                // `scales back to <= 2 within 15m after the load ends` reads as `desired <= 2 ...`.
                let norm = lower.join(" ").replace("scales back to", "desired");
                let (cond, rest) = norm
                    .split_once(" within ")
                    .ok_or_else(|| format!("`{t}`: expected `LHS OP RHS within DURATION [after the load ends]` or `direction changes <= K`"))?;
                let (l, op, r) =
                    split_comparison(cond).ok_or_else(|| format!("`{cond}` in `{t}` is not a comparison"))?;
                let operand = |s: &str| {
                    Operand::parse(s).ok_or_else(|| {
                        format!("`{s}` in `{t}`: compare desired, running, pending or a count")
                    })
                };
                let (lhs, rhs) = (operand(l)?, operand(r)?);
                let mut parts = rest.splitn(2, ' ');
                let d = parts.next().unwrap_or_default();
                let within = humantime::parse_duration(d)
                    .map_err(|_| format!("`{d}` in `{t}` is not a duration such as 3m"))?;
                let since = match parts.next().map(str::trim) {
                    None | Some("") | Some("of the start") | Some("after the start") => Since::LoadStart,
                    Some("after the load ends")
                    | Some("after the load")
                    | Some("after load end")
                    | Some("after load") => Since::LoadEnd,
                    Some(other) => {
                        return Err(format!(
                            "`{other}` in `{t}`: write nothing (from the start) or `after the load ends`"
                        ))
                    }
                };
                AssertionKind::Within {
                    lhs,
                    op,
                    rhs,
                    within,
                    since,
                }
            }
        };
        Ok(Assertion {
            text: t.to_string(),
            kind,
        })
    }

    /// The verdict on the observations so far, `now` seconds after the load started, the load
    /// having ended at `load_end` (or not yet). `over`: no more observations will come.
    pub fn judge(&self, points: &[TaskPoint], now: f64, load_end: Option<f64>, over: bool) -> Verdict {
        match &self.kind {
            AssertionKind::Within {
                lhs,
                op,
                rhs,
                within,
                since,
            } => {
                let from = match since {
                    Since::LoadStart => 0.0,
                    Since::LoadEnd => match load_end {
                        Some(e) => e,
                        None if over => {
                            return Verdict::Failed {
                                detail: "the load never ended (the run was stopped)".into(),
                            }
                        }
                        None => return Verdict::Undecided,
                    },
                };
                let deadline = from + within.as_secs_f64();
                let hit = points
                    .iter()
                    .filter(|p| p.t >= from && p.t <= deadline)
                    .find(|p| op.holds(lhs.value(p), rhs.value(p)));
                match hit {
                    Some(p) => Verdict::Passed {
                        at_s: p.t,
                        detail: format!(
                            "desired {} running {} pending {} at {:.0} s ({:.0} s after {})",
                            p.desired,
                            p.running,
                            p.pending,
                            p.t,
                            p.t - from,
                            if *since == Since::LoadStart {
                                "the start"
                            } else {
                                "the load ended"
                            }
                        ),
                    },
                    None if now > deadline || over => {
                        let last = points.iter().rev().find(|p| p.t <= deadline);
                        Verdict::Failed {
                            detail: match last {
                                Some(p) => format!(
                                    "not by {:.0} s: last seen desired {} running {} pending {} at {:.0} s",
                                    deadline, p.desired, p.running, p.pending, p.t
                                ),
                                None => format!("no observation of the service by {deadline:.0} s"),
                            },
                        }
                    }
                    None => Verdict::Undecided,
                }
            }
            AssertionKind::Flapping { max } => {
                let changes = direction_changes(points);
                if changes > *max {
                    Verdict::Failed {
                        detail: format!("{changes} direction changes of the desired count (at most {max})"),
                    }
                } else if over {
                    Verdict::Passed {
                        at_s: now,
                        detail: format!("{changes} direction changes of the desired count"),
                    }
                } else {
                    Verdict::Undecided
                }
            }
        }
    }
}

/// How often the desired count turned from rising to falling or back.
pub fn direction_changes(points: &[TaskPoint]) -> u32 {
    let mut last_dir = 0i8;
    let mut changes = 0;
    for w in points.windows(2) {
        let dir = (w[1].desired as i64 - w[0].desired as i64).signum() as i8;
        if dir != 0 {
            if last_dir != 0 && dir != last_dir {
                changes += 1;
            }
            last_dir = dir;
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: f64, desired: u32, running: u32) -> TaskPoint {
        TaskPoint {
            t,
            desired,
            running,
            pending: 0,
        }
    }

    #[test]
    fn thresholds_parse_with_units_and_name_their_mistakes() {
        let t = Threshold::parse("p95 < 300ms").unwrap();
        assert_eq!(
            (t.metric, t.op, t.value),
            (
                Metric::Latency {
                    quantile: 0.95,
                    from_send: false
                },
                Op::Lt,
                300.0
            )
        );
        let t = Threshold::parse("service_p99.9<=1.5s").unwrap();
        assert_eq!(t.value, 1500.0);
        assert!(matches!(t.metric, Metric::Latency { from_send: true, .. }));
        assert_eq!(Threshold::parse("errors < 1%").unwrap().metric, Metric::ErrorRate);
        assert_eq!(
            Threshold::parse("errors == 0").unwrap().metric,
            Metric::ErrorCount
        );
        assert_eq!(Threshold::parse("rate_achieved > 99%").unwrap().value, 0.99);
        for (bad, says) in [
            ("p95 300ms", "is not METRIC OP VALUE"),
            ("p95 < 300", "not a duration"),
            ("latency < 3s", "unknown metric `latency`"),
            ("rate_achieved > 99", "not a percentage"),
            ("service_errors < 1%", "service_ goes with a latency"),
        ] {
            let e = Threshold::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn assertions_parse_the_issue_examples() {
        for (text, want) in [
            (
                "desired >= 6 within 3m",
                AssertionKind::Within {
                    lhs: Operand::Desired,
                    op: Op::Ge,
                    rhs: Operand::Count(6),
                    within: Duration::from_secs(180),
                    since: Since::LoadStart,
                },
            ),
            (
                "running == desired within 5m",
                AssertionKind::Within {
                    lhs: Operand::Running,
                    op: Op::Eq,
                    rhs: Operand::Desired,
                    within: Duration::from_secs(300),
                    since: Since::LoadStart,
                },
            ),
            (
                "scales back to <= 2 within 15m after the load ends",
                AssertionKind::Within {
                    lhs: Operand::Desired,
                    op: Op::Le,
                    rhs: Operand::Count(2),
                    within: Duration::from_secs(900),
                    since: Since::LoadEnd,
                },
            ),
            (
                "no more than 2 direction changes",
                AssertionKind::Flapping { max: 2 },
            ),
            ("direction changes <= 3", AssertionKind::Flapping { max: 3 }),
        ] {
            assert_eq!(Assertion::parse(text).unwrap().kind, want, "{text}");
        }
        assert!(Assertion::parse("desired >= 6 within soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(Assertion::parse("tasks >= 6 within 3m")
            .unwrap_err()
            .contains("compare desired"));
    }

    #[test]
    fn verdicts_follow_the_observations_and_the_deadline() {
        let a = Assertion::parse("desired >= 6 within 3m").unwrap();
        let pts = vec![p(0.0, 2, 2), p(60.0, 4, 2), p(120.0, 6, 4)];
        assert!(matches!(
            a.judge(&pts[..2], 60.0, None, false),
            Verdict::Undecided
        ));
        assert!(matches!(a.judge(&pts, 120.0, None, false), Verdict::Passed { at_s, .. } if at_s == 120.0));
        assert!(matches!(
            a.judge(&pts[..2], 181.0, None, false),
            Verdict::Failed { .. }
        ));

        let back = Assertion::parse("desired <= 2 within 1m after the load ends").unwrap();
        let pts = vec![p(0.0, 6, 6), p(100.0, 6, 6), p(130.0, 2, 2)];
        assert!(
            matches!(back.judge(&pts, 130.0, None, false), Verdict::Undecided),
            "load still running"
        );
        assert!(matches!(
            back.judge(&pts, 130.0, Some(100.0), false),
            Verdict::Passed { .. }
        ));
        assert!(matches!(
            back.judge(&pts, 170.0, Some(60.0), false),
            Verdict::Failed { .. }
        ));

        let flap = Assertion::parse("direction changes <= 1").unwrap();
        let pts: Vec<_> = [2, 4, 4, 3, 5]
            .iter()
            .enumerate()
            .map(|(i, d)| p(i as f64, *d, *d))
            .collect();
        assert_eq!(direction_changes(&pts), 2);
        assert!(matches!(
            flap.judge(&pts, 5.0, None, false),
            Verdict::Failed { .. }
        ));
        assert!(matches!(
            flap.judge(&pts[..4], 5.0, None, true),
            Verdict::Passed { .. }
        ));
    }
}
