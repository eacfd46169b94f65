//! Metrics read from Prometheus's HTTP API instead of CloudWatch, into the same complete-period
//! series.
//!
//! One `query_range` per metric with `step` = its period. Prometheus evaluates a query at
//! instants; the value at `t + period` is what the period `[t, t + period)` ended with (for a
//! `rate(x[1m])` over a 1-minute period, exactly the rate over it), so it is kept as the sample
//! of the period starting at `t`, and only for complete periods (`t + period <= now - delay`),
//! as CloudWatch's are.
//!
//! What is not a number is not data: an empty result, NaN and ±Inf are missing datapoints, so the
//! policy's missing-data rules apply (an empty result read as 0 is how scalers scale services
//! down at peak). Several series where one is expected is an error, never a silent pick.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::cloudwatch::{align_down, ResolvedMetric};
use super::Collector;
use crate::aws::sigv4::FORM;
use crate::aws::Signer;
use crate::config::PrometheusSettings;
use crate::model::{Problem, Sample, Series};

/// The usage figures' name for a query.
pub const OPERATION: &str = "Prometheus.QueryRange";
/// Prometheus refuses a range query of more than 11,000 points per series.
const MAX_POINTS: i64 = 11_000;
/// The largest answer read.
const MAX_BODY: usize = 16 << 20;

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
    /// SigV4 with the AWS credential chain: the region (none: the AWS settings') and name.
    SigV4 {
        region: Option<String>,
        service: String,
    },
}

/// The HTTP client of the Prometheus metrics, with its auth read from the environment.
pub struct PromClient {
    http: reqwest::Client,
    url: Option<String>,
    auth: Auth,
    signer: Option<Signer>,
}

fn secret(var: &str, field: &str) -> Result<String, String> {
    crate::config::env::secret(var, &format!("prometheus.{field}"))
}

impl PromClient {
    pub fn new(s: &PrometheusSettings) -> Result<PromClient, String> {
        let auth = match (&s.bearer_token_env, &s.username, &s.password_env, &s.sigv4) {
            (Some(var), _, _, _) => Auth::Bearer(secret(var, "bearer_token_env")?),
            (None, Some(user), Some(var), _) => Auth::Basic(user.clone(), secret(var, "password_env")?),
            (_, _, _, Some(v)) => Auth::SigV4 {
                region: v.region.clone(),
                service: v.service.clone(),
            },
            _ => Auth::None,
        };
        let timeout = s.timeout.unwrap_or(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("prometheus: {e}"))?;
        Ok(PromClient {
            http,
            url: s.url.clone(),
            auth,
            signer: None,
        })
    }

    /// Signs with these credentials when `prometheus.sigv4` is set.
    pub fn with_signer(mut self, signer: Option<Signer>) -> Self {
        self.signer = signer;
        self
    }

    /// `query_range` of one query: its series, as (labels, points).
    async fn query_range(
        &self,
        base: &str,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: i64,
    ) -> Result<Vec<PromSeries>, String> {
        let url = format!("{}/api/v1/query_range", base.trim_end_matches('/'));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("start", &start.timestamp().to_string())
            .append_pair("end", &end.timestamp().to_string())
            .append_pair("step", &step.to_string())
            .finish();
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, FORM)
            .body(body.clone());
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::SigV4 { region, service } => {
                let signer = self
                    .signer
                    .as_ref()
                    .ok_or("prometheus.sigv4: no AWS credential chain to sign with")?;
                let headers = signer
                    .headers(region.as_deref(), service, &url, body.as_bytes())
                    .await?;
                headers.into_iter().fold(req, |r, (k, v)| r.header(k, v))
            }
        };
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("{url}: no answer in time")
            } else {
                format!("{url}: {}", crate::read::bounded::describe(e))
            }
        })?;
        let status = resp.status();
        let body = read_bounded(resp).await.map_err(|e| format!("{url}: {e}"))?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: answered {status} with what is not Prometheus's API JSON ({e})"))?;
        match answer {
            Answer {
                status: s,
                data: Some(Data { result_type, result }),
                ..
            } if s == "success" && result_type == "matrix" => Ok(result),
            Answer {
                status: s,
                data: Some(Data { result_type, .. }),
                ..
            } if s == "success" => Err(format!("the query gave a {result_type}, not a range of values")),
            Answer {
                error_type, error, ..
            } => Err(format!(
                "{url} answered {status}: {}: {}",
                error_type.unwrap_or_else(|| "error".into()),
                error.unwrap_or_default()
            )),
        }
    }
}

