//! Settings read from the environment. Every variable is read as text (envy, one flat struct) and then
//! validated by hand, so that an error names the full variable and says what a valid value looks like, before
//! any network call is made. Secret values are wrapped in `SecretString` the moment they are read and never
//! appear in a message.

pub mod cli;
pub mod spec;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::schema::{FieldType, Promoted};

/// A configuration problem, always tied to the variable (or setting) that caused it. Exit code 78.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { variable: variable.into(), problem: problem.into() }
    }
}

/// The environment exactly as given; nothing here is trusted yet.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    zoho_client_id: Option<String>,
    zoho_client_secret: Option<String>,
    zoho_client_secret_file: Option<String>,
    zoho_refresh_token: Option<String>,
    zoho_refresh_token_file: Option<String>,
    zoho_dc: Option<String>,
    zoho_accounts_url: Option<String>,
    zoho_api_domain: Option<String>,
    zoho_max_concurrency: Option<String>,
    bigquery_project: Option<String>,
    bigquery_dataset: Option<String>,
    bigquery_table: Option<String>,
    bigquery_location: Option<String>,
    bigquery_emulator_host: Option<String>,
    google_application_credentials: Option<String>,
    cloudsdk_config: Option<String>,
    home: Option<String>,
    gce_metadata_host: Option<String>,
    cloud_run_task_index: Option<String>,
    cloud_run_task_count: Option<String>,
    job_completion_index: Option<String>,
    dealsync_task_count: Option<String>,
}

/// Zoho data centres, each with its own accounts server. The API host is not listed here on purpose: it comes
/// from the `api_domain` of the token response (or `ZOHO_API_DOMAIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCentre {
    Us,
    Eu,
    In,
    Au,
    Jp,
    Ca,
    Sa,
    Cn,
    Uk,
    Ae,
}

impl DataCentre {
    pub const ALL: [DataCentre; 10] = [
        DataCentre::Us,
        DataCentre::Eu,
        DataCentre::In,
        DataCentre::Au,
        DataCentre::Jp,
        DataCentre::Ca,
        DataCentre::Sa,
        DataCentre::Cn,
        DataCentre::Uk,
        DataCentre::Ae,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DataCentre::Us => "us",
            DataCentre::Eu => "eu",
            DataCentre::In => "in",
            DataCentre::Au => "au",
            DataCentre::Jp => "jp",
            DataCentre::Ca => "ca",
            DataCentre::Sa => "sa",
            DataCentre::Cn => "cn",
            DataCentre::Uk => "uk",
            DataCentre::Ae => "ae",
        }
    }

    pub fn accounts_url(self) -> &'static str {
        match self {
            DataCentre::Us => "https://accounts.zoho.com",
            DataCentre::Eu => "https://accounts.zoho.eu",
            DataCentre::In => "https://accounts.zoho.in",
            DataCentre::Au => "https://accounts.zoho.com.au",
            DataCentre::Jp => "https://accounts.zoho.jp",
            DataCentre::Ca => "https://accounts.zohocloud.ca",
            DataCentre::Sa => "https://accounts.zoho.sa",
            DataCentre::Cn => "https://accounts.zoho.com.cn",
            DataCentre::Uk => "https://accounts.zoho.uk",
            DataCentre::Ae => "https://accounts.zoho.ae",
        }
    }

    /// The domain of this data centre's API hosts (`www.zohoapis.eu`, `sandbox.zohoapis.eu`, …).
    pub fn api_domain(self) -> &'static str {
        match self {
            DataCentre::Us => "zohoapis.com",
            DataCentre::Eu => "zohoapis.eu",
            DataCentre::In => "zohoapis.in",
            DataCentre::Au => "zohoapis.com.au",
            DataCentre::Jp => "zohoapis.jp",
            DataCentre::Ca => "zohoapis.ca",
            DataCentre::Sa => "zohoapis.sa",
            DataCentre::Cn => "zohoapis.com.cn",
            DataCentre::Uk => "zohoapis.uk",
            DataCentre::Ae => "zohoapis.ae",
        }
    }

    fn parse(s: &str) -> Option<DataCentre> {
        DataCentre::ALL.into_iter().find(|dc| dc.code().eq_ignore_ascii_case(s))
    }
}

pub use crate::telemetry::LogFormat;

/// Everything needed to talk to Zoho.
#[derive(Debug, Clone)]
pub struct ZohoSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
    pub data_centre: DataCentre,
    /// Base of the accounts server; the token endpoint is `<accounts_url>/oauth/v2/token`.
    pub accounts_url: Url,
    /// When set, used for every API call instead of the `api_domain` the token response names.
    pub api_domain: Option<Url>,
    /// Requests in flight to Zoho at most (the Free edition allows 5).
    pub max_concurrency: usize,
}

impl ZohoSettings {
    pub fn token_url(&self) -> Url {
        join_path(&self.accounts_url, "oauth/v2/token")
    }
}

/// How the BigQuery sink authenticates, found as Application Default Credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BigQueryAuth {
    /// `BIGQUERY_EMULATOR_HOST`: plain HTTP to a local emulator, no credentials.
    Emulator { base_url: Url },
    /// A credentials file: `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's (`gcloud auth application-default
    /// login`). `kind` is its `type`: `service_account`, `authorized_user` or `external_account`.
    File { path: std::path::PathBuf, kind: String },
    /// The metadata server of Cloud Run, GKE (workload identity) or GCE; `host` from `GCE_METADATA_HOST`, as
    /// Google's client libraries read it (`metadata.google.internal` otherwise).
    MetadataServer { host: Option<String> },
}

