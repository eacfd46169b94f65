//! What the simulated CloudWatch holds for the service, as a trace: the history `trace export`
//! would write for it from AWS. A twin fitted to it ([`super::twin`]) should find the
//! simulator's own parameters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::baseline::query;
use super::twin::columns;
use super::Sim;
use crate::evaluate::trace::{self, Trace};
use crate::model::Sample;

/// A metric: namespace, name, dimensions.
type Metric<'a> = (&'a str, &'a str, Vec<(String, String)>);

/// Every minute of `[start, end)` of the service, as visible at `end`.
pub fn trace_of(sim: &Sim, (start, end): (DateTime<Utc>, DateTime<Utc>)) -> Trace {
    let spec = &sim.spec;
    let svc = || {
        vec![
            ("ClusterName".to_string(), spec.cluster.clone()),
            ("ServiceName".to_string(), spec.service.clone()),
        ]
    };
    let tg = || vec![("TargetGroup".to_string(), spec.target_group())];
    let asg = || {
        vec![(
            "AutoScalingGroupName".to_string(),
            spec.auto_scaling_group.clone(),
        )]
    };
    let wanted: [(&str, Metric, &str); 9] = [
        (columns::LOAD, ("AWS/ApplicationELB", "RequestCount", tg()), "Sum"),
        (columns::CPU, ("AWS/ECS", "CPUUtilization", svc()), "Average"),
        (
            columns::RESPONSE_TIME,
            ("AWS/ApplicationELB", "TargetResponseTime", tg()),
            "Average",
        ),
        (
            "running",
            ("ECS/ContainerInsights", "RunningTaskCount", svc()),
            "Average",
        ),
        (
            columns::DESIRED,
            ("ECS/ContainerInsights", "DesiredTaskCount", svc()),
            "Average",
        ),
        (
            columns::PENDING,
            ("ECS/ContainerInsights", "PendingTaskCount", svc()),
            "Average",
        ),
        (
            columns::INSTANCES,
            ("AWS/AutoScaling", "GroupInServiceInstances", asg()),
            "Average",
        ),
        (
            columns::INSTANCES_PENDING,
            ("AWS/AutoScaling", "GroupPendingInstances", asg()),
            "Average",
        ),
        (
            columns::GROUP_DESIRED,
            ("AWS/AutoScaling", "GroupDesiredCapacity", asg()),
            "Average",
        ),
    ];
    let mut series: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut running = BTreeMap::new();
    for (id, metric, stat) in wanted {
        let points = query(sim, metric, (stat, 60), (start, end), end);
        if id == "running" {
            running = points
                .iter()
                .map(|(t, v)| (*t, v.round().max(0.0) as u32))
                .collect();
            continue;
        }
        let samples = points
            .into_iter()
            .map(|(timestamp, value)| Sample { timestamp, value })
            .collect();
        series.insert(id.to_string(), samples);
    }
    trace::from_series("simulator", series, running, 60)
}
