//! `ecscale tune`: a policy's numeric knobs searched on the user's own traces, in the simulator
//! (with their twin), for an objective: the fewest task-hours with at most so many SLO minutes,
//! or the fewest SLO minutes within so many task-hours.
//!
//! Not to overfit, each trace is split by time: the search sees only the first part (70 % by
//! default); the result is judged on the rest, which it never saw, with the simulation run over
//! the whole trace so the policy enters the held-out part in the state it would have (its
//! forecast's history, its count). Training and held-out figures are both reported, and the
//! held-out part's verdict is said plainly, worse or not.
//!
//! The search is a seeded local search: each round proposes candidates around the best so far
//! (one to three knobs moved by a random number of steps), runs them on every core, and keeps
//! the best; the steps shrink when a round finds nothing better. The input policy is the first
//! candidate, so the result is never worse than it on the training part. The same seed and the
//! same number of rounds give the same answer; `--budget` stops between rounds.

pub mod knobs;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy::TargetPolicy;
use crate::sim::run::{violates, Outcome};
use crate::sim::suite::{self, Contender, Job, Setup, TraceLoad};
use knobs::Knob;

/// What the tuner minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "objective", rename_all = "snake_case")]
pub enum Objective {
    /// The fewest task-hours with at most `max_slo_minutes` (default: the input's, training).
    Cost { max_slo_minutes: Option<f64> },
    /// The fewest SLO minutes within `max_task_hours` (default: the input's, training).
    Slo { max_task_hours: Option<f64> },
}

/// Task-hours and SLO minutes over some minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Score {
    pub task_hours: f64,
    pub slo_minutes: f64,
}

impl Score {
    fn add(self, o: Score) -> Score {
        Score {
            task_hours: self.task_hours + o.task_hours,
            slo_minutes: self.slo_minutes + o.slo_minutes,
        }
    }
}

impl Objective {
    /// The objective with its bound set from the input's score where it had none.
    fn bound(self, input: Score) -> Objective {
        match self {
            Objective::Cost { max_slo_minutes } => Objective::Cost {
                max_slo_minutes: Some(max_slo_minutes.unwrap_or(input.slo_minutes)),
            },
            Objective::Slo { max_task_hours } => Objective::Slo {
                max_task_hours: Some(max_task_hours.unwrap_or(input.task_hours)),
            },
        }
    }

    /// Lower is better: (how far over the bound, the quantity minimised).
    fn key(self, s: Score) -> (f64, f64) {
        match self {
            Objective::Cost { max_slo_minutes } => (
                (s.slo_minutes - max_slo_minutes.unwrap_or(f64::INFINITY)).max(0.0),
                s.task_hours,
            ),
            Objective::Slo { max_task_hours } => (
                (s.task_hours - max_task_hours.unwrap_or(f64::INFINITY)).max(0.0),
                s.slo_minutes,
            ),
        }
    }

    fn better(self, a: Score, b: Score) -> bool {
        let (ka, kb) = (self.key(a), self.key(b));
        ka.0 < kb.0 - 1e-9 || ((ka.0 - kb.0).abs() <= 1e-9 && ka.1 < kb.1 - 1e-9)
    }
}

/// How the search runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub objective: Objective,
    /// The share of each trace (by time) the search sees.
    pub split: f64,
    pub seed: u64,
    /// Stop starting rounds after this long.
    pub budget: Duration,
    /// At most this many rounds (the same seed and rounds give the same answer).
    pub rounds: Option<usize>,
    pub threads: usize,
}

/// One trace, and where its held-out part starts.
#[derive(Debug, Clone)]
pub struct Part {
    pub trace: TraceLoad,
    pub training: TraceLoad,
    pub holdout_from: chrono::DateTime<chrono::Utc>,
}

/// Splits `trace` at `share` of its span (by time, on a whole minute).
pub fn split(trace: &TraceLoad, share: f64) -> Option<Part> {
    let span = (trace.end() - trace.start()).num_minutes();
    let cut = trace.start() + chrono::TimeDelta::minutes((span as f64 * share).round() as i64);
    let samples: Vec<_> = trace
        .samples
        .iter()
        .filter(|s| s.timestamp < cut)
        .cloned()
        .collect();
    if samples.len() < 2 || cut >= trace.end() {
        return None;
    }
    Some(Part {
        training: TraceLoad {
            name: trace.name.clone(),
            period_secs: trace.period_secs,
            samples: std::sync::Arc::new(samples),
        },
        trace: trace.clone(),
        holdout_from: cut,
    })
}

/// The score of the minutes at or after `from` of a run.
pub fn score_from(o: &Outcome, from: chrono::DateTime<chrono::Utc>, slo_ms: f64) -> Score {
    o.rows
        .iter()
        .filter(|r| r.t >= from)
        .fold(Score::default(), |s, r| Score {
            task_hours: s.task_hours + r.task_seconds / 3600.0,
            slo_minutes: s.slo_minutes + f64::from(u8::from(violates(r, slo_ms))),
        })
}