/// Where and how to write to BigQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQuerySettings {
    pub project: String,
    pub dataset: String,
    pub table: String,
    /// Used when the dataset has to be created.
    pub location: Option<String>,
    pub auth: BigQueryAuth,
}

/// The validated environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None` only when the caller asked for no Zoho credentials (`--demo`, `simulate`, `schema`).
    pub zoho: Option<ZohoSettings>,
    /// `Some` when `BIGQUERY_PROJECT` is set.
    pub bigquery: Option<BigQuerySettings>,
    /// This process's slice of a sharded backfill: (index, count), from Cloud Run or a Kubernetes Indexed Job.
    pub shard: Option<(usize, usize)>,
    /// Fields the config file promotes to typed columns (`[columns]`).
    pub promoted: Vec<Promoted>,
}

/// Which parts of the environment the command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    ZohoCredentials,
    /// Client id and secret but no refresh token (`dealsync auth exchange` mints one).
    ZohoClient,
    Nothing,
}

/// The optional configuration file (`config/dealsync.toml`, or `DEALSYNC_CONFIG`): non-secret settings only.
/// Environment variables override it, and flags override both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub sync: SyncFile,
    #[serde(default)]
    pub zoho: ZohoFile,
    #[serde(default)]
    pub bigquery: BigQueryFile,
    #[serde(default)]
    pub log: LogFile,
    /// Extra Zoho fields promoted to typed columns: `region = { field = "Region", type = "text" }`.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, ColumnFile>,
}

/// `[columns]` in the config file: `region = { field = "Region", type = "text" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    pub field: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// Validates the `[columns]` table. Errors name the entry (`columns.region.type`).
pub fn promoted_columns(
    columns: &std::collections::BTreeMap<String, ColumnFile>,
) -> Result<Vec<Promoted>, ConfigError> {
    let mut out = Vec::with_capacity(columns.len());
    for (column, c) in columns {
        let at = |key: &str| format!("columns.{column}{key} (config file)");
        let valid_name = column.len() <= 128
            && column.starts_with(|ch: char| ch.is_ascii_lowercase())
            && column.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(ConfigError::new(
                at(""),
                "a column name is lowercase letters, digits and _, starting with a letter",
            ));
        }
        if crate::schema::STANDARD.iter().any(|s| s.name == column) {
            return Err(ConfigError::new(at(""), format!("{column} is a standard column already; pick another name")));
        }
        let field = c.field.trim();
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            return Err(ConfigError::new(
                at(".field"),
                format!("`{}` is not a Zoho API name (letters, digits, _ and $; see `dealsync fields`)", c.field),
            ));
        }
        let ty = FieldType::parse(c.ty.trim()).ok_or_else(|| {
            ConfigError::new(at(".type"), format!("`{}` is not one of {}", c.ty, crate::schema::promoted::TYPE_NAMES))
        })?;
        out.push(Promoted { field: field.to_string(), column: column.clone(), ty });
    }
    Ok(out)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    pub window_field: Option<String>,
    pub overlap: Option<String>,
    pub index_lag: Option<String>,
    pub sink: Option<String>,
    pub deadline: Option<String>,
    pub max_attempts: Option<u32>,
    pub retry_deadline: Option<String>,
    pub retry_max_delay: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZohoFile {
    pub dc: Option<String>,
    pub accounts_url: Option<String>,
    pub api_domain: Option<String>,
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQueryFile {
    pub project: Option<String>,
    pub dataset: Option<String>,
    pub table: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub format: Option<String>,
}

pub const DEFAULT_CONFIG_FILE: &str = "config/dealsync.toml";

impl FileConfig {
    pub fn load(path: &Path, source: &str) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(source, format!("{} cannot be read: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            ConfigError::new(format!("{} (config file)", path.display()), msg)
        })
    }

    /// The file's settings as (environment variable, file key, value): the environment overrides each.
    fn layered(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut v = Vec::new();
        let mut put = |var: &'static str, key: &'static str, val: Option<String>| {
            if let Some(val) = val {
                v.push((var, key, val));
            }
        };
        put("ZOHO_DC", "zoho.dc", self.zoho.dc.clone());
        put("ZOHO_ACCOUNTS_URL", "zoho.accounts_url", self.zoho.accounts_url.clone());
        put("ZOHO_API_DOMAIN", "zoho.api_domain", self.zoho.api_domain.clone());
        put("ZOHO_MAX_CONCURRENCY", "zoho.max_concurrency", self.zoho.max_concurrency.map(|n| n.to_string()));
        put("BIGQUERY_PROJECT", "bigquery.project", self.bigquery.project.clone());
        put("BIGQUERY_DATASET", "bigquery.dataset", self.bigquery.dataset.clone());
        put("BIGQUERY_TABLE", "bigquery.table", self.bigquery.table.clone());
        put("BIGQUERY_LOCATION", "bigquery.location", self.bigquery.location.clone());
        v
    }
}

/// Everything dealsync reads besides its flags, read once at start: the environment and the configuration file
/// (`DEALSYNC_CONFIG`, else `config/dealsync.toml` when it exists). Precedence: flags over environment over file.
/// Commands ask it for what they need; nothing else reads the environment (clippy.toml enforces it). It keeps
/// only the variables dealsync reads, and its `Debug` shows their names, never their values.
#[derive(Clone, Default)]
pub struct Config {
    file_path: Option<PathBuf>,
    file: FileConfig,
    vars: BTreeMap<String, String>,
}

