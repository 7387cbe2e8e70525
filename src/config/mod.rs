//! Everything dealsync reads besides its flags: the environment and the optional configuration file, read once
//! at start (`Config::load`) and validated before any network call. A setting is looked up by its variable,
//! then by its key in the file, so that an error names whichever gave the bad value. Secrets are `SecretString`
//! from the moment they are read and never appear in a message.

pub mod cli;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::exit::Exit;
use crate::schema::{FieldType, Promoted};
use crate::telemetry::LogFormat;

/// A configuration problem, named by the variable (or the key and the file) that caused it. Exit code 78.
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

    /// Logs the error (event `config_error`, naming the variable) and gives the exit code a command returns.
    pub fn report(&self) -> Exit {
        tracing::error!(event = "config_error", variable = %self.variable, "{self}");
        Exit::Config
    }
}

/// A Zoho data centre: its code, its accounts server and the domain of its API hosts (`www.zohoapis.eu`,
/// `sandbox.zohoapis.eu`, …). The API host itself comes from the token response (or `ZOHO_API_DOMAIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCentre {
    pub code: &'static str,
    pub accounts_url: &'static str,
    pub api_domain: &'static str,
}

impl DataCentre {
    pub const ALL: [DataCentre; 10] = [
        DataCentre { code: "us", accounts_url: "https://accounts.zoho.com", api_domain: "zohoapis.com" },
        DataCentre { code: "eu", accounts_url: "https://accounts.zoho.eu", api_domain: "zohoapis.eu" },
        DataCentre { code: "in", accounts_url: "https://accounts.zoho.in", api_domain: "zohoapis.in" },
        DataCentre { code: "au", accounts_url: "https://accounts.zoho.com.au", api_domain: "zohoapis.com.au" },
        DataCentre { code: "jp", accounts_url: "https://accounts.zoho.jp", api_domain: "zohoapis.jp" },
        DataCentre { code: "ca", accounts_url: "https://accounts.zohocloud.ca", api_domain: "zohoapis.ca" },
        DataCentre { code: "sa", accounts_url: "https://accounts.zoho.sa", api_domain: "zohoapis.sa" },
        DataCentre { code: "cn", accounts_url: "https://accounts.zoho.com.cn", api_domain: "zohoapis.com.cn" },
        DataCentre { code: "uk", accounts_url: "https://accounts.zoho.uk", api_domain: "zohoapis.uk" },
        DataCentre { code: "ae", accounts_url: "https://accounts.zoho.ae", api_domain: "zohoapis.ae" },
    ];
}

