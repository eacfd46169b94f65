//! Reading an HTTP answer's body with a bound, so a hostile or broken server cannot exhaust
//! memory (plugins, Prometheus, the stress coordinator), and saying why a request failed.

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// It is longer than the bound.
    TooLarge,
    Read(reqwest::Error),
}

impl BodyError {
    /// In words, for a bound of `max` bytes.
    pub fn describe(self, max: usize) -> String {
        match self {
            BodyError::TooLarge if max >= 1 << 20 => {
                format!("the answer is larger than {} MiB", max >> 20)
            }
            BodyError::TooLarge => format!("the answer is larger than {max} bytes"),
            BodyError::Read(e) => describe(e),
        }
    }
}

/// The body of `resp`, at most `max` bytes.
pub async fn read(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a request failed, with its causes ("error sending request" alone names none: the
/// refused connection or the DNS failure is in the chain) and without the URL, which the caller
/// names (it may hold a secret).
pub fn describe(e: reqwest::Error) -> String {
    crate::errors::error_chain(&e.without_url())
}