impl Config {
    /// Reads the process environment and the configuration file it points at.
    #[allow(clippy::disallowed_methods)] // the one place that reads the process environment
    pub fn load() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// The process environment alone, the configuration file left out: what is left to report a configuration
    /// file that cannot be read (its run's metrics still go to the Pushgateway the environment names).
    #[allow(clippy::disallowed_methods)] // the environment again, when `load` failed on the file
    pub fn environment_only() -> Config {
        Config { vars: std::env::vars().filter(|(k, _)| ours(k)).collect(), ..Config::default() }
    }

    /// The same from any list of variables (the tests pass their own); the file is found as `load` finds it.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> = vars.into_iter().filter(|(k, _)| ours(k)).collect();
        let named = vars.get("DEALSYNC_CONFIG").map(|p| p.trim()).filter(|p| !p.is_empty());
        let (file_path, file) = match named {
            Some(p) => (Some(PathBuf::from(p)), FileConfig::load(Path::new(p), "DEALSYNC_CONFIG")?),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => (
                Some(PathBuf::from(DEFAULT_CONFIG_FILE)),
                FileConfig::load(Path::new(DEFAULT_CONFIG_FILE), DEFAULT_CONFIG_FILE)?,
            ),
            None => (None, FileConfig::default()),
        };
        Ok(Config { file_path, file, vars })
    }

    /// A configuration from a file already parsed and a list of variables (tests).
    pub fn with_file<I>(file: FileConfig, vars: I) -> Config
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Config { file_path: Some(PathBuf::from("(given)")), file, vars: vars.into_iter().collect() }
    }

    /// The configuration file in use, if any (logged at start).
    pub fn file_path(&self) -> Option<&Path> {
        self.file_path.as_deref()
    }

    pub fn file(&self) -> &FileConfig {
        &self.file
    }

    /// A variable as set (trimmed; empty counts as unset). For the few variables with no typed setting.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The validated settings: each environment variable over the file's value for it. An invalid value that came
    /// from the file is named by its key and the file (`zoho.dc (config/dealsync.toml)`).
    pub fn settings(&self, needs: Needs) -> Result<Settings, ConfigError> {
        let from_file = self.file.layered();
        let mut merged: BTreeMap<String, String> =
            from_file.iter().map(|(var, _, val)| (var.to_string(), val.clone())).collect();
        merged.extend(self.vars.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| (k.clone(), v.clone())));
        let file_name = self.file_name();
        let mut settings = Settings::from_vars(merged, needs).map_err(|mut e| {
            let overridden = self.var(&e.variable).is_some();
            if let Some((_, key, _)) = from_file.iter().find(|(var, _, _)| *var == e.variable && !overridden) {
                e.variable = format!("{key} ({file_name})");
            }
            e
        })?;
        settings.promoted = self.promoted()?;
        Ok(settings)
    }

    /// `LOG_FORMAT`, else the file's `log.format`.
    pub fn log_format(&self) -> Result<Option<LogFormat>, ConfigError> {
        let (name, v) = match self.var("LOG_FORMAT") {
            Some(v) => ("LOG_FORMAT".to_string(), v.to_string()),
            None => match self.file.log.format.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                Some(v) => (format!("log.format ({})", self.file_name()), v.to_string()),
                None => return Ok(None),
            },
        };
        LogFormat::parse(&v)
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, format!("`{v}` is not a log format; expected text, json or gcp")))
    }

    /// `ZOHO_MAX_CONCURRENCY` (or `zoho.max_concurrency`), for commands that need no credentials.
    pub fn max_concurrency(&self) -> Result<usize, ConfigError> {
        match self.var("ZOHO_MAX_CONCURRENCY") {
            Some(v) => parse_concurrency(Some(v.to_string())),
            None => parse_concurrency(self.file.zoho.max_concurrency.map(|n| n.to_string())).map_err(|mut e| {
                e.variable = format!("zoho.max_concurrency ({})", self.file_name());
                e
            }),
        }
    }

    fn file_name(&self) -> String {
        self.file_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }

    /// The `[columns]` the file promotes to typed columns.
    pub fn promoted(&self) -> Result<Vec<Promoted>, ConfigError> {
        promoted_columns(&self.file.columns)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("file_path", &self.file_path)
            .field("variables", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The variables dealsync reads; the rest of the environment is not kept.
fn ours(name: &str) -> bool {
    ["ZOHO_", "BIGQUERY_", "DEALSYNC_", "CLOUD_RUN_TASK_"].iter().any(|p| name.starts_with(p))
        || matches!(
            name,
            "GOOGLE_APPLICATION_CREDENTIALS"
                | "CLOUDSDK_CONFIG"
                | "HOME"
                | "GCE_METADATA_HOST"
                | "JOB_COMPLETION_INDEX"
                | "LOG_FORMAT"
                | "NO_COLOR"
                | "RUST_LOG"
        )
}

impl Settings {
    /// Reads settings from any list of variables, with no configuration file.
    pub fn from_vars<I>(vars: I, needs: Needs) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Only our own variables go through envy, so an unrelated variable with odd content cannot break parsing.
        let ours = vars.into_iter().filter(|(k, _)| ours(k));
        let raw: RawEnv = envy::from_iter(ours).map_err(|e| ConfigError::new("environment", e.to_string()))?;

        let bigquery = match non_empty(raw.bigquery_project) {
            None => None,
            Some(project) => {
                let auth = google_auth(
                    raw.bigquery_emulator_host,
                    raw.google_application_credentials,
                    gcloud_file(raw.cloudsdk_config, raw.home),
                    raw.gce_metadata_host,
                )?;
                Some(bigquery_settings(project, raw.bigquery_dataset, raw.bigquery_table, raw.bigquery_location, auth)?)
            }
        };

        let zoho = match needs {
            Needs::Nothing => None,
            Needs::ZohoCredentials | Needs::ZohoClient => Some(zoho_settings(
                needs == Needs::ZohoClient,
                raw.zoho_client_id,
                secret_or_file("ZOHO_CLIENT_SECRET", raw.zoho_client_secret, raw.zoho_client_secret_file)?,
                secret_or_file("ZOHO_REFRESH_TOKEN", raw.zoho_refresh_token, raw.zoho_refresh_token_file)?,
                raw.zoho_dc,
                raw.zoho_accounts_url,
                raw.zoho_api_domain,
                raw.zoho_max_concurrency,
            )?),
        };
        let shard = shard(
            raw.cloud_run_task_index,
            raw.cloud_run_task_count,
            raw.job_completion_index,
            raw.dealsync_task_count,
        )?;
        Ok(Settings { zoho, bigquery, shard, promoted: Vec::new() })
    }
}

/// Cloud Run Jobs set `CLOUD_RUN_TASK_INDEX`/`CLOUD_RUN_TASK_COUNT`; a Kubernetes Indexed Job sets
/// `JOB_COMPLETION_INDEX`, and the manifest passes the task count as `DEALSYNC_TASK_COUNT`.
fn shard(
    cr_index: Option<String>,
    cr_count: Option<String>,
    k8s_index: Option<String>,
    task_count: Option<String>,
) -> Result<Option<(usize, usize)>, ConfigError> {
    let num = |var: &str, v: String| {
        v.parse::<usize>().map_err(|_| ConfigError::new(var, format!("`{v}` is not a whole number")))
    };
    let (index, count, index_var, count_var) = match (non_empty(cr_index), non_empty(cr_count), non_empty(k8s_index)) {
        (Some(i), Some(c), _) => (
            num("CLOUD_RUN_TASK_INDEX", i)?,
            num("CLOUD_RUN_TASK_COUNT", c)?,
            "CLOUD_RUN_TASK_INDEX",
            "CLOUD_RUN_TASK_COUNT",
        ),
        (None, None, Some(i)) => {
            let c = non_empty(task_count).ok_or_else(|| {
                ConfigError::new(
                    "DEALSYNC_TASK_COUNT",
                    "is not set; an Indexed Job needs it set to the Job's completions",
                )
            })?;
            (
                num("JOB_COMPLETION_INDEX", i)?,
                num("DEALSYNC_TASK_COUNT", c)?,
                "JOB_COMPLETION_INDEX",
                "DEALSYNC_TASK_COUNT",
            )
        }
        (Some(_), None, _) => {
            return Err(ConfigError::new("CLOUD_RUN_TASK_COUNT", "is not set but CLOUD_RUN_TASK_INDEX is"))
        }
        (None, Some(_), _) => {
            return Err(ConfigError::new("CLOUD_RUN_TASK_INDEX", "is not set but CLOUD_RUN_TASK_COUNT is"))
        }
        (None, None, None) => return Ok(None),
    };
    if count == 0 {
        return Err(ConfigError::new(count_var, "must be at least 1"));
    }
    if index >= count {
        return Err(ConfigError::new(index_var, format!("{index} is not below the task count {count}")));
    }
    Ok(Some((index, count)))
}

fn bigquery_settings(
    project: String,
    dataset: Option<String>,
    table: Option<String>,
    location: Option<String>,
    auth: BigQueryAuth,
) -> Result<BigQuerySettings, ConfigError> {
    if !project.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
        return Err(ConfigError::new("BIGQUERY_PROJECT", format!("`{project}` is not a Google Cloud project id")));
    }
    let ident = |var: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = non_empty(v).unwrap_or_else(|| default.to_string());
        if v.len() > 1024 || v.starts_with("_dealsync") || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::new(
                var,
                format!("`{v}` is not a valid name (letters, digits and underscores; not starting with _dealsync)"),
            ));
        }
        Ok(v)
    };
    let dataset = ident("BIGQUERY_DATASET", dataset, "crm")?;
    let table = ident("BIGQUERY_TABLE", table, "closed_won_deals")?;
    let location = non_empty(location);
    Ok(BigQuerySettings { project, dataset, table, location, auth })
}