fn whole(o: &Outcome) -> Score {
    Score {
        task_hours: o.totals.task_hours,
        slo_minutes: o.totals.slo_violation_minutes as f64,
    }
}

/// What the tuner found.
#[derive(Debug, Clone, Serialize)]
pub struct Tuned {
    /// The knobs and their values: the input's, the tuned.
    pub knobs: Vec<(String, f64, f64)>,
    pub objective: Objective,
    pub rounds: usize,
    pub runs: usize,
    pub training: (Score, Score),
    /// Per trace: name, input, tuned, and the oracle's, on the held-out part.
    pub holdout: Vec<(String, Score, Score, Score)>,
    #[serde(skip)]
    pub values: Vec<f64>,
}

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The subject: the service target to tune and the other targets of its file (the capacity
/// policy), the simulated cluster, and the knobs.
pub struct Subject {
    pub service: TargetPolicy,
    pub others: Vec<TargetPolicy>,
    pub setup: Setup,
    pub knobs: Vec<Knob>,
}

impl Subject {
    /// The targets with the knobs at `values`.
    fn targets(&self, values: &[f64]) -> Vec<TargetPolicy> {
        let mut s = self.service.clone();
        for (k, v) in self.knobs.iter().zip(values) {
            k.apply(&mut s, *v);
        }
        std::iter::once(s).chain(self.others.iter().cloned()).collect()
    }

    fn job(&self, values: &[f64], trace: &TraceLoad) -> Job {
        Job {
            setup: self.setup.clone(),
            trace: trace.clone(),
            contender: Contender::Ecscale(self.targets(values)),
        }
    }
}

/// Candidates around `best`: each moves one to three knobs by one to `reach` steps.
fn propose(knobs: &[Knob], best: &[f64], n: usize, reach: i64, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        let mut c = best.to_vec();
        let moves = 1 + rng.below(3.min(knobs.len()));
        for _ in 0..moves {
            let k = rng.below(knobs.len());
            let steps = 1 + rng.below(reach.max(1) as usize) as i64;
            let sign = if rng.next() & 1 == 0 { -1.0 } else { 1.0 };
            c[k] = knobs[k].clamp(c[k] + sign * steps as f64 * knobs[k].step);
        }
        if c != best && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Runs each candidate on every training part; the summed scores, in order.
/// A candidate's training score: in all, and in each half of the training parts (by time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Scored {
    all: Score,
    halves: [Score; 2],
}

fn evaluate(
    subject: &Subject,
    parts: &[Part],
    candidates: &[Vec<f64>],
    threads: usize,
) -> anyhow::Result<Vec<Scored>> {
    let jobs: Vec<Job> = candidates
        .iter()
        .flat_map(|c| parts.iter().map(move |p| subject.job(c, &p.training)))
        .collect();
    let mut outcomes = suite::run_all(jobs, threads).into_iter();
    let mut out = Vec::with_capacity(candidates.len());
    for _ in candidates {
        let mut s = Scored::default();
        for p in parts {
            let o = outcomes
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("a run is missing")))?;
            let mid = p.training.start() + (p.training.end() - p.training.start()) / 2;
            let (all, late) = (whole(&o), score_from(&o, mid, subject.setup.slo_ms));
            let early = Score {
                task_hours: all.task_hours - late.task_hours,
                slo_minutes: all.slo_minutes - late.slo_minutes,
            };
            s.all = s.all.add(all);
            s.halves = [s.halves[0].add(early), s.halves[1].add(late)];
        }
        out.push(s);
    }
    Ok(out)
}

/// Searches the knobs; `progress` hears after each round (round, runs, best score).
pub fn tune(
    subject: &Subject,
    parts: &[Part],
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, Score),
) -> anyhow::Result<Tuned> {
    let started = Instant::now();
    let input: Vec<f64> = subject.knobs.iter().map(|k| k.value).collect();
    let first = evaluate(subject, parts, std::slice::from_ref(&input), opts.threads)?;
    let input_score = first[0].all;
    let objective = opts.objective.bound(input_score);
    let mut search = Search::new(objective, input.clone(), first[0]);
    let mut rng = Rng(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut runs, mut rounds) = (parts.len(), 0);
    let width = (opts.threads * 2).max(4);
    progress(0, runs, search.best_score.all);
    while !subject.knobs.is_empty()
        && opts.rounds.is_none_or(|r| rounds < r)
        && (opts.rounds.is_some() || started.elapsed() < opts.budget)
    {
        rounds += 1;
        let candidates = propose(&subject.knobs, &search.current, width, search.reach, &mut rng);
        if candidates.is_empty() {
            break;
        }
        let scores = evaluate(subject, parts, &candidates, opts.threads)?;
        runs += candidates.len() * parts.len();
        search.round(candidates.into_iter().zip(scores).collect());
        progress(rounds, runs, search.best_score.all);
    }
    let best = search.best.clone();
    let holdout = holdout(subject, parts, (&input, &best), opts.threads)?;
    Ok(Tuned {
        knobs: subject
            .knobs
            .iter()
            .zip(input.iter().zip(&best))
            .map(|(k, (a, b))| (k.name.clone(), *a, *b))
            .collect(),
        objective,
        rounds,
        runs,
        training: (input_score, search.best_score.all),
        holdout,
        values: best,
    })
}

