//! Seeds a moto server with a demo ECS cluster for `scripts/demo`: services tagged `app: demo`
//! (and one that is not), an Auto Scaling group `CLUSTER-asg` whose three EC2 instances are
//! registered container instances with running tasks, and 20 minutes of CPU, memory and
//! queue-depth datapoints.
//!
//!     moto_sandbox --endpoint http://127.0.0.1:5000 [--region us-east-1] [--cluster demo]

#[path = "../tests/it/support/moto.rs"]
mod moto;

use aws_sdk_cloudwatch::types::StandardUnit;
use chrono::{TimeDelta, Utc};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint =
        arg(&args, "--endpoint").ok_or("usage: moto_sandbox --endpoint URL [--region R] [--cluster NAME]")?;
    let region = arg(&args, "--region").unwrap_or_else(|| "us-east-1".into());
    let cluster = arg(&args, "--cluster").unwrap_or_else(|| "demo".into());
    let moto = moto::Moto::new(&endpoint, &region);

    moto.cluster(&cluster).await?;
    let web = moto.task_definition("demo-web", 256, 512).await?;
    let worker = moto.task_definition("demo-worker", 512, 1024).await?;
    let services: [(&str, &str, i32); 7] = [
        ("web-frontend", web.as_str(), 4),
        ("web-api", web.as_str(), 3),
        ("web-admin", web.as_str(), 1),
        ("worker-email", worker.as_str(), 2),
        ("worker-thumbnails", worker.as_str(), 3),
        ("worker-reports", worker.as_str(), 1),
        ("nightly-batch", worker.as_str(), 0),
    ];
    for (name, td, desired) in services {
        moto.service(&cluster, name, td, desired, &[("app", "demo")])
            .await?;
    }
    moto.service(&cluster, "legacy-cron", &worker, 1, &[("app", "legacy")])
        .await?;
    // The cluster's EC2 capacity: an Auto Scaling group of three instances, registered.
    let group = format!("{cluster}-asg");
    moto.group(&group, "m5.xlarge", 1, 10, 3).await?;
    moto.register_group(&cluster, &group).await?;
    moto.run_tasks(&cluster, &web, 8).await?;
    moto.run_tasks(&cluster, &worker, 6).await?;

    // A morning ramp: load grows over the last 20 minutes, each service at its own level.
    let now = Utc::now();
    let minute = now.timestamp() - now.timestamp().rem_euclid(60);
    let mut points = 0;
    for (i, (name, _, _)) in services.iter().enumerate() {
        let dims = [("ClusterName", cluster.as_str()), ("ServiceName", *name)];
        let series = |base: f64, slope: f64| -> Vec<_> {
            (1..=20)
                .map(|k| {
                    let t =
                        chrono::DateTime::from_timestamp(minute, 0).unwrap_or(now) - TimeDelta::minutes(k);
                    let v = base + slope * (20 - k) as f64 + 3.0 * ((k + i as i64) as f64).sin();
                    (t, (v * 10.0).round() / 10.0)
                })
                .collect()
        };
        let cpu = series(20.0 + 5.0 * i as f64, 2.0);
        let memory = series(35.0 + 2.0 * i as f64, 0.4);
        moto.put_points("AWS/ECS", "CPUUtilization", &dims, StandardUnit::Percent, &cpu)
            .await?;
        moto.put_points(
            "AWS/ECS",
            "MemoryUtilization",
            &dims,
            StandardUnit::Percent,
            &memory,
        )
        .await?;
        points += cpu.len() + memory.len();
        if name.starts_with("worker-") {
            let depth = series(100.0 * i as f64, 15.0);
            moto.put_points(
                "Demo",
                "QueueDepth",
                &[("Service", *name)],
                StandardUnit::Count,
                &depth,
            )
            .await?;
            points += depth.len();
        }
    }
    println!(
        "moto_sandbox: seeded cluster {cluster} in {region}: {} services tagged app=demo (+1 not), Auto Scaling group {group} of 3 registered instances, 14 running tasks, {points} datapoints",
        services.len()
    );
    Ok(())
}