/// Where the BigQuery sink's credentials come from, in Application Default Credentials' order.
fn google_auth(
    emulator_host: Option<String>,
    credentials: Option<String>,
    gcloud: Option<std::path::PathBuf>,
    metadata_host: Option<String>,
) -> Result<BigQueryAuth, ConfigError> {
    Ok(if let Some(host) = non_empty(emulator_host) {
        let url = Url::parse(&format!("http://{host}/bigquery/v2"))
            .map_err(|_| ConfigError::new("BIGQUERY_EMULATOR_HOST", format!("`{host}` is not host:port")))?;
        if !is_loopback(&url) || url.port().is_none() {
            return Err(ConfigError::new(
                "BIGQUERY_EMULATOR_HOST",
                format!("`{host}` must be a loopback host:port such as 127.0.0.1:9050 (the emulator runs without authentication)"),
            ));
        }
        BigQueryAuth::Emulator { base_url: url }
    } else if let Some(path) = non_empty(credentials) {
        let path = std::path::PathBuf::from(path);
        BigQueryAuth::File { kind: credentials_type("GOOGLE_APPLICATION_CREDENTIALS", &path)?, path }
    } else if let Some(path) = gcloud.filter(|p| p.is_file()) {
        let kind = credentials_type(&format!("gcloud's credentials file {}", path.display()), &path)?;
        BigQueryAuth::File { path, kind }
    } else {
        BigQueryAuth::MetadataServer { host: non_empty(metadata_host) }
    })
}

