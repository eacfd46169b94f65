//! Field checks shared by the config's readers: URLs, CloudWatch periods, variable names.

use std::time::Duration;

use crate::read::yaml::Node;
use crate::read::{Cx, FromNode};

pub fn check_http_url(s: &str) -> Result<(), String> {
    // The one rule for credentials in URLs, wherever a URL comes from (file, variable, flag):
    // refused, and never shown.
    let shown = redact_url(s);
    match url::Url::parse(s) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(format!(
            "`{shown}`: credentials in a URL are not accepted (they would end up in logs and messages); for Elasticsearch give sink.elasticsearch.username with password_env, or api_key_env"
        )),
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "`{shown}` must be an http:// or https:// URL with a host (scheme `{}`)",
            u.scheme()
        )),
        Err(e) => Err(format!("`{shown}` is not a URL: {e}")),
    }
}

/// `s` with whatever stands between `://` and the host's `@` replaced by `***`: safe to show,
/// even when `s` is not a valid URL.
pub fn redact_url(s: &str) -> String {
    let Some(i) = s.find("://") else {
        return match s.rfind('@') {
            Some(at) => format!("***{}", &s[at..]),
            None => s.to_string(),
        };
    };
    let rest = &s[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..i + 3], &rest[at..]),
        None => s.to_string(),
    }
}

/// CloudWatch accepts periods of 1, 5, 10, 20 or 30 seconds (high-resolution metrics) or any
/// multiple of 60 seconds.
pub fn check_period(d: Duration, n: &Node, p: &str, cx: &mut Cx) -> Option<Duration> {
    let s = d.as_secs();
    if d.subsec_nanos() == 0 && (matches!(s, 1 | 5 | 10 | 20 | 30) || (s > 0 && s % 60 == 0)) {
        Some(d)
    } else {
        cx.error(
            n.span,
            p,
            format!(
                "CloudWatch periods are 1s, 5s, 10s, 20s, 30s or a multiple of 60s; found {}",
                humantime::format_duration(d)
            ),
        );
        None
    }
}

/// The name of an environment variable that holds a secret (never the secret itself).
pub fn env_name(n: &Node, p: &str, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(n, p, cx)?;
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some(s)
    } else {
        cx.error(n.span, p, format!("`{s}` is not an environment variable name: give the variable's name, never the secret itself"));
        None
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-central-2`: letters, dash-separated, ending in a number.
pub fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}