/// The body, up to [`MAX_BODY`].
async fn read_bounded(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    crate::read::bounded::read(resp, MAX_BODY)
        .await
        .map_err(|e| e.describe(MAX_BODY))
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn labels(s: &PromSeries) -> String {
    let inner: Vec<String> = s.metric.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The complete periods one metric keeps: `[from, until)`, at most [`MAX_POINTS`] of them.
fn window(now: DateTime<Utc>, m: &ResolvedMetric, lookback: Duration) -> (DateTime<Utc>, DateTime<Utc>, i64) {
    let period = i64::try_from(m.spec.period.as_secs()).unwrap_or(60).max(1);
    let delay = TimeDelta::from_std(m.spec.delay).unwrap_or(TimeDelta::zero());
    let until = align_down(now - delay, period);
    let lookback = TimeDelta::from_std(lookback)
        .unwrap_or(TimeDelta::MAX)
        .min(TimeDelta::seconds(period * MAX_POINTS));
    (align_down(until - lookback, period), until, period)
}

/// The samples of one answer: one period each, numbers only; or why there are none.
fn samples(
    m: &ResolvedMetric,
    result: Vec<PromSeries>,
    (from, until, period): (DateTime<Utc>, DateTime<Utc>, i64),
) -> Result<Vec<Sample>, (String, String)> {
    let mut result = result;
    match result.len() {
        0 => return Ok(Vec::new()),
        1 => {}
        n => {
            let shown: Vec<String> = result.iter().take(3).map(labels).collect();
            return Err((
                "Error:several_series".into(),
                format!(
                    "metric `{}`: the query gave {n} series ({}{}); one is expected: aggregate it (sum, max, avg by …)",
                    m.spec.id,
                    shown.join(", "),
                    if n > 3 { ", …" } else { "" }
                ),
            ));
        }
    }
    let series = result.remove(0);
    let mut out: Vec<Sample> = series
        .values
        .into_iter()
        .filter_map(|(at, v)| {
            let value: f64 = v.parse().ok().filter(|x: &f64| x.is_finite())?;
            let end = DateTime::from_timestamp(at.round() as i64, 0)?;
            let timestamp = end - TimeDelta::seconds(period);
            (timestamp >= from && timestamp < until).then_some(Sample { timestamp, value })
        })
        .collect();
    out.sort_by_key(|s| s.timestamp);
    out.dedup_by_key(|s| s.timestamp);
    Ok(out)
}

/// Reads every Prometheus metric (at most `collect.concurrency` queries at once).
pub(super) async fn fetch(
    c: &Collector,
    now: DateTime<Utc>,
    metrics: Vec<ResolvedMetric>,
) -> (Vec<Series>, Vec<Problem>) {
    let answers = futures::future::join_all(metrics.iter().map(|m| c.limited(read_one(c, now, m)))).await;
    let mut series = Vec::new();
    let mut problems = Vec::new();
    for (m, (s, p)) in metrics.into_iter().zip(answers) {
        problems.extend(p.map(|message| Problem {
            scope: m.key.to_string(),
            message,
        }));
        series.push(s);
    }
    (series, problems)
}

async fn read_one(c: &Collector, now: DateTime<Utc>, m: &ResolvedMetric) -> (Series, Option<String>) {
    let w = window(now, m, c.settings.lookback);
    let (status, samples, problem) = match query(c, m, w).await {
        Ok(result) => match samples(m, result, w) {
            Ok(s) if s.is_empty() => ("Empty".to_string(), s, None),
            Ok(s) => ("Complete".to_string(), s, None),
            Err((status, why)) => (status, Vec::new(), Some(why)),
        },
        Err(e) => (
            "Error:prometheus".to_string(),
            Vec::new(),
            Some(format!("metric `{}`: {e}", m.spec.id)),
        ),
    };
    // Prometheus series carry no CloudWatch unit.
    let mut series = super::cloudwatch::resolved_series(m, status, w.1, samples);
    series.unit = None;
    (series, problem)
}

async fn query(
    c: &Collector,
    m: &ResolvedMetric,
    (from, until, period): (DateTime<Utc>, DateTime<Utc>, i64),
) -> Result<Vec<PromSeries>, String> {
    let client = c.prometheus.as_ref().map_err(Clone::clone)?;
    let q = m.spec.prometheus.as_ref().ok_or("not a Prometheus metric")?;
    let base = q
        .url
        .as_deref()
        .or(client.url.as_deref())
        .ok_or("no prometheus.url")?;
    if until <= from {
        return Ok(Vec::new());
    }
    c.meter.call(OPERATION);
    let got = client
        .query_range(
            base,
            &m.spec.metric_name,
            from + TimeDelta::seconds(period),
            until,
            period,
        )
        .await;
    c.meter.attempt(OPERATION, got.is_err());
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MetricSpec, PromQuery};
    use crate::model::ServiceKey;

    fn metric() -> ResolvedMetric {
        ResolvedMetric {
            key: ServiceKey::new("prod", "web"),
            spec: MetricSpec {
                id: "load".into(),
                namespace: "Prometheus".into(),
                metric_name: "sum(rate(http_requests_total[1m]))".into(),
                dimensions: Default::default(),
                stat: "value".into(),
                period: Duration::from_secs(60),
                delay: Duration::from_secs(30),
                unit: None,
                unit_filter: false,
                per_task: false,
                prometheus: Some(PromQuery {
                    query: "sum(rate(http_requests_total[1m]))".into(),
                    url: None,
                }),
            }
            .into(),
        }
    }

    fn answer(json: &str) -> Vec<PromSeries> {
        let a: Answer = serde_json::from_str(json).unwrap();
        a.data.unwrap().result
    }

    #[test]
    fn values_at_a_period_end_are_the_samples_of_that_period_and_non_numbers_are_missing() {
        let now = DateTime::from_timestamp(1_700_000_095, 0).unwrap();
        let m = metric();
        let w = window(now, &m, Duration::from_secs(300));
        // until: align_down(now - 30 s, 60) = …040; from: five periods before.
        assert_eq!(
            (w.0.timestamp(), w.1.timestamp(), w.2),
            (1_699_999_740, 1_700_000_040, 60)
        );
        let got = samples(
            &m,
            answer(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1699999800,"4"],[1699999860,"NaN"],[1699999920,"+Inf"],[1699999980,"7.5"],[1700000040,"9"]]}]}}"#),
            w,
        )
        .unwrap();
        let points: Vec<(i64, f64)> = got.iter().map(|s| (s.timestamp.timestamp(), s.value)).collect();
        assert_eq!(
            points,
            [(1_699_999_740, 4.0), (1_699_999_920, 7.5), (1_699_999_980, 9.0)]
        );
    }

    #[test]
    fn several_series_are_an_error_and_none_is_no_data() {
        let now = DateTime::from_timestamp(1_700_000_095, 0).unwrap();
        let m = metric();
        let w = window(now, &m, Duration::from_secs(300));
        let two = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":"a"},"values":[[1700000040,"1"]]},{"metric":{"pod":"b"},"values":[[1700000040,"2"]]}]}}"#;
        let (status, why) = samples(&m, answer(two), w).unwrap_err();
        assert_eq!(status, "Error:several_series");
        assert_eq!(
            why,
            "metric `load`: the query gave 2 series ({pod=\"a\"}, {pod=\"b\"}); one is expected: aggregate it (sum, max, avg by …)"
        );
        let none = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(samples(&m, answer(none), w).unwrap().is_empty());
    }

    #[test]
    fn a_long_lookback_is_cut_to_what_one_query_may_return() {
        let now = DateTime::from_timestamp(1_700_000_095, 0).unwrap();
        let mut m = metric();
        std::sync::Arc::make_mut(&mut m.spec).period = Duration::from_secs(1);
        let (from, until, _) = window(now, &m, Duration::from_secs(86_400));
        assert_eq!((until - from).num_seconds(), MAX_POINTS);
    }

    #[tokio::test]
    async fn a_sigv4_query_carries_a_signature_that_recomputes_from_what_the_server_got() {
        use aws_credential_types::provider::SharedCredentialsProvider;
        use aws_credential_types::Credentials;
        use http_body_util::BodyExt;
        type Got = std::sync::Arc<std::sync::Mutex<Option<(Vec<(String, String)>, Vec<u8>)>>>;
        let got: Got = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let g = got.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let g = g.clone();
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect();
                    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                    *g.lock().unwrap() = Some((headers, body));
                    let answer = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000040,"3"]]}]}}"#;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(answer),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
        let signer = Signer {
            provider: SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "s3cret", None, None, "test",
            )),
            region: "eu-west-1".into(),
        };
        let settings = PrometheusSettings {
            url: Some(base.clone()),
            sigv4: Some(crate::config::SigV4Settings {
                region: None,
                service: "aps".into(),
            }),
            ..Default::default()
        };
        let client = PromClient::new(&settings)
            .unwrap()
            .with_signer(Some(signer.clone()));
        let t = DateTime::from_timestamp(1_700_000_040, 0).unwrap();
        let series = client.query_range(&base, "sum(up)", t, t, 60).await.unwrap();
        assert_eq!(series.len(), 1);
        let (headers, body) = got.lock().unwrap().take().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let auth = header("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/aps/aws4_request"), "{auth}");
        // The server's side: the same request, signed at the time it says, gives the same.
        let date = header("x-amz-date");
        let at = chrono::NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        let identity = Credentials::new("AKIDTEST", "s3cret", None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("aps")
            .time(std::time::SystemTime::from(at))
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("{base}/api/v1/query_range");
        let req = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            &url,
            [("content-type", FORM)].into_iter(),
            aws_sigv4::http_request::SignableBody::Bytes(&body),
        )
        .unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(req, &params).unwrap().into_parts();
        let expected = instructions
            .headers()
            .find(|(k, _)| *k == "authorization")
            .unwrap()
            .1
            .to_string();
        assert_eq!(auth, expected);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "query=sum%28up%29&start=1700000040&end=1700000040&step=60"
        );
    }
}