/// A secret from its variable, or from the file `<VAR>_FILE` names (Docker and Kubernetes secrets mounted as
/// files, which no `docker inspect` or `/proc/<pid>/environ` shows). Both set is ambiguous, and refused.
fn secret_or_file(var: &str, value: Option<String>, file: Option<String>) -> Result<Option<String>, ConfigError> {
    match (non_empty(value), non_empty(file)) {
        (Some(_), Some(_)) => Err(ConfigError::new(format!("{var}, {var}_FILE"), "are both set; keep one")),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| ConfigError::new(format!("{var}_FILE"), format!("{path} cannot be read: {e}"))),
        (None, None) => Ok(None),
    }
}

/// gcloud's Application Default Credentials file: `$CLOUDSDK_CONFIG`, else `~/.config/gcloud`.
fn gcloud_file(cloudsdk_config: Option<String>, home: Option<String>) -> Option<std::path::PathBuf> {
    let dir = match (non_empty(cloudsdk_config), non_empty(home)) {
        (Some(dir), _) => std::path::PathBuf::from(dir),
        (None, Some(home)) => std::path::Path::new(&home).join(".config/gcloud"),
        (None, None) => return None,
    };
    Some(dir.join("application_default_credentials.json"))
}

/// The `type` of a Google credentials file, one dealsync can use; errors name `source`, never the content.
fn credentials_type(source: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(source, format!("{} cannot be read: {e}", path.display())))?;
    #[derive(Deserialize)]
    struct KeyType {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let kind: KeyType = serde_json::from_str(&text)
        .map_err(|_| ConfigError::new(source, format!("{} is not a JSON credentials file", path.display())))?;
    match kind.kind.as_deref() {
        Some(k @ ("service_account" | "authorized_user" | "external_account")) => Ok(k.to_string()),
        other => Err(ConfigError::new(
            source,
            format!(
                "{} has type {:?}; expected a service_account key, an authorized_user file or an external_account \
                 (Workload Identity Federation) file",
                path.display(),
                other.unwrap_or("(none)")
            ),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn zoho_settings(
    client_only: bool,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    dc: Option<String>,
    accounts_url: Option<String>,
    api_domain: Option<String>,
    max_concurrency: Option<String>,
) -> Result<ZohoSettings, ConfigError> {
    // Name every missing credential at once, so a first setup is one round trip, not three.
    let mut missing = vec![("ZOHO_CLIENT_ID", &client_id), ("ZOHO_CLIENT_SECRET", &client_secret)];
    if !client_only {
        missing.push(("ZOHO_REFRESH_TOKEN", &refresh_token));
    }
    missing.retain(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()));
    if missing.len() > 1 {
        let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
        return Err(ConfigError::new(
            names.join(", "),
            "are not set; they hold your Self Client's Client ID and Client Secret from the Zoho API console and a \
             refresh token minted for it (see `dealsync auth exchange` in the README)",
        ));
    }
    let client_id = required("ZOHO_CLIENT_ID", client_id, "the Client ID of your Self Client in the Zoho API console")?;
    let client_secret = SecretString::from(required(
        "ZOHO_CLIENT_SECRET",
        client_secret,
        "the Client Secret of your Self Client in the Zoho API console",
    )?);
    let refresh_token = if client_only {
        SecretString::from(String::new())
    } else {
        SecretString::from(required(
            "ZOHO_REFRESH_TOKEN",
            refresh_token,
            "a refresh token minted for this client (see `dealsync auth exchange` in the README)",
        )?)
    };
    let data_centre = match non_empty(dc) {
        None => DataCentre::Us,
        Some(v) => DataCentre::parse(&v).ok_or_else(|| {
            let all: Vec<&str> = DataCentre::ALL.iter().map(|d| d.code()).collect();
            ConfigError::new("ZOHO_DC", format!("`{v}` is not a Zoho data centre; expected one of {}", all.join(", ")))
        })?,
    };
    let accounts_url = match non_empty(accounts_url) {
        Some(v) => parse_base_url("ZOHO_ACCOUNTS_URL", &v)?,
        None => Url::parse(data_centre.accounts_url()).expect("built-in URL is valid"),
    };
    let api_domain = non_empty(api_domain).map(|v| parse_base_url("ZOHO_API_DOMAIN", &v)).transpose()?;
    let max_concurrency = parse_concurrency(non_empty(max_concurrency))?;
    Ok(ZohoSettings { client_id, client_secret, refresh_token, data_centre, accounts_url, api_domain, max_concurrency })
}

fn parse_concurrency(v: Option<String>) -> Result<usize, ConfigError> {
    match v {
        None => Ok(5),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                "ZOHO_MAX_CONCURRENCY",
                format!("`{v}` is not a whole number from 1 to 25 (Zoho allows 5 to 25 concurrent calls by edition)"),
            )),
        },
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    // Trailing newlines from `echo … > secret` are the most common copy-paste error: strip surrounding space.
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn required(variable: &str, v: Option<String>, what: &str) -> Result<String, ConfigError> {
    let v = non_empty(v).ok_or_else(|| ConfigError::new(variable, format!("is not set; it must hold {what}")))?;
    if v.chars().any(char::is_whitespace) {
        // Say where, never what: the value may be a secret.
        return Err(ConfigError::new(variable, "contains white space inside the value; copy it again without breaks"));
    }
    Ok(v)
}

/// Parses a base URL given in a variable: `https://…`, or `http://…` only towards this machine.
pub fn parse_base_url(variable: &str, v: &str) -> Result<Url, ConfigError> {
    // Echoed without user-info: a password in the URL must not reach the error.
    let shown = crate::telemetry::redact(v, &[]);
    let url = Url::parse(v).map_err(|e| ConfigError::new(variable, format!("`{shown}` is not a URL ({e})")))?;
    check_scheme(&url).map_err(|p| ConfigError::new(variable, format!("`{shown}`: {p}")))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            variable,
            format!("`{shown}` must be a base URL without credentials, query or fragment"),
        ));
    }
    Ok(url)
}

