//! The clairvoyant baseline: a scaler that knows the whole load trace in advance, for measuring
//! how far a policy is from the limit (`ecscale backtest --simulate` reports every run against it).
//!
//! Minute by minute it runs the fewest tasks for which the simulator's own queueing model (the
//! [`fluid`](super::fluid) arithmetic, [`task_step`]) keeps the minute's p95 latency under the
//! SLO with at most 1 % of requests failed, within the policy's min and max. It orders tasks
//! early enough to cover their start time and instances early enough to cover boot plus start,
//! so each minute's count is running when the minute begins. At scale-in it stops the tasks of
//! the emptiest instances and terminates instances once they are empty and not needed within a
//! boot's lead, so no task is lost to a terminated instance.
//!
//! It is a bound: no policy can have fewer SLO minutes, and none that keeps the SLO as well can
//! run fewer task-hours (up to the granularity of whole tasks per minute). A policy that beats it
//! means the oracle is wrong.

use chrono::{DateTime, TimeDelta, Utc};

use super::cluster::{InstanceStatus, TaskStatus};
use super::fluid::{record, task_step, Service};
use super::load::LbMinute;
use super::rows::{minute_violates, ActionRow, LoadFn};
use super::{Sim, Spec};

/// The oracle's plan for a run, and where it stands.
pub struct Oracle {
    start: DateTime<Utc>,
    step: TimeDelta,
    /// Tasks needed during each step of the run (the need of the step's minute).
    need: Vec<u32>,
    /// Steps between ordering a task and its serving, and between ordering an instance and a
    /// task placed on it serving.
    task_lead: usize,
    instance_lead: usize,
    per_instance: u32,
    target: String,
}

/// Whether `n` tasks serve a minute with these per-step arrival rates within the SLO, by the
/// fluid model.
fn keeps_slo(spec: &Spec, rates: &[f64], dt: f64, slo_ms: f64, n: u32) -> bool {
    let mut lb = LbMinute::default();
    let mut backlog = 0.0;
    for &rps in rates {
        let lambda = rps.max(0.0) / f64::from(n.max(1));
        let s = task_step(
            backlog,
            lambda,
            dt,
            spec.task_rps,
            spec.max_queue_wait.as_secs_f64(),
        );
        backlog = s.backlog;
        record(&mut lb, &s, &Service::of(spec), u64::from(n));
    }
    let p95 = lb.percentile_ms(0.95);
    let failed = if lb.requests > 0.0 {
        lb.errors / lb.requests
    } else {
        0.0
    };
    n > 0 && !minute_violates(p95, failed, slo_ms)
}

/// The fewest tasks in `min..=max` whose minute, with these per-step arrival rates, keeps the
/// SLO by the fluid model (`max` when none does).
pub fn tasks_needed(spec: &Spec, rates: &[f64], dt: f64, slo_ms: f64, min: u32, max: u32) -> u32 {
    tasks_needed_near(spec, rates, dt, slo_ms, (min, max), None)
}

