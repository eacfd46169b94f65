//! Invariants of the engine over generated policies, metrics, counts and memories.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::tests::{policy, samples};
use super::*;
use crate::eval_io::{MetricData, MetricSet, Observation};
use crate::model::Action;

fn now() -> DateTime<Utc> {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

#[derive(Debug, Clone)]
struct Gen {
    min: u32,
    span: u32,
    target: f64,
    tolerance_pct: u32,
    out_dp: usize,
    in_dp: usize,
    missing: u8,
    assume: f64,
    with_expression: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        0u32..6,
        1u32..30,
        10.0f64..90.0,
        5u32..30,
        1usize..4,
        1usize..7,
        0u8..3,
        0.0f64..150.0,
        any::<bool>(),
    )
        .prop_map(
            |(min, span, target, tolerance_pct, out_dp, in_dp, missing, assume, with_expression)| Gen {
                min,
                span,
                target,
                tolerance_pct,
                out_dp,
                in_dp,
                missing,
                assume,
                with_expression,
            },
        )
}

impl Gen {
    fn yaml(&self) -> String {
        let missing = match self.missing {
            0 => "hold".to_string(),
            1 => "block_scale_in".to_string(),
            _ => format!("{{assume: {}}}", self.assume),
        };
        let mut s = format!(
            "min: {}\nmax: {}\nmissing_data: {{default: {missing}}}\nrules:\n  - {{kind: target_tracking, metric: cpu, target: {}, tolerance: {}%, scale_out_datapoints: {}, scale_in_datapoints: {}, warmup: 0s}}\n",
            self.min,
            self.min + self.span,
            self.target,
            self.tolerance_pct,
            self.out_dp,
            self.in_dp
        );
        if self.with_expression {
            s.push_str("  - {kind: expression, expression: 'ceil(q / 100)'}\n");
        }
        s
    }
}

fn memory() -> impl Strategy<Value = TargetState> {
    (
        proptest::option::of(0i64..900),
        proptest::option::of(0i64..900),
        proptest::collection::vec((1i64..600, 0u32..40), 0..5),
    )
        .prop_map(|(out, inn, recs)| TargetState {
            last_scale_out: out.map(|s| now() - TimeDelta::seconds(s)),
            last_scale_in: inn.map(|s| now() - TimeDelta::seconds(s)),
            recommendations: {
                let mut r: Vec<_> = recs
                    .into_iter()
                    .map(|(s, c)| (now() - TimeDelta::seconds(s), c))
                    .collect();
                r.sort();
                VecDeque::from(r)
            },
            applied_windows: Vec::new(),
            running: Default::default(),
        })
}

fn decide_with(
    g: &Gen,
    cpu: &[Option<f64>],
    q: &[Option<f64>],
    current: u32,
    state: &TargetState,
) -> crate::model::Decision {
    let p = policy(&g.yaml());
    let (cpu, q) = (samples(now(), cpu), samples(now(), q));
    let mut set = MetricSet::new();
    set.insert(
        "cpu",
        MetricData {
            samples: &cpu,
            period_secs: 60,
            complete_until: now(),
            per_task: false,
            history: None,
        },
    );
    set.insert(
        "q",
        MetricData {
            samples: &q,
            period_secs: 60,
            complete_until: now(),
            per_task: false,
            history: None,
        },
    );
    let obs = Observation {
        now: now(),
        current,
        running: current,
        pending: 0,
        metrics: &set,
    };
    decide(&p, &obs, state, &BTreeMap::new())
}

fn values() -> impl Strategy<Value = Vec<Option<f64>>> {
    proptest::collection::vec(proptest::option::weighted(0.8, 0.0f64..300.0), 0..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_count_is_always_within_the_bounds(g in gen(), cpu in values(), q in values(), current in 0u32..60, state in memory()) {
        let d = decide_with(&g, &cpu, &q, current, &state);
        prop_assert!(d.min <= d.desired && d.desired <= d.max, "{d:?}");
        prop_assert_eq!(d.min, g.min);
        prop_assert_eq!(d.max, g.min + g.span);
    }

    #[test]
    fn constant_load_inside_the_tolerance_never_acts(g in gen(), position in 0.05f64..0.95, offset in 0u32..30, state in memory()) {
        let g = Gen { with_expression: false, ..g };
        let tol = f64::from(g.tolerance_pct) / 100.0;
        let (lo, hi) = (g.target * (1.0 - tol), g.target * (1.0 + tol));
        let v = lo + (hi - lo) * position;
        let cpu = vec![Some(v); g.out_dp.max(g.in_dp)];
        let current = g.min.max(1) + offset % (g.span + 1);
        prop_assume!(current <= g.min + g.span);
        let d = decide_with(&g, &cpu, &[], current, &state);
        prop_assert_eq!(d.action, Action::Hold, "{}", d.reason);
    }

    #[test]
    fn a_missing_metric_never_causes_scale_in(g in gen(), current in 0u32..60, state in memory(), gap_at in 0usize..7) {
        // No datapoint at all, or a gap among the periods the rule reads (the last `in_dp`),
        // the other periods showing a load low enough to scale in.
        let gap = 6 - gap_at % g.in_dp;
        let with_gap: Vec<Option<f64>> = (0..7).map(|i| if i == gap { None } else { Some(1.0) }).collect();
        // The other rule (when there is one) sees a queue that calls for 1 task: only the
        // missing CPU metric stands between it and a scale-in.
        let g = Gen { with_expression: true, ..g };
        for cpu in [vec![], with_gap] {
            let d = decide_with(&g, &cpu, &[Some(50.0)], current, &state);
            let above_max = current > g.min + g.span;
            prop_assert!(d.action != Action::ScaleIn || above_max, "{} → {}: {}", d.current, d.desired, d.reason);
            if d.action == Action::ScaleIn {
                prop_assert_eq!(d.desired, g.min + g.span, "only the maximum may bring it down");
            }
            prop_assert!(d.desired > 0 || g.min == 0 && current == 0, "never to zero because of missing data");
        }
    }

    #[test]
    fn identical_inputs_give_identical_decisions(g in gen(), cpu in values(), q in values(), current in 0u32..60, state in memory()) {
        let a = decide_with(&g, &cpu, &q, current, &state);
        let b = decide_with(&g, &cpu, &q, current, &state);
        prop_assert_eq!(a, b);
    }
}