/// The search's state. It walks by a price on SLO minutes (task-hours per minute over the SLO),
/// so it may pass through settings over the objective's bound on its way to better ones (more
/// room bought here, given back there); the price rises while it stands over the bound and falls
/// while it has slack. What it returns is the best setting *within* the bound seen, the input at
/// worst, where within means in each half of the training parts too (each half's share of the
/// bound): a gain that one stretch of history alone pays for is noise the search selected, and
/// does not carry over to the held-out part.
struct Search {
    objective: Objective,
    /// The input's halves: how the bound is shared between them.
    input: Scored,
    /// Where the walk stands, and its score.
    current: Vec<f64>,
    current_score: Score,
    /// The best within the bound.
    best: Vec<f64>,
    best_score: Scored,
    /// Task-hours one SLO minute is worth.
    price: f64,
    reach: i64,
    stale: usize,
}

impl Search {
    fn new(objective: Objective, input: Vec<f64>, score: Scored) -> Search {
        Search {
            objective,
            input: score,
            current: input.clone(),
            current_score: score.all,
            best: input,
            best_score: score,
            price: 0.1 * score.all.task_hours / score.all.slo_minutes.max(1.0),
            reach: 4,
            stale: 0,
        }
    }

    fn cost(&self, s: Score) -> f64 {
        s.task_hours + self.price * s.slo_minutes
    }

    fn within_all(&self, s: Score) -> bool {
        self.objective.key(s).0 <= 1e-9
    }

    /// Within the bound in all and in each half (the bound shared as the input's score is).
    fn within(&self, s: &Scored) -> bool {
        let share = |half: Score, input: Score, total: Score| match self.objective {
            Objective::Cost { max_slo_minutes } => {
                let bound = max_slo_minutes.unwrap_or(f64::INFINITY);
                let part = if total.slo_minutes > 0.0 {
                    bound * input.slo_minutes / total.slo_minutes
                } else {
                    bound / 2.0
                };
                half.slo_minutes <= part + 1e-9
            }
            Objective::Slo { max_task_hours } => {
                let bound = max_task_hours.unwrap_or(f64::INFINITY);
                half.task_hours <= bound * input.task_hours / total.task_hours.max(1e-9) + 1e-9
            }
        };
        self.within_all(s.all) && (0..2).all(|h| share(s.halves[h], self.input.halves[h], self.input.all))
    }

    /// One round's candidates and their scores.
    fn round(&mut self, scored: Vec<(Vec<f64>, Scored)>) {
        for (c, s) in &scored {
            if self.within(s) && self.objective.better(s.all, self.best_score.all) {
                (self.best, self.best_score) = (c.clone(), *s);
            }
        }
        let step = scored
            .into_iter()
            .filter(|(_, s)| self.cost(s.all) < self.cost(self.current_score) - 1e-9)
            .min_by(|a, b| self.cost(a.1.all).total_cmp(&self.cost(b.1.all)));
        match step {
            Some((c, s)) => (self.current, self.current_score, self.stale) = (c, s.all, 0),
            None => {
                self.stale += 1;
                if self.stale >= 2 {
                    self.reach = (self.reach / 2).max(1);
                    self.stale = 0;
                }
            }
        }
        // Over the bound: SLO minutes dearer (or task-hours, for the slo objective); with
        // slack, cheaper.
        let over = !self.within_all(self.current_score);
        let slo_bound = matches!(self.objective, Objective::Cost { .. });
        self.price *= if over == slo_bound { 1.5 } else { 0.8 };
    }
}

/// The input and the tuned policy, and the oracle, over each whole trace, scored on the held-out
/// part.
fn holdout(
    subject: &Subject,
    parts: &[Part],
    (input, best): (&[f64], &[f64]),
    threads: usize,
) -> anyhow::Result<Vec<(String, Score, Score, Score)>> {
    let mut jobs = Vec::new();
    for p in parts {
        jobs.push(subject.job(input, &p.trace));
        jobs.push(subject.job(best, &p.trace));
        jobs.push(Job {
            setup: subject.setup.clone(),
            trace: p.trace.clone(),
            contender: Contender::Oracle,
        });
    }
    let mut outcomes = suite::run_all(jobs, threads).into_iter();
    let mut out = Vec::new();
    for p in parts {
        let mut next = || -> anyhow::Result<Score> {
            let o = outcomes
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("a run is missing")))?;
            Ok(score_from(&o, p.holdout_from, subject.setup.slo_ms))
        };
        out.push((p.trace.name.clone(), next()?, next()?, next()?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