/// [`tasks_needed`], searched outwards from `hint` (the last minute's count: the next minute's
/// is seldom far from it). The same answer as a plain binary search, in fewer trials.
fn tasks_needed_near(
    spec: &Spec,
    rates: &[f64],
    dt: f64,
    slo_ms: f64,
    (min, max): (u32, u32),
    hint: Option<u32>,
) -> u32 {
    let keeps = |n: u32| keeps_slo(spec, rates, dt, slo_ms, n);
    let (mut lo, mut hi) = (min.max(1), max.max(min.max(1)));
    // More tasks never serve a minute worse, so the answer is the smallest count that keeps the
    // SLO. From a hint, gallop to a bracket [lo, hi] with `keeps(hi)` and `!keeps(lo - 1)`.
    if let Some(h) = hint.map(|h| h.clamp(lo, hi)) {
        let mut step = 1;
        if keeps(h) {
            hi = h;
            while hi > lo {
                let probe = hi.saturating_sub(step).max(lo);
                if keeps(probe) {
                    hi = probe;
                    step *= 2;
                } else {
                    lo = probe + 1;
                    break;
                }
            }
        } else {
            lo = h + 1;
            loop {
                if lo > hi {
                    return hi;
                }
                let probe = (lo + step - 1).min(hi);
                if keeps(probe) {
                    hi = probe;
                    break;
                }
                if probe == hi {
                    return hi;
                }
                lo = probe + 1;
                step *= 2;
            }
        }
    } else if !keeps(hi) {
        return hi;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if keeps(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

fn steps_covering(d: std::time::Duration, step: TimeDelta) -> usize {
    let ms = step.num_milliseconds().max(1) as u128;
    d.as_millis().div_ceil(ms) as usize
}

impl Oracle {
    /// Plans a run from `start` to `until` in steps of `step`, with the load `load` (requests/s
    /// at a simulated instant, sampled mid-step as the closed loop does).
    pub fn plan(
        spec: &Spec,
        load: &LoadFn<'_>,
        (start, until): (DateTime<Utc>, DateTime<Utc>),
        step: TimeDelta,
        slo_ms: f64,
        (min, max): (u32, u32),
    ) -> Oracle {
        let steps = ((until - start).num_milliseconds() / step.num_milliseconds().max(1)).max(0) as usize;
        let per_minute = (60_000 / step.num_milliseconds().max(1)).max(1) as usize;
        let dt = step.num_milliseconds() as f64 / 1000.0;
        let mut need = Vec::with_capacity(steps);
        let mut last_need = None;
        for first in (0..steps).step_by(per_minute) {
            let last = (first + per_minute).min(steps);
            let rates: Vec<f64> = (first..last)
                .map(|k| load(start + step * k as i32 + step / 2))
                .collect();
            let n = tasks_needed_near(spec, &rates, dt, slo_ms, (min, max), last_need);
            last_need = Some(n);
            need.extend(std::iter::repeat_n(n, last - first));
        }
        let room = spec.instance_resources();
        let per_instance = (room.cpu / spec.task.cpu.max(1))
            .min(room.memory_mib / spec.task.memory_mib.max(1))
            .max(1);
        // Ordered after step k, a task is created at the next step and runs `task_start` later.
        let task_lead = 1 + steps_covering(spec.task_start, step);
        Oracle {
            start,
            step,
            need,
            task_lead,
            instance_lead: task_lead + steps_covering(spec.instance_boot, step),
            per_instance,
            target: format!("{}/{}", spec.cluster, spec.service),
        }
    }

    /// The most tasks needed from step `k` to `k + lead`.
    fn peak(&self, k: usize, lead: usize) -> Option<u32> {
        let hi = (k + lead + 1).min(self.need.len());
        self.need.get(k..hi)?.iter().copied().max()
    }

    /// Acts after the cluster moved to `t`: the count the coming steps need, the instances they
    /// need, and scale-in of what is no longer needed.
    pub fn act(&mut self, sim: &Sim, t: DateTime<Utc>) -> Option<ActionRow> {
        let k = ((t - self.start).num_milliseconds() / self.step.num_milliseconds().max(1)).max(0) as usize;
        let tasks = self.peak(k, self.task_lead)?;
        let instances = self
            .peak(k, self.instance_lead)
            .unwrap_or(tasks)
            .div_ceil(self.per_instance);
        let mut g = sim.lock();
        let c = &mut g.cluster;
        let from = c.desired;
        let alive = c.group_instances().count() as u32;
        if instances > alive {
            c.set_group_desired(instances.max(c.group_desired));
        }
        if tasks < from {
            c.set_desired(tasks);
            c.stop_emptiest(from - tasks);
        } else if tasks > from {
            c.set_desired(tasks);
        }
        c.release_empty(instances);
        (tasks != from).then(|| ActionRow {
            at: t,
            target: self.target.clone(),
            from,
            to: tasks,
            rule: Some("oracle".into()),
            reason: format!("the trace needs {tasks} tasks within the next {} s", {
                self.step.num_seconds() * self.task_lead as i64
            }),
        })
    }
}

impl super::cluster::Cluster {
    /// Stops `n` tasks for a scale-in, emptying the least used instances first.
    pub fn stop_emptiest(&mut self, n: u32) {
        for k in self.scale_in_order(true).into_iter().take(n as usize) {
            self.stop_for_scale_in(k);
        }
    }

    /// Terminates instances with no task placed on them, booting ones first, while more than
    /// `keep` are in the group and no task waits for room.
    pub fn release_empty(&mut self, keep: u32) {
        let keep = keep.max(self.spec.group_min);
        if self.count(TaskStatus::Provisioning) > 0 {
            return;
        }
        let mut empty: Vec<(bool, usize)> = self
            .group_instances()
            .filter(|(i, _)| self.used(*i).1 + self.used(*i).2 == 0)
            .map(|(i, inst)| (inst.status != InstanceStatus::Booting, i))
            .collect();
        empty.sort_unstable();
        let alive = self.group_instances().count() as u32;
        let surplus = alive.saturating_sub(keep) as usize;
        for (_, i) in empty.into_iter().take(surplus) {
            self.terminate_instance(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(rps: f64) -> Vec<f64> {
        vec![rps; 12]
    }

    #[test]
    fn the_count_is_the_fewest_that_keeps_the_slo_by_the_fluid_model() {
        let spec = Spec::example(); // 40 requests/s per task at full CPU
        let need = |rps: f64| tasks_needed(&spec, &steady(rps), 5.0, 250.0, 1, 100);
        // 100 requests/s: 3 tasks would run at 83 % (p95 over 250 ms), 4 at 63 %.
        assert_eq!(need(100.0), 4);
        // More load never needs fewer tasks; and the count found keeps the SLO while one less
        // does not (it comes from the model, not from a fixed utilization).
        let mut last = 0;
        for rps in (10..1200).step_by(37) {
            let n = need(rps as f64);
            assert!(n >= last, "{rps}: {n} < {last}");
            last = n;
            assert!(rps as f64 / (f64::from(n) * 40.0) < 0.9, "{rps}: {n}");
        }
        // The bounds hold: never under min, and max when nothing keeps the SLO.
        assert_eq!(tasks_needed(&spec, &steady(5.0), 5.0, 250.0, 3, 10), 3);
        assert_eq!(tasks_needed(&spec, &steady(5000.0), 5.0, 250.0, 3, 10), 10);
    }

    #[test]
    fn a_search_from_a_hint_finds_what_a_binary_search_finds() {
        let spec = Spec::example();
        for rps in (0..1300).step_by(53) {
            let rates: Vec<f64> = (0..12)
                .map(|k| rps as f64 * (1.0 + 0.1 * (k % 3) as f64))
                .collect();
            let plain = tasks_needed(&spec, &rates, 5.0, 250.0, 3, 40);
            for hint in [
                0,
                1,
                3,
                7,
                plain.saturating_sub(1),
                plain,
                plain + 1,
                20,
                39,
                40,
                99,
            ] {
                let near = tasks_needed_near(&spec, &rates, 5.0, 250.0, (3, 40), Some(hint));
                assert_eq!(near, plain, "{rps} requests/s from {hint}");
            }
        }
    }
}
