//! Reading an HTTP answer's body with a bound, so a hostile or broken server cannot exhaust
//! memory (plugins, Prometheus).

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// It is longer than the bound.
    TooLarge,
    Read(reqwest::Error),
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
