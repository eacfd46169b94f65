//! The estimators: each reads the columns it needs from a service's history and says how sure
//! it is, or why the history cannot tell.
//!
//! - **Requests per task at full CPU**: per minute, CPU against the requests each running task
//!   served (`request_count / 60 / running`), a straight line through the minutes with a steady
//!   count below 90 % CPU; where the line reaches 100 %.
//! - **The latency curve**: the load balancer's mean response time against `ρ/(1−ρ)` (ρ from the
//!   rate just fitted): its intercept is the service time, its slope over the service's `1/μ`
//!   the queueing factor of Kingman's formula.
//! - **Task start and instance boot**: Little's law. The average number of tasks starting
//!   (PendingTaskCount) over the history, times its length, over the tasks started (the rises
//!   of the desired count) is the mean start time; likewise instances booting
//!   (GroupPendingInstances) over the instances launched (the rises of the group's desired
//!   capacity).
//! - **The load's noise**: the robust spread of the minute-to-minute change of the request
//!   count's logarithm, over √2 (a difference holds two minutes' noise).

use chrono::{DateTime, Utc};

use super::{columns, Estimate};
use crate::evaluate::trace::Trace;

/// Minutes a rate or curve fit needs at the least.
const MIN_MINUTES: usize = 30;
/// Tasks or instances started that a start-time estimate needs at the least.
const MIN_STARTS: f64 = 8.0;

/// A column by timestamp.
fn column(t: &Trace, id: &str) -> std::collections::BTreeMap<DateTime<Utc>, f64> {
    t.series
        .get(id)
        .map(|v| v.iter().map(|s| (s.timestamp, s.value)).collect())
        .unwrap_or_default()
}

/// The minutes with a steady count: the same running count as the minute before, nothing
/// starting, every column there. (minute, requests/s, running, cpu)
fn steady_minutes(t: &Trace) -> Vec<(DateTime<Utc>, f64, f64, f64)> {
    let (load, cpu, pending) = (
        column(t, columns::LOAD),
        column(t, columns::CPU),
        column(t, columns::PENDING),
    );
    let period = t.period_secs.max(1) as f64;
    let mut out = Vec::new();
    let mut before: Option<u32> = None;
    for ts in &t.timestamps {
        let running = t.recorded_count.get(ts).copied();
        let steady = running.is_some() && running == before && pending.get(ts).is_none_or(|p| *p < 0.05);
        before = running;
        let (Some(r), Some(l), Some(c)) = (running, load.get(ts), cpu.get(ts)) else {
            continue;
        };
        if steady && r > 0 && *l > 0.0 {
            out.push((*ts, l / period, f64::from(r), *c));
        }
    }
    out
}

/// Requests a second one task serves at 100 % CPU.
pub fn task_rate(t: &Trace) -> Estimate {
    for need in [columns::LOAD, columns::CPU] {
        if !t.series.contains_key(need) {
            return Estimate::missing(format!("no `{need}` column"));
        }
    }
    if t.recorded_count.is_empty() {
        return Estimate::missing("no `running` column (Container Insights' RunningTaskCount)");
    }
    let points: Vec<(f64, f64)> = steady_minutes(t)
        .into_iter()
        .filter(|(_, _, _, c)| *c > 5.0 && *c < 90.0)
        .map(|(_, rps, r, c)| (rps / r, c))
        .collect();
    if points.len() < MIN_MINUTES {
        return Estimate::missing(format!(
            "{} minutes with a steady count between 5 and 90 % CPU, {MIN_MINUTES} needed",
            points.len()
        ));
    }
    let Some((a, b, (se_a, se_b))) =
        crate::lsq::Line::through(&points).map(|l| (l.a, l.b, l.standard_errors()))
    else {
        return Estimate::missing("the requests per task never vary, so CPU cannot be told apart from idle");
    };
    if b <= 0.0 {
        return Estimate::missing("CPU does not rise with the requests per task");
    }
    let rate = (100.0 - a) / b;
    // Delta method: relative errors of the numerator and the slope, combined.
    let rel = ((se_a / (100.0 - a).abs().max(1e-9)).powi(2) + (se_b / b).powi(2)).sqrt();
    Estimate::fitted(
        rate,
        rate * rel,
        format!("{} steady minutes under 90 % CPU", points.len()),
    )
}