#[derive(Debug, Clone)]
pub struct ZohoSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
    pub data_centre: DataCentre,
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
    File { path: PathBuf, kind: String },
    /// The metadata server of Cloud Run, GKE (workload identity) or GCE; `host` from `GCE_METADATA_HOST`, as
    /// Google's client libraries read it (`metadata.google.internal` otherwise).
    MetadataServer { host: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQuerySettings {
    pub project: String,
    pub dataset: String,
    pub table: String,
    /// Used when the dataset has to be created.
    pub location: Option<String>,
    pub auth: BigQueryAuth,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `None` only when the caller asked for no Zoho credentials (`--demo`, `simulate`, `schema`).
    pub zoho: Option<ZohoSettings>,
    /// `Some` when `BIGQUERY_PROJECT` (or `bigquery.project`) is set.
    pub bigquery: Option<BigQuerySettings>,
    /// This process's slice of a sharded backfill: (index, count), from Cloud Run or a Kubernetes Indexed Job.
    pub shard: Option<(usize, usize)>,
    /// Fields the config file promotes to typed columns (`[columns]`).
    pub promoted: Vec<Promoted>,
}

impl Settings {
    /// Settings from a list of variables alone, no configuration file (the demo's simulator, tests).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>, needs: Needs) -> Result<Settings, ConfigError> {
        Config::from_vars(vars).settings(needs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    ZohoCredentials,
    /// Client id and secret but no refresh token (`dealsync auth exchange` mints one).
    ZohoClient,
    Nothing,
}

/// The optional configuration file (`config/dealsync.toml`, or `DEALSYNC_CONFIG`): non-secret settings only.
/// Environment variables override it, and flags override both.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub sync: SyncFile,
    pub zoho: ZohoFile,
    pub bigquery: BigQueryFile,
    pub log: LogFile,
    /// Extra Zoho fields promoted to typed columns: `region = { field = "Region", type = "text" }`.
    pub columns: BTreeMap<String, ColumnFile>,
}

/// `[sync]`: the defaults of the `sync` flags, validated with them (`cli::SyncArgs::plan`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZohoFile {
    pub dc: Option<String>,
    pub accounts_url: Option<String>,
    pub api_domain: Option<String>,
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BigQueryFile {
    pub project: Option<String>,
    pub dataset: Option<String>,
    pub table: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFile {
    pub format: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    pub field: String,
    #[serde(rename = "type")]
    pub ty: String,
}

pub const DEFAULT_CONFIG_FILE: &str = "config/dealsync.toml";

impl FileConfig {
    /// Reads and parses the file; `source` (the variable or default that named it) is blamed if it is missing.
    pub fn load(path: &Path, source: &str) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(source, format!("{} cannot be read: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError::new(format!("{} (config file)", path.display()), e.message()))
    }
}

/// Validates the `[columns]` table. Errors name the entry (`columns.region.type`).
pub fn promoted_columns(columns: &BTreeMap<String, ColumnFile>) -> Result<Vec<Promoted>, ConfigError> {
    let mut out = Vec::with_capacity(columns.len());
    for (column, c) in columns {
        let at = |key: &str| format!("columns.{column}{key} (config file)");
        let valid_name = column.len() <= 128
            && column.starts_with(|ch: char| ch.is_ascii_lowercase())
            && column.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            let problem = "a column name is lowercase letters, digits and _, starting with a letter";
            return Err(ConfigError::new(at(""), problem));
        }
        if crate::schema::STANDARD.iter().any(|s| s.name == *column) {
            return Err(ConfigError::new(at(""), format!("{column} is a standard column already; pick another name")));
        }
        let field = c.field.trim();
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            let problem =
                format!("`{}` is not a Zoho API name (letters, digits, _ and $; see `dealsync fields`)", c.field);
            return Err(ConfigError::new(at(".field"), problem));
        }
        let ty = FieldType::parse(c.ty.trim()).ok_or_else(|| {
            ConfigError::new(at(".type"), format!("`{}` is not one of {}", c.ty, crate::schema::TYPE_NAMES))
        })?;
        out.push(Promoted { field: field.to_string(), column: column.clone(), ty });
    }
    Ok(out)
}

/// The variables held as `SecretString` from the moment they are read.
const SECRETS: [&str; 2] = ["ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"];

/// The Zoho credentials, with what each holds (for the error when one is missing).
const CREDENTIALS: [(&str, &str); 3] = [
    ("ZOHO_CLIENT_ID", "the Client ID of your Self Client in the Zoho API console"),
    ("ZOHO_CLIENT_SECRET", "the Client Secret of your Self Client in the Zoho API console"),
    ("ZOHO_REFRESH_TOKEN", "a refresh token minted for this client (see `dealsync auth exchange` in the README)"),
];

/// dealsync's variables and the configuration file, read once at start; nothing else reads the environment
/// (clippy.toml enforces it). Its `Debug` shows the variables' names, never their values.
#[derive(Clone, Default)]
pub struct Config {
    pub file_path: Option<PathBuf>,
    pub file: FileConfig,
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, SecretString>,
}

impl Config {
    /// The process environment and the file `DEALSYNC_CONFIG` names, else `config/dealsync.toml` if it exists.
    pub fn load() -> Result<Config, ConfigError> {
        let config = Config::environment_only();
        let (path, source) = match config.var("DEALSYNC_CONFIG") {
            Some(p) => (p, "DEALSYNC_CONFIG"),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => (DEFAULT_CONFIG_FILE, DEFAULT_CONFIG_FILE),
            None => return Ok(config),
        };
        let path = PathBuf::from(path);
        Ok(Config { file: FileConfig::load(&path, source)?, file_path: Some(path), ..config })
    }

    /// The process environment alone: what is left to report a configuration file that cannot be read.
    #[allow(clippy::disallowed_methods)] // the one place that reads the process environment
    pub fn environment_only() -> Config {
        Config::from_vars(std::env::vars())
    }

    /// Keeps dealsync's own variables; a secret becomes a `SecretString` at once.
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Config {
        let mut config = Config::default();
        for (name, value) in vars.into_iter().filter(|(name, _)| ours(name)) {
            if !SECRETS.contains(&name.as_str()) {
                config.vars.insert(name, value);
            } else if !value.trim().is_empty() {
                config.secrets.insert(name, SecretString::from(value.trim()));
            }
        }
        config
    }

    /// A variable as set (trimmed; empty counts as unset), secrets excepted.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A setting from its variable, else its key in the file (`ZOHO_DC` is `zoho.dc`), with the name an error
    /// gives: the variable, or the key and the file (`zoho.dc (config/dealsync.toml)`).
    fn get(&self, var: &str) -> Option<(String, String)> {
        if let Some(v) = self.var(var) {
            return Some((var.to_string(), v.to_string()));
        }
        let key = var.to_ascii_lowercase().replacen('_', ".", 1);
        let (section, name) = key.split_once('.').filter(|(s, _)| ["zoho", "bigquery", "log"].contains(s))?;
        let file = toml::Value::try_from(&self.file).expect("the file's values serialize");
        let value = file.get(section)?.get(name)?;
        let value = value.as_str().map_or_else(|| value.to_string(), String::from);
        let path = self.file_path.as_deref().unwrap_or(Path::new("")).display();
        Some((format!("{key} ({path})"), value.trim().to_string())).filter(|(_, v)| !v.is_empty())
    }

    /// A setting read by `parse`; a value it refuses "is not `what`".
    fn parsed<T>(&self, var: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Option<T>, ConfigError> {
        let Some((from, v)) = self.get(var) else { return Ok(None) };
        parse(&v).map(Some).ok_or_else(|| ConfigError::new(from, format!("`{v}` is not {what}")))
    }

    pub fn settings(&self, needs: Needs) -> Result<Settings, ConfigError> {
        let bigquery = self.bigquery()?;
        let zoho = (needs != Needs::Nothing).then(|| self.zoho(needs == Needs::ZohoClient)).transpose()?;
        Ok(Settings { zoho, bigquery, shard: self.shard()?, promoted: self.promoted()? })
    }

    pub fn log_format(&self) -> Result<Option<LogFormat>, ConfigError> {
        let format = |v: &str| <LogFormat as clap::ValueEnum>::from_str(v, true).ok();
        self.parsed("LOG_FORMAT", format, "a log format; expected text, json or gcp")
    }

    /// `ZOHO_MAX_CONCURRENCY` (or `zoho.max_concurrency`), for commands that need no credentials too.
    pub fn max_concurrency(&self) -> Result<usize, ConfigError> {
        let in_range = |v: &str| v.parse::<usize>().ok().filter(|n| (1..=25).contains(n));
        let what = "a whole number from 1 to 25 (Zoho allows 5 to 25 concurrent calls by edition)";
        Ok(self.parsed("ZOHO_MAX_CONCURRENCY", in_range, what)?.unwrap_or(5))
    }

    pub fn promoted(&self) -> Result<Vec<Promoted>, ConfigError> {
        promoted_columns(&self.file.columns)
    }

    fn zoho(&self, client_only: bool) -> Result<ZohoSettings, ConfigError> {
        let secret = self.secret("ZOHO_CLIENT_SECRET")?;
        let token = if client_only { Some(SecretString::from("")) } else { self.secret("ZOHO_REFRESH_TOKEN")? };
        let client_id = self.var("ZOHO_CLIENT_ID");
        let set = [client_id.is_some(), secret.is_some(), token.is_some()];
        let (Some(client_id), Some(client_secret), Some(refresh_token)) = (client_id, secret, token) else {
            return Err(missing_credentials(set));
        };
        let client_id = no_space("ZOHO_CLIENT_ID", client_id)?.to_string();
        let dc = |v: &str| DataCentre::ALL.into_iter().find(|dc| dc.code.eq_ignore_ascii_case(v));
        let what = format!("a Zoho data centre; expected one of {}", DataCentre::ALL.map(|dc| dc.code).join(", "));
        let data_centre = self.parsed("ZOHO_DC", dc, &what)?.unwrap_or(DataCentre::ALL[0]);
        Ok(ZohoSettings {
            client_id,
            client_secret,
            refresh_token,
            data_centre,
            accounts_url: match self.get("ZOHO_ACCOUNTS_URL") {
                Some((from, v)) => parse_base_url(&from, &v)?,
                None => Url::parse(data_centre.accounts_url).expect("built-in URL is valid"),
            },
            api_domain: self.get("ZOHO_API_DOMAIN").map(|(from, v)| parse_base_url(&from, &v)).transpose()?,
            max_concurrency: self.max_concurrency()?,
        })
    }

    /// A secret from its variable, or from the file `<VAR>_FILE` names (Docker and Kubernetes secrets mounted as
    /// files, which no `docker inspect` or `/proc/<pid>/environ` shows). Both set is ambiguous, and refused.
    fn secret(&self, var: &str) -> Result<Option<SecretString>, ConfigError> {
        let file_var = format!("{var}_FILE");
        let secret = match (self.secrets.get(var), self.var(&file_var)) {
            (Some(_), Some(_)) => return Err(ConfigError::new(format!("{var}, {file_var}"), "are both set; keep one")),
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|e| ConfigError::new(&file_var, format!("{path} cannot be read: {e}")))?,
            (None, None) => return Ok(None),
        };
        // Trailing newlines from `echo … > secret` are the most common copy-paste error: trimmed.
        let trimmed = no_space(var, secret.expose_secret().trim())?;
        Ok((!trimmed.is_empty()).then(|| SecretString::from(trimmed)))
    }

    fn bigquery(&self) -> Result<Option<BigQuerySettings>, ConfigError> {
        let project_id =
            |v: &str| v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)).then(|| v.to_string());
        let Some(project) = self.parsed("BIGQUERY_PROJECT", project_id, "a Google Cloud project id")? else {
            return Ok(None);
        };
        let auth = self.google_auth()?;
        let name = |v: &str| {
            let valid = v.len() <= 1024 && !v.starts_with("_dealsync");
            (valid && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| v.to_string())
        };
        let what = "a valid name (letters, digits and underscores; not starting with _dealsync)";
        let dataset = self.parsed("BIGQUERY_DATASET", name, what)?.unwrap_or_else(|| "crm".into());
        let table = self.parsed("BIGQUERY_TABLE", name, what)?.unwrap_or_else(|| "closed_won_deals".into());
        let location = self.get("BIGQUERY_LOCATION").map(|(_, v)| v);
        Ok(Some(BigQuerySettings { project, dataset, table, location, auth }))
    }

    /// Where the BigQuery sink's credentials come from, in Application Default Credentials' order.
    fn google_auth(&self) -> Result<BigQueryAuth, ConfigError> {
        if let Some(host) = self.var("BIGQUERY_EMULATOR_HOST") {
            let url =
                Url::parse(&format!("http://{host}/bigquery/v2")).ok().filter(|u| is_loopback(u) && u.port().is_some());
            let problem = format!(
                "`{host}` must be a loopback host:port such as 127.0.0.1:9050 (the emulator runs without authentication)"
            );
            let url = url.ok_or_else(|| ConfigError::new("BIGQUERY_EMULATOR_HOST", problem))?;
            return Ok(BigQueryAuth::Emulator { base_url: url });
        }
        if let Some(path) = self.var("GOOGLE_APPLICATION_CREDENTIALS") {
            return credentials_file("GOOGLE_APPLICATION_CREDENTIALS", PathBuf::from(path));
        }
        // gcloud's Application Default Credentials: `$CLOUDSDK_CONFIG`, else `~/.config/gcloud`.
        let gcloud = self.var("CLOUDSDK_CONFIG").map(PathBuf::from);
        let gcloud = gcloud.or_else(|| self.var("HOME").map(|home| Path::new(home).join(".config/gcloud")));
        if let Some(path) = gcloud.map(|dir| dir.join("application_default_credentials.json")).filter(|p| p.is_file()) {
            return credentials_file(&format!("gcloud's credentials file {}", path.display()), path);
        }
        // Google's libraries read a bare host[:port] here and build the URL around it.
        let host = self.var("GCE_METADATA_HOST");
        let bare = |h: &str| !h.contains(['/', '?', '#', '@']) && Url::parse(&format!("http://{h}")).is_ok();
        if let Some(h) = host.filter(|h| !bare(h)) {
            let problem =
                format!("`{h}` must be a host or host:port such as 169.254.169.254, without a scheme or a path");
            return Err(ConfigError::new("GCE_METADATA_HOST", problem));
        }
        Ok(BigQueryAuth::MetadataServer { host: host.map(String::from) })
    }

    /// Cloud Run Jobs set `CLOUD_RUN_TASK_INDEX`/`CLOUD_RUN_TASK_COUNT`; a Kubernetes Indexed Job sets
    /// `JOB_COMPLETION_INDEX`, and the manifest passes the task count as `DEALSYNC_TASK_COUNT`.
    fn shard(&self) -> Result<Option<(usize, usize)>, ConfigError> {
        let cloud_run = self.var("CLOUD_RUN_TASK_INDEX").or(self.var("CLOUD_RUN_TASK_COUNT")).is_some();
        let (index_var, count_var) = match (cloud_run, self.var("JOB_COMPLETION_INDEX")) {
            (true, _) => ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"),
            (false, Some(_)) => ("JOB_COMPLETION_INDEX", "DEALSYNC_TASK_COUNT"),
            (false, None) => return Ok(None),
        };
        let number = |var: &'static str, unset: String| {
            self.parsed(var, |v| v.parse::<usize>().ok(), "a whole number")?.ok_or(ConfigError::new(var, unset))
        };
        let index = number(index_var, format!("is not set but {count_var} is"))?;
        let count = number(count_var, format!("is not set but {index_var} is; set it to the number of tasks"))?;
        if count == 0 {
            return Err(ConfigError::new(count_var, "must be at least 1"));
        }
        if index >= count {
            return Err(ConfigError::new(index_var, format!("{index} is not below the task count {count}")));
        }
        Ok(Some((index, count)))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("file_path", &self.file_path)
            .field("variables", &self.vars.keys().chain(self.secrets.keys()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The variables dealsync reads; the rest of the environment is not kept.
fn ours(name: &str) -> bool {
    const PREFIXES: [&str; 4] = ["ZOHO_", "BIGQUERY_", "DEALSYNC_", "CLOUD_RUN_TASK_"];
    const GOOGLE: [&str; 3] = ["GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GCE_METADATA_HOST"];
    const OTHERS: [&str; 5] = ["HOME", "JOB_COMPLETION_INDEX", "LOG_FORMAT", "NO_COLOR", "RUST_LOG"];
    PREFIXES.iter().any(|p| name.starts_with(p)) || GOOGLE.contains(&name) || OTHERS.contains(&name)
}

/// Names every missing credential at once (`set` in `CREDENTIALS` order), so a first setup is one round trip.
fn missing_credentials(set: [bool; 3]) -> ConfigError {
    let missing: Vec<_> = CREDENTIALS.iter().zip(set).filter(|(_, set)| !set).map(|(c, _)| c).collect();
    match missing[..] {
        [(var, what)] => ConfigError::new(*var, format!("is not set; it must hold {what}")),
        _ => ConfigError::new(
            missing.iter().map(|(var, _)| *var).collect::<Vec<_>>().join(", "),
            "are not set; they hold your Self Client's Client ID and Client Secret from the Zoho API console and a \
             refresh token minted for it (see `dealsync auth exchange` in the README)",
        ),
    }
}

/// Refuses a value with white space inside, saying where, never what: it may be a secret.
fn no_space<'a>(var: &str, v: &'a str) -> Result<&'a str, ConfigError> {
    if v.contains(char::is_whitespace) {
        return Err(ConfigError::new(var, "contains white space inside the value; copy it again without breaks"));
    }
    Ok(v)
}

