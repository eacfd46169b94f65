//! SSM Parameter Store's GetParameter, the one SSM call the worker makes: its config and policy
//! files kept in step with parameters (`ecscale run --from-ssm`). The call is SigV4-signed JSON
//! (AWS's JSON 1.1 protocol) with the credential chain the SDK clients use, so one operation
//! does not compile a whole SDK crate.

use serde::Deserialize;

use super::sigv4::{Post, Signer};
use crate::usage::ApiMeter;

/// The largest answer read: an advanced parameter holds at most 8 KB, and its JSON envelope
/// is small.
const MAX_BODY: usize = 64 * 1024;
const OPERATION: &str = "GetParameter";

/// A parameter's text and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub value: String,
    pub version: i64,
}

/// SSM at one endpoint, signing with one credential chain.
#[derive(Clone)]
pub struct ParameterStore {
    http: reqwest::Client,
    endpoint: String,
    signer: Signer,
    meter: ApiMeter,
}

impl std::fmt::Debug for ParameterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterStore")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Parameter")]
    parameter: Option<Found>,
}

#[derive(Deserialize)]
struct Found {
    #[serde(rename = "Value")]
    value: String,
    #[serde(rename = "Version")]
    version: i64,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(rename = "__type")]
    kind: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    message_capital: Option<String>,
}

impl ParameterStore {
    pub fn new(endpoint: String, signer: Signer, meter: ApiMeter) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| format!("SSM client: {e}"))?;
        Ok(ParameterStore {
            http,
            endpoint,
            signer,
            meter,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The parameter `name` (a name or an ARN), decrypted when it is a SecureString. The error
    /// names the parameter, the endpoint and what SSM said.
    pub async fn get(&self, name: &str) -> Result<Parameter, String> {
        self.meter.call(OPERATION);
        let got = self.attempt(name).await;
        self.meter.attempt(OPERATION, got.is_err());
        got.map_err(|e| format!("SSM parameter {name} at {}: {e}", self.endpoint))
    }

    async fn attempt(&self, name: &str) -> Result<Parameter, String> {
        let body = serde_json::json!({"Name": name, "WithDecryption": true}).to_string();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "AmazonSSM.GetParameter"),
        ];
        let post = Post {
            url: &self.endpoint,
            headers: &headers,
            body: body.as_bytes(),
        };
        let signed = self.signer.sign(None, "ssm", post).await?;
        let req = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(signed)
            .fold(self.http.post(&self.endpoint), |r, (k, v)| r.header(k, v));
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                crate::read::bounded::describe(e)
            }
        })?;
        let status = resp.status();
        let bytes = crate::read::bounded::read(resp, MAX_BODY)
            .await
            .map_err(|e| e.describe(MAX_BODY))?;
        answer(status, &bytes)
    }
}

/// The parameter in SSM's answer, or what SSM refused and why.
fn answer(status: reqwest::StatusCode, body: &[u8]) -> Result<Parameter, String> {
    if !status.is_success() {
        let r: Refusal = serde_json::from_slice(body).unwrap_or(Refusal {
            kind: None,
            message: None,
            message_capital: None,
        });
        let kind = r.kind.as_deref().unwrap_or("error");
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let message = r.message.or(r.message_capital);
        return Err(format!(
            "answered {status}: {kind}{}",
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("answered {status} with what is not GetParameter's JSON ({e})"))?;
    let p = a
        .parameter
        .ok_or_else(|| format!("answered {status} without a Parameter"))?;
    Ok(Parameter {
        value: p.value,
        version: p.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn an_answer_gives_the_value_and_version_and_a_refusal_says_what_ssm_said() {
        let ok = br#"{"Parameter":{"Name":"/e/c","Type":"String","Value":"a: 1\n","Version":3}}"#;
        assert_eq!(
            answer(StatusCode::OK, ok),
            Ok(Parameter {
                value: "a: 1\n".into(),
                version: 3
            })
        );
        let missing = br#"{"__type":"com.amazonaws.ssm#ParameterNotFound","message":"no such"}"#;
        assert_eq!(
            answer(StatusCode::BAD_REQUEST, missing),
            Err("answered 400 Bad Request: ParameterNotFound: no such".into())
        );
        let denied = br#"{"__type":"AccessDeniedException","Message":"not allowed"}"#;
        let both = br#"{"__type":"ParameterNotFound","message":"gone","Message":"gone"}"#;
        assert_eq!(
            answer(StatusCode::BAD_REQUEST, both),
            Err("answered 400 Bad Request: ParameterNotFound: gone".into())
        );
        assert_eq!(
            answer(StatusCode::BAD_REQUEST, denied),
            Err("answered 400 Bad Request: AccessDeniedException: not allowed".into())
        );
        assert_eq!(
            answer(StatusCode::BAD_GATEWAY, b"<html>"),
            Err("answered 502 Bad Gateway: error".into())
        );
        assert!(answer(StatusCode::OK, b"{}")
            .unwrap_err()
            .contains("without a Parameter"));
        assert!(answer(StatusCode::OK, b"[")
            .unwrap_err()
            .contains("not GetParameter's JSON"));
    }
}
