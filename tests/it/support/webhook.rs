//! A local webhook on a free loopback port: it records the JSON bodies it is sent and answers
//! as it is told (200, an error status, or never).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// How the webhook answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// Bodies received (whatever the answer), with their Authorization header.
type Received = Arc<Mutex<Vec<(serde_json::Value, Option<String>)>>>;

pub struct Webhook {
    pub url: String,
    got: Received,
}

impl Webhook {
    pub async fn start(answer: Answer) -> Webhook {
        let got: Received = Arc::default();
        let g = got.clone();
        let addr = super::serve(move |req| receive(req, g.clone(), answer)).await;
        let url = format!("http://{addr}/hook");
        Webhook { url, got }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().iter().map(|(b, _)| b.clone()).collect()
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.got.lock().unwrap().iter().map(|(_, a)| a.clone()).collect()
    }
}

async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    got: Received,
    answer: Answer,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    got.lock().unwrap().push((json, auth));
    let status = match answer {
        Answer::Ok => 200,
        Answer::Status(s) => s,
        Answer::Hang => {
            std::future::pending::<()>().await;
            200
        }
    };
    Ok(hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap())
}