/// `https` anywhere; plain `http` only to a loopback host (a simulator or an emulator on this machine).
pub fn check_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("plain http is accepted only for loopback hosts (127.0.0.1, ::1, localhost); use https".into()),
        other => Err(format!("scheme `{other}` is not supported; use https")),
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Appends `path` to a base URL, keeping any path prefix the base already has.
pub fn join_path(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/{}", path.trim_start_matches('/')));
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BASE: [(&str, &str); 3] =
        [("ZOHO_CLIENT_ID", "1000.ABC"), ("ZOHO_CLIENT_SECRET", "s3cr3t"), ("ZOHO_REFRESH_TOKEN", "1000.rt\n")];

    #[test]
    fn defaults_to_the_us_data_centre_and_trims_values() {
        let s = Settings::from_vars(vars(&BASE), Needs::ZohoCredentials).unwrap();
        let z = s.zoho.unwrap();
        assert_eq!(z.data_centre, DataCentre::Us);
        assert_eq!(z.token_url().as_str(), "https://accounts.zoho.com/oauth/v2/token");
        assert_eq!(z.refresh_token.expose_secret(), "1000.rt");
        assert_eq!(z.max_concurrency, 5);
    }

    #[test]
    fn canada_uses_the_zohocloud_accounts_host() {
        let mut v = vars(&BASE);
        v.push(("ZOHO_DC".into(), "CA".into()));
        let z = Settings::from_vars(v, Needs::ZohoCredentials).unwrap().zoho.unwrap();
        assert_eq!(z.token_url().as_str(), "https://accounts.zohocloud.ca/oauth/v2/token");
    }

    #[test]
    fn an_unknown_data_centre_names_the_variable() {
        let mut v = vars(&BASE);
        v.push(("ZOHO_DC".into(), "mars".into()));
        let e = Settings::from_vars(v, Needs::ZohoCredentials).unwrap_err();
        assert_eq!(e.variable, "ZOHO_DC");
        assert!(e.problem.contains("us, eu, in, au, jp, ca, sa, cn, uk, ae"), "{e}");
    }

    #[test]
    fn every_data_centre_zoho_accounts_lists_has_its_accounts_host() {
        for (dc, host) in [
            ("us", "accounts.zoho.com"),
            ("eu", "accounts.zoho.eu"),
            ("in", "accounts.zoho.in"),
            ("au", "accounts.zoho.com.au"),
            ("jp", "accounts.zoho.jp"),
            ("ca", "accounts.zohocloud.ca"),
            ("sa", "accounts.zoho.sa"),
            ("cn", "accounts.zoho.com.cn"),
            ("uk", "accounts.zoho.uk"),
            ("ae", "accounts.zoho.ae"),
        ] {
            let mut v = vars(&BASE);
            v.push(("ZOHO_DC".into(), dc.into()));
            let z = Settings::from_vars(v, Needs::ZohoCredentials).unwrap().zoho.unwrap();
            assert_eq!(z.token_url().as_str(), format!("https://{host}/oauth/v2/token"), "{dc}");
        }
    }

    #[test]
    fn plain_http_is_refused_for_remote_hosts_but_accepted_for_loopback() {
        for (url, ok) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:1", true),
            ("http://[::1]:8080", true),
            ("https://accounts.example.org", true),
            ("http://accounts.example.org", false),
            ("http://10.0.0.1", false),
            ("ftp://127.0.0.1", false),
        ] {
            let mut v = vars(&BASE);
            v.push(("ZOHO_ACCOUNTS_URL".into(), url.into()));
            let r = Settings::from_vars(v, Needs::ZohoCredentials);
            assert_eq!(r.is_ok(), ok, "{url}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.variable, "ZOHO_ACCOUNTS_URL");
            }
        }
    }

    #[test]
    fn secrets_can_come_from_files_named_by_their_file_variables() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, token) = (dir.path().join("secret"), dir.path().join("token"));
        std::fs::write(&secret, "from-a-file\n").unwrap();
        std::fs::write(&token, "1000.file-token").unwrap();
        let mut v = vars(&BASE[..1]);
        v.push(("ZOHO_CLIENT_SECRET_FILE".into(), secret.display().to_string()));
        v.push(("ZOHO_REFRESH_TOKEN_FILE".into(), token.display().to_string()));
        let z = Settings::from_vars(v.clone(), Needs::ZohoCredentials).unwrap().zoho.unwrap();
        assert_eq!(
            (z.client_secret.expose_secret(), z.refresh_token.expose_secret()),
            ("from-a-file", "1000.file-token")
        );
        v.push(("ZOHO_CLIENT_SECRET".into(), "also".into()));
        assert_eq!(
            Settings::from_vars(v, Needs::ZohoCredentials).unwrap_err().variable,
            "ZOHO_CLIENT_SECRET, ZOHO_CLIENT_SECRET_FILE"
        );
        let mut v = vars(&BASE);
        v.push(("ZOHO_REFRESH_TOKEN_FILE".into(), "/nonexistent/token".into()));
        v.retain(|(k, _)| k != "ZOHO_REFRESH_TOKEN");
        let e = Settings::from_vars(v, Needs::ZohoCredentials).unwrap_err();
        assert_eq!(e.variable, "ZOHO_REFRESH_TOKEN_FILE");
    }

    #[test]
    fn a_secret_with_inner_white_space_is_refused_without_echoing_it() {
        let mut v = vars(&BASE[..2]);
        v.push(("ZOHO_REFRESH_TOKEN".into(), "1000.abc def-very-secret".into()));
        let e = Settings::from_vars(v, Needs::ZohoCredentials).unwrap_err();
        assert_eq!(e.variable, "ZOHO_REFRESH_TOKEN");
        assert!(!e.to_string().contains("very-secret"));
    }

    #[test]
    fn bigquery_is_selected_by_its_project_with_defaults_and_a_loopback_emulator() {
        let mut v = vars(&[("BIGQUERY_PROJECT", "acme-prod"), ("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9050")]);
        let bq = Settings::from_vars(v.clone(), Needs::Nothing).unwrap().bigquery.unwrap();
        assert_eq!((bq.dataset.as_str(), bq.table.as_str()), ("crm", "closed_won_deals"));
        assert_eq!(
            bq.auth,
            BigQueryAuth::Emulator { base_url: Url::parse("http://127.0.0.1:9050/bigquery/v2").unwrap() }
        );
        v[1].1 = "bigquery.example.org:443".into();
        assert_eq!(Settings::from_vars(v, Needs::Nothing).unwrap_err().variable, "BIGQUERY_EMULATOR_HOST");
        let bad = vars(&[("BIGQUERY_PROJECT", "p"), ("BIGQUERY_TABLE", "deals; drop")]);
        assert_eq!(Settings::from_vars(bad, Needs::Nothing).unwrap_err().variable, "BIGQUERY_TABLE");
    }

    #[test]
    fn credentials_files_are_recognised_by_type_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("sa.json");
        std::fs::write(&sa, r#"{"type":"service_account","private_key":"-----SECRETKEY-----"}"#).unwrap();
        let odd = dir.path().join("odd.json");
        std::fs::write(&odd, r#"{"type":"impersonated_service_account","secret":"-----SECRETKEY-----"}"#).unwrap();
        let wif = dir.path().join("wif.json");
        std::fs::write(&wif, r#"{"type":"external_account","audience":"//iam.googleapis.com/x"}"#).unwrap();
        let with = |p: &std::path::Path| {
            vars(&[("BIGQUERY_PROJECT", "p"), ("GOOGLE_APPLICATION_CREDENTIALS", p.to_str().unwrap())])
        };
        let bq = Settings::from_vars(with(&sa), Needs::Nothing).unwrap().bigquery.unwrap();
        assert_eq!(bq.auth, BigQueryAuth::File { path: sa.clone(), kind: "service_account".into() });
        let bq = Settings::from_vars(with(&wif), Needs::Nothing).unwrap().bigquery.unwrap();
        assert_eq!(bq.auth, BigQueryAuth::File { path: wif.clone(), kind: "external_account".into() });
        let home = vars(&[("BIGQUERY_PROJECT", "p"), ("HOME", dir.path().to_str().unwrap())]);
        assert_eq!(
            Settings::from_vars(home.clone(), Needs::Nothing).unwrap().bigquery.unwrap().auth,
            BigQueryAuth::MetadataServer { host: None }
        );
        std::fs::create_dir_all(dir.path().join(".config/gcloud")).unwrap();
        let adc = dir.path().join(".config/gcloud/application_default_credentials.json");
        std::fs::write(&adc, r#"{"type":"authorized_user","refresh_token":"-----SECRETKEY-----"}"#).unwrap();
        let bq = Settings::from_vars(home, Needs::Nothing).unwrap().bigquery.unwrap();
        assert_eq!(bq.auth, BigQueryAuth::File { path: adc, kind: "authorized_user".into() });
        let e = Settings::from_vars(with(&odd), Needs::Nothing).unwrap_err();
        assert_eq!(e.variable, "GOOGLE_APPLICATION_CREDENTIALS");
        assert!(!e.to_string().contains("SECRETKEY"));
        let e = Settings::from_vars(with(&dir.path().join("missing.json")), Needs::Nothing).unwrap_err();
        assert!(e.problem.contains("cannot be read"), "{e}");
    }

    #[test]
    fn shards_come_from_cloud_run_or_an_indexed_job() {
        let s = |v: &[(&str, &str)]| Settings::from_vars(vars(v), Needs::Nothing).map(|s| s.shard);
        assert_eq!(s(&[("CLOUD_RUN_TASK_INDEX", "2"), ("CLOUD_RUN_TASK_COUNT", "4")]).unwrap(), Some((2, 4)));
        assert_eq!(s(&[("JOB_COMPLETION_INDEX", "0"), ("DEALSYNC_TASK_COUNT", "3")]).unwrap(), Some((0, 3)));
        assert_eq!(s(&[]).unwrap(), None);
        assert_eq!(s(&[("JOB_COMPLETION_INDEX", "1")]).unwrap_err().variable, "DEALSYNC_TASK_COUNT");
        assert_eq!(
            s(&[("CLOUD_RUN_TASK_INDEX", "4"), ("CLOUD_RUN_TASK_COUNT", "4")]).unwrap_err().variable,
            "CLOUD_RUN_TASK_INDEX"
        );
        assert_eq!(
            s(&[("CLOUD_RUN_TASK_INDEX", "x"), ("CLOUD_RUN_TASK_COUNT", "4")]).unwrap_err().variable,
            "CLOUD_RUN_TASK_INDEX"
        );
    }

    #[test]
    fn the_config_file_fills_in_what_the_environment_leaves_out() {
        let file: FileConfig = toml::from_str(
            "[zoho]\ndc = \"eu\"\nmax_concurrency = 10\n[bigquery]\nproject = \"acme\"\ndataset = \"sales\"\n",
        )
        .unwrap();
        let mut v = vars(&BASE);
        v.push(("BIGQUERY_DATASET".into(), "override".into()));
        let s = Config::with_file(file, v).settings(Needs::ZohoCredentials).unwrap();
        let z = s.zoho.unwrap();
        assert_eq!((z.data_centre, z.max_concurrency), (DataCentre::Eu, 10));
        let bq = s.bigquery.unwrap();
        assert_eq!((bq.project.as_str(), bq.dataset.as_str()), ("acme", "override"));
    }

    #[test]
    fn a_bad_value_from_the_file_is_named_by_its_key_and_one_from_the_environment_by_its_variable() {
        let file: FileConfig = toml::from_str("[zoho]\ndc = \"mars\"\n[log]\nformat = \"xml\"\n").unwrap();
        let from_file = Config::with_file(file.clone(), vars(&BASE));
        assert_eq!(from_file.log_format().unwrap_err().variable, "log.format ((given))");
        let dc_only: FileConfig = toml::from_str("[zoho]\ndc = \"mars\"\n").unwrap();
        let e = Config::with_file(dc_only, vars(&BASE)).settings(Needs::ZohoCredentials).unwrap_err();
        assert_eq!(e.variable, "zoho.dc ((given))");
        let mut v = vars(&BASE);
        v.push(("ZOHO_DC".into(), "venus".into()));
        v.push(("LOG_FORMAT".into(), "json".into()));
        let from_env = Config::with_file(file, v);
        assert_eq!(from_env.settings(Needs::ZohoCredentials).unwrap_err().variable, "ZOHO_DC");
        assert_eq!(from_env.log_format().unwrap(), Some(LogFormat::Json));
    }

    #[test]
    fn every_missing_credential_is_named_in_one_error() {
        let e = Config::with_file(FileConfig::default(), vars(&[("ZOHO_CLIENT_ID", "id")]))
            .settings(Needs::ZohoCredentials)
            .unwrap_err();
        assert_eq!(e.variable, "ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN");
        let e = Config::with_file(FileConfig::default(), vars(&[])).settings(Needs::ZohoClient).unwrap_err();
        assert_eq!(e.variable, "ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET");
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dealsync.toml");
        std::fs::write(&p, "[sync]\nwindw_field = \"Closing_Date\"\n").unwrap();
        let e = FileConfig::load(&p, "test").unwrap_err();
        assert!(e.to_string().contains("windw_field"), "{e}");
    }

    #[test]
    fn the_columns_table_is_validated_entry_by_entry() {
        let parse = |toml_text: &str| {
            let t: std::collections::BTreeMap<String, ColumnFile> = toml::from_str(toml_text).unwrap();
            promoted_columns(&t)
        };
        let ok = parse(
            "region = { field = \"Region\", type = \"text\" }\nseats = { field = \"Seats\", type = \"integer\" }",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[0].column.as_str(), ok[0].field.as_str(), ok[0].ty), ("region", "Region", FieldType::Text));
        assert_eq!(
            parse("Region = { field = \"Region\", type = \"text\" }").unwrap_err().variable,
            "columns.Region (config file)"
        );
        assert_eq!(
            parse("amount = { field = \"Amount\", type = \"decimal\" }").unwrap_err().variable,
            "columns.amount (config file)"
        );
        let e = parse("region = { field = \"Region\", type = \"string\" }").unwrap_err();
        assert_eq!(e.variable, "columns.region.type (config file)");
        assert!(e.problem.contains("text_list"), "{e}");
        assert_eq!(
            parse("region = { field = \"Re gion\", type = \"text\" }").unwrap_err().variable,
            "columns.region.field (config file)"
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_echoing_the_password() {
        for var in ["ZOHO_ACCOUNTS_URL", "ZOHO_API_DOMAIN"] {
            let mut v = vars(&BASE);
            v.push((var.into(), "https://user:hunter2-password@accounts.example.org".into()));
            let e = Settings::from_vars(v, Needs::ZohoCredentials).unwrap_err();
            assert_eq!(e.variable, var);
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn join_path_keeps_a_prefix() {
        let base = Url::parse("http://127.0.0.1:1/zoho/").unwrap();
        assert_eq!(join_path(&base, "/oauth/v2/token").as_str(), "http://127.0.0.1:1/zoho/oauth/v2/token");
    }
}