/// The service time (s) and the queueing factor, from the mean response time: the minutes'
/// means against the simulator's own latency model at their utilization
/// ([`crate::sim::fluid::latency_terms`]), which is linear in the two.
pub fn latency(t: &Trace, rate: Option<f64>) -> (Estimate, Estimate) {
    let Some(rate) = rate else {
        let why = "needs the requests per task at full CPU";
        return (Estimate::missing(why), Estimate::missing(why));
    };
    if !t.series.contains_key(columns::RESPONSE_TIME) {
        let why = format!("no `{}` column", columns::RESPONSE_TIME);
        return (Estimate::missing(why.clone()), Estimate::missing(why));
    }
    let rt = column(t, columns::RESPONSE_TIME);
    // (a, b / rate, mean latency): mean = time × a + queueing × b / rate
    let rows: Vec<(f64, f64, f64)> = steady_minutes(t)
        .into_iter()
        .filter_map(|(ts, rps, r, _)| {
            let rho = rps / (r * rate);
            let l = rt.get(&ts)?;
            let (a, b) = crate::sim::fluid::latency_terms(rho);
            (rho > 0.0 && rho < 0.85).then_some((a, b / rate, *l))
        })
        .collect();
    if rows.len() < MIN_MINUTES {
        let why = format!(
            "{} steady minutes under 85 % utilization with a response time, {MIN_MINUTES} needed",
            rows.len()
        );
        return (Estimate::missing(why.clone()), Estimate::missing(why));
    }
    let Some(((time, queueing), (se_t, se_q))) = two_terms(&rows) else {
        let why = "the utilization never varies enough to tell waiting from serving";
        return (Estimate::missing(why), Estimate::missing(why));
    };
    let basis = format!("{} steady minutes under 85 % utilization", rows.len());
    let time = if time > 0.0 {
        Estimate::fitted(time, se_t, basis.clone())
    } else {
        Estimate::missing("the response time does not settle at a positive value when idle")
    };
    let queueing = if queueing > 0.0 {
        Estimate::fitted(queueing, se_q, basis)
    } else {
        Estimate::missing("the response time does not grow with utilization")
    };
    (time, queueing)
}

/// Least squares `y = p·x1 + q·x2` through the origin: (p, q) and their standard errors.
fn two_terms(rows: &[(f64, f64, f64)]) -> Option<((f64, f64), (f64, f64))> {
    let (mut s11, mut s12, mut s22, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (x1, x2, y) in rows {
        s11 += x1 * x1;
        s12 += x1 * x2;
        s22 += x2 * x2;
        s1y += x1 * y;
        s2y += x2 * y;
    }
    let det = s11 * s22 - s12 * s12;
    if det.abs() <= 1e-12 * s11 * s22 {
        return None;
    }
    let p = (s22 * s1y - s12 * s2y) / det;
    let q = (s11 * s2y - s12 * s1y) / det;
    let rss: f64 = rows.iter().map(|(x1, x2, y)| (y - p * x1 - q * x2).powi(2)).sum();
    let s2 = rss / (rows.len() as f64 - 2.0).max(1.0);
    Some(((p, q), ((s2 * s22 / det).sqrt(), (s2 * s11 / det).sqrt())))
}

/// Little's law over a count of things starting and the rises of what they start toward:
/// the mean time one spends starting (s).
fn little(t: &Trace, starting: &str, target: &str, what: &str) -> Estimate {
    let (Some(busy), Some(goal)) = (t.series.get(starting), t.series.get(target)) else {
        let missing = if t.series.contains_key(starting) {
            target
        } else {
            starting
        };
        return Estimate::missing(format!("no `{missing}` column"));
    };
    let period = t.period_secs.max(1) as f64;
    let time: f64 = busy.iter().map(|s| s.value.max(0.0) * period).sum();
    // Every rise of the goal starts that many; per episode, for the spread of the estimate.
    let mut starts = 0.0;
    let mut last: Option<f64> = None;
    for s in goal {
        if let Some(l) = last {
            starts += (s.value - l).max(0.0);
        }
        last = Some(s.value);
    }
    if starts < MIN_STARTS {
        return Estimate::missing(format!("{starts:.0} {what} started, {MIN_STARTS} needed"));
    }
    let mean = time / starts;
    // Counting error: the rises are whole numbers seen once a minute, and the count holds one
    // period's quantization either way; the estimate's spread falls as 1/√starts.
    let err = mean / starts.sqrt();
    Estimate::fitted(mean, err, format!("{starts:.0} {what} started"))
}

pub fn task_start(t: &Trace) -> Estimate {
    little(t, columns::PENDING, columns::DESIRED, "tasks")
}

pub fn instance_boot(t: &Trace) -> Estimate {
    little(t, columns::INSTANCES_PENDING, columns::GROUP_DESIRED, "instances")
}

/// The minute-to-minute noise of the load, as a fraction.
pub fn noise(t: &Trace) -> Estimate {
    let Some(load) = t.series.get(columns::LOAD) else {
        return Estimate::missing(format!("no `{}` column", columns::LOAD));
    };
    let mut d: Vec<f64> = load
        .windows(2)
        .filter(|w| w[0].value > 0.0 && w[1].value > 0.0)
        .map(|w| (w[1].value / w[0].value).ln())
        .collect();
    if d.len() < MIN_MINUTES {
        return Estimate::missing(format!(
            "{} minute pairs with load, {MIN_MINUTES} needed",
            d.len()
        ));
    }
    let med = median(&mut d);
    let mut dev: Vec<f64> = d.iter().map(|x| (x - med).abs()).collect();
    let mad = median(&mut dev);
    let sigma = 1.4826 * mad / std::f64::consts::SQRT_2;
    Estimate::fitted(
        sigma,
        sigma / (d.len() as f64).sqrt(),
        format!("{} minute pairs", d.len()),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
