//! Google credentials, found the way Application Default Credentials documents: the file
//! `GOOGLE_APPLICATION_CREDENTIALS` names (a service account key, an authorized user, or an external account for
//! Workload Identity Federation), then gcloud's file, then the metadata server of Cloud Run, GKE or GCE. The
//! tokens come from yup-oauth2, which caches each until it nearly expires.

use yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes as Adc;

use super::error::{BqFailure, Kind, Result};
use crate::config::BigQueryAuth;

type Connector = <yup_oauth2::DefaultHyperClientBuilder as yup_oauth2::HyperClientBuilder>::Connector;
type Authenticator = yup_oauth2::authenticator::Authenticator<Connector>;

const SCOPES: &[&str] = &["https://www.googleapis.com/auth/bigquery"];

/// Where access tokens come from, and a description of that source for `check` and errors.
pub struct Credentials {
    inner: Option<Authenticator>,
    pub source: String,
}

impl Credentials {
    /// Builds the source the settings name. Nothing is requested yet, except that reading a file may fail.
    pub async fn new(auth: &BigQueryAuth) -> Result<Credentials> {
        let refused = |m: String| BqFailure::new("loading Google credentials", m, Kind::Credentials);
        let (inner, source) = match auth {
            BigQueryAuth::Emulator { base_url } => (None, format!("none (the emulator at {base_url})")),
            BigQueryAuth::File { path, kind } => {
                let fail = |e: std::io::Error| refused(format!("{} cannot be used: {e}", path.display()));
                let built = match kind.as_str() {
                    "service_account" => {
                        let key = yup_oauth2::read_service_account_key(path).await.map_err(fail)?;
                        yup_oauth2::ServiceAccountAuthenticator::builder(key).build().await
                    }
                    "authorized_user" => {
                        let s = yup_oauth2::read_authorized_user_secret(path).await.map_err(fail)?;
                        yup_oauth2::AuthorizedUserAuthenticator::builder(s).build().await
                    }
                    _ => {
                        let s = yup_oauth2::read_external_account_secret(path).await.map_err(fail)?;
                        yup_oauth2::ExternalAccountAuthenticator::builder(s).build().await
                    }
                };
                (Some(built.map_err(fail)?), format!("{kind} credentials from {}", path.display()))
            }
            BigQueryAuth::MetadataServer { host } => {
                let token = "/computeMetadata/v1/instance/service-accounts/default/token";
                let url = host.as_ref().map(|h| format!("http://{h}{token}"));
                let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts { metadata_url: url };
                let built = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                    Adc::InstanceMetadata(b) => b.build().await,
                    Adc::ServiceAccount(b) => b.build().await,
                };
                let built = built.map_err(|e| refused(format!("the metadata server: {e}")))?;
                (Some(built), "the metadata server (the service account attached to the job)".to_string())
            }
        };
        Ok(Credentials { inner, source })
    }

    /// An access token, or `None` for the emulator. Errors say which source failed and how to give one.
    pub async fn token(&self) -> Result<Option<String>> {
        let Some(auth) = &self.inner else { return Ok(None) };
        let what = format!("getting an access token from {}", self.source);
        let refused = |m: &str| BqFailure::new(&what, m, Kind::Credentials);
        let token = auth.token(SCOPES).await.map_err(|e| refused(&no_secret(&e.to_string())))?;
        token.token().map(|t| Some(t.to_string())).ok_or_else(|| refused("no token was returned"))
    }
}

/// yup-oauth2's errors quote the token server's answer; keep only its first line, which names the failure.
fn no_secret(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(300).collect()
}