/// A Google credentials file of a `type` dealsync can use; errors name `source`, never the content.
fn credentials_file(source: &str, path: PathBuf) -> Result<BigQueryAuth, ConfigError> {
    let fail = |problem: String| ConfigError::new(source, format!("{} {problem}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| fail("is not a JSON credentials file".into()))?;
    match json.get("type").and_then(|t| t.as_str()) {
        Some(k @ ("service_account" | "authorized_user" | "external_account")) => {
            Ok(BigQueryAuth::File { kind: k.to_string(), path })
        }
        other => Err(fail(format!(
            "has type {:?}; expected a service_account key, an authorized_user file or an external_account \
             (Workload Identity Federation) file",
            other.unwrap_or("(none)")
        ))),
    }
}

/// Parses a base URL given in a variable: `https://…`, or `http://…` only towards this machine.
fn parse_base_url(variable: &str, v: &str) -> Result<Url, ConfigError> {
    // Echoed without user-info: a password in the URL must not reach the error.
    let shown = crate::telemetry::redact(v, &[]);
    let url = Url::parse(v).map_err(|e| ConfigError::new(variable, format!("`{shown}` is not a URL ({e})")))?;
    check_scheme(&url).map_err(|p| ConfigError::new(variable, format!("`{shown}`: {p}")))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        let problem = format!("`{shown}` must be a base URL without credentials, query or fragment");
        return Err(ConfigError::new(variable, problem));
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
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
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

    /// A configuration from a file already parsed and a list of variables, the file named `(given)`.
    fn with_file(file: FileConfig, vars: Vec<(String, String)>) -> Config {
        Config { file_path: Some(PathBuf::from("(given)")), file, ..Config::from_vars(vars) }
    }

    const BASE: [(&str, &str); 3] =
        [("ZOHO_CLIENT_ID", "1000.ABC"), ("ZOHO_CLIENT_SECRET", "s3cr3t"), ("ZOHO_REFRESH_TOKEN", "1000.rt\n")];

    #[test]
    fn defaults_to_the_us_data_centre_and_trims_values() {
        let s = Settings::from_vars(vars(&BASE), Needs::ZohoCredentials).unwrap();
        let z = s.zoho.unwrap();
        assert_eq!(z.data_centre.code, "us");
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
    fn the_debug_of_a_configuration_names_its_variables_but_shows_no_value() {
        let shown = format!("{:?}", Config::from_vars(vars(&BASE)));
        assert!(shown.contains("ZOHO_CLIENT_SECRET") && shown.contains("ZOHO_CLIENT_ID"), "{shown}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("1000.rt") && !shown.contains("1000.ABC"), "{shown}");
        let z = Settings::from_vars(vars(&BASE), Needs::ZohoCredentials).unwrap().zoho.unwrap();
        assert!(!format!("{z:?}").contains("s3cr3t") && !format!("{z:?}").contains("1000.rt"));
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
        let bq = Settings::from_vars(home.clone(), Needs::Nothing).unwrap().bigquery.unwrap();
        assert_eq!(bq.auth, BigQueryAuth::File { path: adc.clone(), kind: "authorized_user".into() });
        let e = Settings::from_vars(with(&odd), Needs::Nothing).unwrap_err();
        assert_eq!(e.variable, "GOOGLE_APPLICATION_CREDENTIALS");
        assert!(!e.to_string().contains("SECRETKEY"));
        let e = Settings::from_vars(with(&dir.path().join("missing.json")), Needs::Nothing).unwrap_err();
        assert!(e.problem.contains("cannot be read"), "{e}");
        let metadata = |host: &str| {
            let mut v = home.clone();
            v.push(("GCE_METADATA_HOST".into(), host.into()));
            Settings::from_vars(v, Needs::Nothing).map(|s| s.bigquery.unwrap().auth)
        };
        std::fs::remove_file(&adc).unwrap();
        assert_eq!(
            metadata("169.254.169.254:80").unwrap(),
            BigQueryAuth::MetadataServer { host: Some("169.254.169.254:80".into()) }
        );
        for bad in ["http://169.254.169.254", "metadata.google.internal/x", "a b"] {
            assert_eq!(metadata(bad).unwrap_err().variable, "GCE_METADATA_HOST", "{bad}");
        }
    }

    #[test]
    fn shards_come_from_cloud_run_or_an_indexed_job() {
        let s = |v: &[(&str, &str)]| Settings::from_vars(vars(v), Needs::Nothing).map(|s| s.shard);
        assert_eq!(s(&[("CLOUD_RUN_TASK_INDEX", "2"), ("CLOUD_RUN_TASK_COUNT", "4")]).unwrap(), Some((2, 4)));
        assert_eq!(s(&[("JOB_COMPLETION_INDEX", "0"), ("DEALSYNC_TASK_COUNT", "3")]).unwrap(), Some((0, 3)));
        assert_eq!(s(&[]).unwrap(), None);
        assert_eq!(s(&[("JOB_COMPLETION_INDEX", "1")]).unwrap_err().variable, "DEALSYNC_TASK_COUNT");
        let e = s(&[("CLOUD_RUN_TASK_COUNT", "4")]).unwrap_err();
        assert_eq!(e.to_string(), "CLOUD_RUN_TASK_INDEX: is not set but CLOUD_RUN_TASK_COUNT is");
        let e = s(&[("JOB_COMPLETION_INDEX", "0"), ("DEALSYNC_TASK_COUNT", "0")]).unwrap_err();
        assert_eq!(e.to_string(), "DEALSYNC_TASK_COUNT: must be at least 1");
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
        let s = with_file(file, v).settings(Needs::ZohoCredentials).unwrap();
        let z = s.zoho.unwrap();
        assert_eq!((z.data_centre.code, z.max_concurrency), ("eu", 10));
        let bq = s.bigquery.unwrap();
        assert_eq!((bq.project.as_str(), bq.dataset.as_str()), ("acme", "override"));
    }

    #[test]
    fn a_bad_value_from_the_file_is_named_by_its_key_and_one_from_the_environment_by_its_variable() {
        let file: FileConfig = toml::from_str("[zoho]\ndc = \"mars\"\n[log]\nformat = \"xml\"\n").unwrap();
        let from_file = with_file(file.clone(), vars(&BASE));
        assert_eq!(from_file.log_format().unwrap_err().variable, "log.format ((given))");
        let dc_only: FileConfig = toml::from_str("[zoho]\ndc = \"mars\"\n").unwrap();
        let e = with_file(dc_only, vars(&BASE)).settings(Needs::ZohoCredentials).unwrap_err();
        assert_eq!(e.variable, "zoho.dc ((given))");
        let mut v = vars(&BASE);
        v.push(("ZOHO_DC".into(), "venus".into()));
        v.push(("LOG_FORMAT".into(), "json".into()));
        let from_env = with_file(file, v);
        assert_eq!(from_env.settings(Needs::ZohoCredentials).unwrap_err().variable, "ZOHO_DC");
        assert_eq!(from_env.log_format().unwrap(), Some(LogFormat::Json));
    }

    #[test]
    fn every_missing_credential_is_named_in_one_error() {
        let e = with_file(FileConfig::default(), vars(&[("ZOHO_CLIENT_ID", "id")]))
            .settings(Needs::ZohoCredentials)
            .unwrap_err();
        assert_eq!(e.variable, "ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN");
        let e = with_file(FileConfig::default(), vec![]).settings(Needs::ZohoClient).unwrap_err();
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
