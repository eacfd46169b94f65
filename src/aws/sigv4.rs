//! SigV4 signing of plain HTTP requests (Amazon Managed Prometheus's query API, SSM's
//! GetParameter), with the credential chain the AWS clients use.

/// The content type of the signed POSTs: a form.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// A POST to sign: where, its headers, its body.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// What signs SigV4 requests: the AWS credential chain's provider, and the default region.
#[derive(Clone, Debug)]
pub struct Signer {
    pub provider: aws_credential_types::provider::SharedCredentialsProvider,
    pub region: String,
}

impl Signer {
    /// The headers that sign a POST of a form `body` to `url` (`x-amz-date`, `authorization`,
    /// and `x-amz-security-token` with temporary credentials).
    pub async fn headers(
        &self,
        region: Option<&str>,
        service: &str,
        url: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let post = Post {
            url,
            headers: &[("content-type", FORM)],
            body,
        };
        self.sign(region, service, post).await
    }

    /// The headers that sign `post` (its own headers are signed too, and must be sent).
    pub async fn sign(
        &self,
        region: Option<&str>,
        service: &str,
        post: Post<'_>,
    ) -> Result<Vec<(String, String)>, String> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| format!("no AWS credentials to sign with: {e}"))?;
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region.unwrap_or(&self.region))
            .name(service)
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("SigV4: {e}"))?
            .into();
        let headers = post.headers.iter().copied();
        let req = SignableRequest::new("POST", post.url, headers, SignableBody::Bytes(post.body))
            .map_err(|e| format!("SigV4: {e}"))?;
        let (instructions, _) = sign(req, &params)
            .map_err(|e| format!("SigV4: {e}"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}
