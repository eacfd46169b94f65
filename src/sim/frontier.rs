//! Cost/SLO curves and the verdicts read off them: is a policy's point better than a peer's
//! whole curve, or only more generous?
//!
//! A curve is the points of one scaler swept along its knob (a peer's CPU target, a policy's
//! targets), each (task-hours, SLO minutes). Only its lower-left envelope counts: a point with
//! more task-hours and no fewer SLO minutes than another is never the better choice. Between
//! two envelope points the curve is the straight line (running one setting part of the time and
//! the other the rest gets about that). Outside the swept range a value is a bound, not a
//! reading: beyond the cheapest point the peer cannot go, and beyond the dearest one it may do
//! no better.

use serde::Serialize;

/// One run: task-hours and SLO minutes, with the knob's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub task_hours: f64,
    pub slo_minutes: f64,
    /// The knob's value at this point (a CPU target, %).
    pub knob: f64,
}

/// A value read off a curve, exact within its range or a bound outside it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reading", content = "value", rename_all = "snake_case")]
pub enum Reading {
    Exact(f64),
    /// The curve's value is at least this (it cannot reach the point asked).
    AtLeast(f64),
    /// The curve's value is at most this (the point asked is beyond its dearest setting).
    AtMost(f64),
}

impl Reading {
    pub fn value(self) -> f64 {
        match self {
            Reading::Exact(v) | Reading::AtLeast(v) | Reading::AtMost(v) => v,
        }
    }

    /// `12.5`, `≥ 12.5`, `≤ 12.5`.
    pub fn text(self, digits: usize) -> String {
        match self {
            Reading::Exact(v) => format!("{v:.digits$}"),
            Reading::AtLeast(v) => format!("≥ {v:.digits$}"),
            Reading::AtMost(v) => format!("≤ {v:.digits$}"),
        }
    }
}

/// The lower-left envelope of `points`: by task-hours, each with fewer SLO minutes than every
/// cheaper one.
pub fn envelope(points: &[Point]) -> Vec<Point> {
    let mut sorted: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.task_hours.is_finite() && p.slo_minutes.is_finite())
        .collect();
    sorted.sort_by(|a, b| {
        a.task_hours
            .total_cmp(&b.task_hours)
            .then(a.slo_minutes.total_cmp(&b.slo_minutes))
    });
    let mut out: Vec<Point> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|l| p.slo_minutes < l.slo_minutes) {
            out.push(p);
        }
    }
    out
}

fn lerp(x: f64, (x0, y0): (f64, f64), (x1, y1): (f64, f64)) -> f64 {
    if x1 == x0 {
        return y0.min(y1);
    }
    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
}

/// The curve's SLO minutes at `task_hours`.
pub fn slo_at(curve: &[Point], task_hours: f64) -> Option<Reading> {
    let e = envelope(curve);
    let (first, last) = (e.first()?, e.last()?);
    if task_hours < first.task_hours {
        return Some(Reading::AtLeast(first.slo_minutes));
    }
    if task_hours >= last.task_hours {
        return Some(Reading::AtMost(last.slo_minutes));
    }
    let k = e.partition_point(|p| p.task_hours <= task_hours);
    let (a, b) = (e[k - 1], e[k]);
    Some(Reading::Exact(lerp(
        task_hours,
        (a.task_hours, a.slo_minutes),
        (b.task_hours, b.slo_minutes),
    )))
}

/// The task-hours the curve needs to have at most `slo_minutes`.
pub fn task_hours_at(curve: &[Point], slo_minutes: f64) -> Option<Reading> {
    let e = envelope(curve);
    let (first, last) = (e.first()?, e.last()?);
    if slo_minutes >= first.slo_minutes {
        return Some(Reading::AtMost(first.task_hours));
    }
    if slo_minutes < last.slo_minutes {
        return Some(Reading::AtLeast(last.task_hours));
    }
    // SLO minutes fall along the envelope: the first point at or under the value.
    let k = e.partition_point(|p| p.slo_minutes > slo_minutes);
    let (a, b) = (e[k - 1], e[k]);
    Some(Reading::Exact(lerp(
        slo_minutes,
        (a.slo_minutes, a.task_hours),
        (b.slo_minutes, b.task_hours),
    )))
}

/// Whether the curve does better than `p`: as few SLO minutes for no more task-hours, one of
/// them strictly fewer (a point of the curve, or a point on the line between two).
pub fn dominates(curve: &[Point], p: &Point) -> bool {
    let e = envelope(curve);
    let by_point = e.iter().any(|q| {
        q.task_hours <= p.task_hours
            && q.slo_minutes <= p.slo_minutes
            && (q.task_hours < p.task_hours || q.slo_minutes < p.slo_minutes)
    });
    let by_line = matches!(slo_at(&e, p.task_hours), Some(Reading::Exact(v)) if v < p.slo_minutes);
    by_point || by_line
}

/// A policy's point against one peer's curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub peer: String,
    /// The curve does better than the policy.
    pub dominated: bool,
    /// The peer's SLO minutes at the policy's task-hours.
    pub peer_slo_minutes: Option<Reading>,
    /// The peer's task-hours at the policy's SLO minutes.
    pub peer_task_hours: Option<Reading>,
    /// The policy's SLO minutes over the peer's at the policy's task-hours (0 when both are 0).
    pub slo_ratio: Option<f64>,
}

impl Verdict {
    pub fn of(peer: &str, curve: &[Point], p: &Point) -> Verdict {
        let slo = slo_at(curve, p.task_hours);
        Verdict {
            peer: peer.to_string(),
            dominated: dominates(curve, p),
            peer_slo_minutes: slo,
            peer_task_hours: task_hours_at(curve, p.slo_minutes),
            slo_ratio: slo.map(|r| {
                let v = r.value();
                if v > 0.0 {
                    p.slo_minutes / v
                } else if p.slo_minutes == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            }),
        }
    }

    /// In words.
    pub fn sentence(&self, p: &Point) -> String {
        let at_cost = self.peer_slo_minutes.map_or("no reading".into(), |r| r.text(0));
        let at_slo = self.peer_task_hours.map_or("no reading".into(), |r| r.text(1));
        format!(
            "{}: {}; at ecscale's {:.1} task-hours it has {at_cost} SLO minutes (ecscale {:.0}{}); for ecscale's {:.0} SLO minutes it needs {at_slo} task-hours",
            self.peer,
            if self.dominated {
                "ecscale's point is dominated by its curve"
            } else {
                "ecscale's point is not dominated by its curve"
            },
            p.task_hours,
            p.slo_minutes,
            self.slo_ratio
                .filter(|r| r.is_finite())
                .map_or(String::new(), |r| format!(", {r:.2}×")),
            p.slo_minutes,
        )
    }
}

/// The strongest of the peers at the policy's cost: the fewest SLO minutes at its task-hours
/// (a bound `≥` counts as its value: the peer cannot do better there).
pub fn strongest(verdicts: &[Verdict]) -> Option<&Verdict> {
    verdicts.iter().min_by(|a, b| {
        let v = |x: &Verdict| x.peer_slo_minutes.map_or(f64::INFINITY, Reading::value);
        v(a).total_cmp(&v(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(task_hours: f64, slo_minutes: f64) -> Point {
        Point {
            task_hours,
            slo_minutes,
            knob: 0.0,
        }
    }

    /// A peer swept from a generous target to a tight one: more task-hours, fewer SLO minutes,
    /// with one setting that is worse on both counts than its neighbour.
    fn curve() -> Vec<Point> {
        vec![
            pt(100.0, 400.0),
            pt(120.0, 200.0),
            pt(125.0, 260.0), // dominated by (120, 200)
            pt(150.0, 100.0),
            pt(200.0, 20.0),
        ]
    }

    #[test]
    fn the_envelope_drops_points_that_cost_more_and_do_no_better() {
        let e = envelope(&curve());
        let th: Vec<f64> = e.iter().map(|p| p.task_hours).collect();
        assert_eq!(th, vec![100.0, 120.0, 150.0, 200.0]);
    }

    #[test]
    fn readings_interpolate_inside_the_sweep_and_are_bounds_outside_it() {
        let c = curve();
        assert_eq!(slo_at(&c, 135.0), Some(Reading::Exact(150.0)));
        assert_eq!(slo_at(&c, 120.0), Some(Reading::Exact(200.0)));
        assert_eq!(slo_at(&c, 90.0), Some(Reading::AtLeast(400.0)));
        assert_eq!(slo_at(&c, 250.0), Some(Reading::AtMost(20.0)));
        assert_eq!(task_hours_at(&c, 150.0), Some(Reading::Exact(135.0)));
        assert_eq!(task_hours_at(&c, 60.0), Some(Reading::Exact(175.0)));
        assert_eq!(task_hours_at(&c, 500.0), Some(Reading::AtMost(100.0)));
        assert_eq!(task_hours_at(&c, 10.0), Some(Reading::AtLeast(200.0)));
        assert_eq!(slo_at(&[], 1.0), None);
    }

    #[test]
    fn a_point_under_the_curve_is_not_dominated_and_one_over_it_is() {
        let c = curve();
        // under the line between (120, 200) and (150, 100): 150 there at 135 task-hours
        let good = pt(135.0, 60.0);
        let v = Verdict::of("aws", &c, &good);
        assert!(!v.dominated, "{v:?}");
        assert_eq!(v.peer_slo_minutes, Some(Reading::Exact(150.0)));
        assert!((v.slo_ratio.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(v.peer_task_hours, Some(Reading::Exact(175.0)));
        // fewer SLO minutes bought with more tasks: over the line, so dominated
        let generous = pt(190.0, 40.0);
        assert!(dominates(&c, &generous));
        // a point the curve reaches exactly is dominated only by a strictly better one
        assert!(!dominates(&c, &pt(120.0, 200.0)));
        assert!(dominates(&c, &pt(121.0, 200.0)));
        // cheaper than anything the peer can run: never dominated
        assert!(!dominates(&c, &pt(90.0, 1000.0)));
    }

    #[test]
    fn zero_slo_minutes_on_both_sides_compare_by_cost() {
        let c = vec![pt(100.0, 5.0), pt(130.0, 0.0)];
        assert!(dominates(&c, &pt(140.0, 0.0)));
        assert!(!dominates(&c, &pt(120.0, 0.0)));
        let v = Verdict::of("hpa", &c, &pt(130.0, 0.0));
        assert_eq!(v.slo_ratio, Some(0.0));
    }

    #[test]
    fn the_strongest_peer_has_the_fewest_slo_minutes_at_the_policy_s_cost() {
        let p = pt(135.0, 60.0);
        let weak = Verdict::of("aws", &curve(), &p);
        let strong = Verdict::of("aws-hires", &[pt(100.0, 90.0), pt(140.0, 40.0)], &p);
        let all = [weak, strong];
        assert_eq!(strongest(&all).unwrap().peer, "aws-hires");
    }
}
