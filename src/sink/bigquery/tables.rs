//! The dataset and the tables dealsync writes: created when missing, checked against the schema when present
//! (missing columns added, incompatible ones refused), and kept from expiring. A dataset may set a default
//! table or partition expiration that BigQuery applies to every new table, and an expired `closing_date`
//! partition, ledger or quarantine is deleted silently: dealsync's tables get an explicit "never", or the run
//! stops naming the dataset setting.

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Api;
use super::error::{BqFailure, Kind, Result};
use super::sql;
use crate::schema::Column;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetResource {
    pub location: Option<String>,
    pub default_table_expiration_ms: Option<String>,
    pub default_partition_expiration_ms: Option<String>,
}

/// An expiration BigQuery reports (unset: absent, empty or "0"), described by `say`.
fn set(v: &Option<String>, say: impl Fn(&str) -> String) -> Option<String> {
    v.as_deref().filter(|v| !v.is_empty() && *v != "0").map(say)
}

fn described(found: [Option<String>; 2], sep: &str) -> Option<String> {
    let found: Vec<String> = found.into_iter().flatten().collect();
    (!found.is_empty()).then(|| found.join(sep))
}

impl DatasetResource {
    pub fn expiring_defaults(&self) -> Option<String> {
        let table = set(&self.default_table_expiration_ms, |ms| format!("defaultTableExpirationMs = {ms}"));
        let partition = set(&self.default_partition_expiration_ms, |ms| format!("defaultPartitionExpirationMs = {ms}"));
        described([table, partition], ", ")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TableResource {
    pub schema: Schema,
    pub expiration_time: Option<String>,
    pub time_partitioning: Partitioning,
}

#[derive(Debug, Default, Deserialize)]
pub struct Schema {
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partitioning {
    pub expiration_ms: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub mode: Option<String>,
}

impl TableResource {
    /// The table's expirations, described, or `None` when it never expires.
    pub fn expires(&self) -> Option<String> {
        let table = set(&self.expiration_time, |t| format!("the table expires at {t} (ms since the epoch)"));
        let partitions =
            set(&self.time_partitioning.expiration_ms, |ms| format!("its partitions expire after {ms} ms"));
        described([table, partitions], "; ")
    }
}

pub struct TableDef {
    pub id: String,
    pub columns: Vec<Column>,
    /// The target: partitioned by `closing_date`, clustered by `deal_id`.
    pub target: bool,
    /// An expiration (ms since the epoch) for a staging table; the others never expire.
    pub expires_at: Option<i64>,
}

/// `None` for a "not found" failure.
fn found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Err(e) if e.is_not_found() => Ok(None),
        r => r.map(Some),
    }
}

/// The dataset, read (and created when missing, in `BIGQUERY_LOCATION`); jobs run in its location.
pub async fn ensure_dataset(api: &Api, location: Option<&str>) -> Result<DatasetResource> {
    let dataset = &api.dataset;
    let ds = match found(api.dataset().await)? {
        Some(ds) => ds,
        None => {
            let mut body = json!({"datasetReference": {"datasetId": dataset}, "labels": {"managed-by": "dealsync"}});
            if let Some(location) = location {
                body["location"] = json!(location);
            }
            let what = format!("creating dataset {dataset}");
            match api.post::<DatasetResource>(&what, "datasets", &body).await {
                Ok(d) => {
                    tracing::info!(event = "dataset_created", dataset, "created the BigQuery dataset");
                    d
                }
                // Created meanwhile by another task of a sharded run: read it as it is.
                Err(e) if e.is_duplicate() => api.dataset().await?,
                Err(e) => return Err(e),
            }
        }
    };
    let _ = api.location.set(ds.location.clone());
    Ok(ds)
}

pub async fn get_table(api: &Api, table: &str) -> Result<Option<TableResource>> {
    let what = format!("reading table {}.{table}", api.dataset);
    found(api.get(&what, &format!("datasets/{}/tables/{table}", api.dataset), &[]).await)
}

/// Creates the table if missing; returns the existing one otherwise.
pub async fn ensure_table(api: &Api, def: &TableDef) -> Result<Option<TableResource>> {
    if let Some(t) = get_table(api, &def.id).await? {
        return Ok(Some(t));
    }
    let (project, dataset) = (&api.project, &api.dataset);
    let mut body = json!({
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": def.id},
        "schema": {"fields": def.columns},
        "labels": {"managed-by": "dealsync"},
    });
    if let Some(at) = def.expires_at {
        body["expirationTime"] = json!(at.to_string());
    }
    if def.target {
        body["timePartitioning"] = json!({"type": "DAY", "field": "closing_date"});
        body["clustering"] = json!({"fields": ["deal_id"]});
    }
    let table = format!("{dataset}.{}", def.id);
    match api.post::<Value>(&format!("creating table {table}"), &format!("datasets/{dataset}/tables"), &body).await {
        Ok(_) => tracing::info!(event = "table_created", table = %table, "created a BigQuery table"),
        Err(e) if e.is_duplicate() => {}
        Err(e) => return Err(e),
    }
    Ok(None)
}

/// Makes sure a table that must keep its rows never expires: an expiration the dataset's defaults gave it is
/// removed (`SET OPTIONS … = NULL`), then the table is read again; if it still expires, the run stops.
pub async fn never_expire(api: &Api, dataset: &DatasetResource, def: &TableDef, job_id: &str) -> Result<()> {
    let Some(expires) = get_table(api, &def.id).await?.and_then(|t| t.expires()) else { return Ok(()) };
    let (ds, id) = (&api.dataset, &def.id);
    let partitions = if def.target { ", partition_expiration_days = NULL" } else { "" };
    let statement = format!("ALTER TABLE {} SET OPTIONS (expiration_timestamp = NULL{partitions})", api.table_ref(id));
    api.run(&format!("removing the expiration of {ds}.{id}"), job_id, &statement.into()).await?;
    if let Some(still) = get_table(api, id).await?.and_then(|t| t.expires()) {
        let setting = dataset.expiring_defaults().unwrap_or_else(|| "an expiration".into());
        let message = format!(
            "{still} (the dataset sets {setting}); dealsync could not remove it. Remove the dataset's default \
             expiration (bq update --default_table_expiration 0 --default_partition_expiration 0 {ds}) or the \
             table's, then run again"
        );
        return Err(BqFailure::new(format!("{ds}.{id} would delete rows"), message, Kind::Config));
    }
    tracing::info!(event = "expiration_removed", table = %def.id, was = %expires, "the table no longer expires");
    Ok(())
}

/// What `dealsync check` sees: the dataset, the table against the schema, and a dry-run query.
pub async fn check(api: &Api, t: &str, columns: &[Column]) -> Result<Vec<String>> {
    let (p, d) = (&api.project, &api.dataset);
    let mut seen = vec![format!("Google credentials: {}", api.credentials.source)];
    let dataset = found(api.dataset::<DatasetResource>().await)?;
    match &dataset {
        Some(ds) => {
            let location = ds.location.as_deref().unwrap_or("unknown");
            seen.push(format!("dataset {p}.{d} is reachable (location {location})"));
            let removed = "dealsync removes the expiration of the tables it creates";
            seen.extend(ds.expiring_defaults().map(|defaults| format!("dataset {p}.{d} sets {defaults}: {removed}")));
        }
        None => seen.push(format!(
            "dataset {p}.{d} does not exist yet; the first run creates it (needs bigquery.datasets.create)"
        )),
    }
    let probe = match get_table(api, t).await? {
        Some(existing) => {
            let (add, problems) = compare_schema(&existing.schema.fields, columns);
            if !problems.is_empty() {
                return Err(BqFailure::new("the existing table is not compatible", problems.join("; "), Kind::Config));
            }
            let adds = format!("is compatible; the next run adds {} column(s)", add.len());
            seen.push(format!("table {p}.{d}.{t} {}", if add.is_empty() { "has a compatible schema" } else { &adds }));
            seen.extend(existing.expires().map(|e| format!("table {p}.{d}.{t}: {e}; the next run removes it")));
            format!("SELECT deal_id, modified_time FROM {} LIMIT 1", api.table_ref(t))
        }
        None => {
            seen.push(format!("table {p}.{d}.{t} does not exist yet; the first run creates it"));
            "SELECT 1".to_string()
        }
    };
    // A dry run needs bigquery.api.create, as the MERGE will; it reads and bills nothing.
    let location = dataset.and_then(|d| d.location);
    let body = json!({"query": probe, "useLegacySql": false, "dryRun": true, "location": location});
    api.post::<Value>("a dry-run query", "queries", &body).await?;
    seen.push(format!("queries can run in project {p} (dry run)"));
    Ok(seen)
}

/// Columns to add, and the incompatibilities that forbid writing.
pub fn compare_schema(have: &[Field], want: &[Column]) -> (Vec<Column>, Vec<String>) {
    let (mut add, mut problems) = (Vec::new(), Vec::new());
    for w in want {
        let Some(h) = have.iter().find(|h| h.name.eq_ignore_ascii_case(&w.name)) else {
            add.push(w.clone());
            continue;
        };
        let (ht, wt) = (sql::canonical_type(&h.ty), w.ty.bigquery());
        let (hm, wm) = (h.mode.as_deref().unwrap_or("NULLABLE").to_ascii_uppercase(), w.mode());
        if ht != wt {
            problems.push(format!("column {} is {ht}, dealsync writes {wt}", w.name));
        } else if (hm == "REPEATED") != (wm == "REPEATED") || (hm == "REQUIRED" && wm != "REQUIRED") {
            problems.push(format!("column {} is {hm}, dealsync writes {wm}", w.name));
        }
    }
    (add, problems)
}

/// Checks an existing target against the schema: missing columns are added (nullable: BigQuery adds no other),
/// incompatible ones stop the run.
pub async fn evolve(api: &Api, existing: &TableResource, def: &TableDef, job_id: &str) -> Result<()> {
    let (to_add, problems) = compare_schema(&existing.schema.fields, &def.columns);
    if !problems.is_empty() {
        let advice = "migrate or rename the table, or point BIGQUERY_TABLE elsewhere";
        let what = "the existing table is not compatible and nothing was written";
        return Err(BqFailure::new(what, format!("{}; {advice}", problems.join("; ")), Kind::Config));
    }
    // One ALTER a column: the emulator takes one command a statement, and a job id each keeps reruns apart.
    for (i, c) in to_add.iter().enumerate() {
        let (table, ty) = (api.table_ref(&def.id), sql::column_type(c));
        let statement = format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `{}` {ty}", c.name);
        let what = format!("adding column {} to {}.{}", c.name, api.dataset, def.id);
        api.run(&what, &format!("{job_id}_{i}"), &statement.into()).await?;
    }
    if !to_add.is_empty() {
        let names: Vec<&str> = to_add.iter().map(|c| c.name.as_ref()).collect();
        tracing::info!(event = "columns_added", columns = %names.join(","), "added columns to the target table");
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, ty: &str, mode: &str) -> Field {
        Field { name: name.into(), ty: ty.into(), mode: Some(mode.into()) }
    }

    fn fields(columns: &[Column]) -> Vec<Field> {
        columns.iter().map(|c| f(&c.name, c.ty.bigquery(), c.mode())).collect()
    }

    #[test]
    fn a_missing_column_is_added_as_nullable_and_a_changed_type_is_refused() {
        let want = crate::schema::columns(&[]);
        let mut have: Vec<_> =
            fields(&want).into_iter().filter(|c| c.name != "pipeline" && c.name != "deal_id").collect();
        have.push(f("DEAL_ID", "STRING", "REQUIRED"));
        let (add, problems) = compare_schema(&have, &want);
        assert_eq!(add.iter().map(|c| c.name.as_ref()).collect::<Vec<_>>(), vec!["pipeline"]);
        assert!(problems.is_empty(), "{problems:?}");

        let mut have = fields(&want);
        have[3] = f("amount", "FLOAT64", "NULLABLE");
        have[19] = f("tags", "STRING", "NULLABLE");
        let (_, problems) = compare_schema(&have, &want);
        assert_eq!(
            problems,
            vec![
                "column amount is FLOAT64, dealsync writes NUMERIC",
                "column tags is NULLABLE, dealsync writes REPEATED"
            ]
        );
    }

    #[test]
    fn integer_and_int64_are_the_same_type() {
        let want = crate::schema::columns(&[]);
        let mut have = fields(&want);
        let at = want.iter().position(|c| c.ty.bigquery() == "INT64").expect("an integer column");
        have[at].ty = "INTEGER".into();
        let (add, problems) = compare_schema(&have, &want);
        assert!(add.is_empty() && problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_table_expires_by_its_own_time_or_its_partitions() {
        let t: TableResource = serde_json::from_str(r#"{"expirationTime": "1797230553654"}"#).unwrap();
        assert!(t.expires().unwrap().contains("1797230553654"));
        let t: TableResource =
            serde_json::from_str(r#"{"timePartitioning": {"type": "DAY", "expirationMs": "86400000"}}"#).unwrap();
        assert!(t.expires().unwrap().contains("86400000"));
        assert!(TableResource::default().expires().is_none());
        let d: DatasetResource = serde_json::from_str(r#"{"defaultTableExpirationMs": "3600000"}"#).unwrap();
        assert_eq!(d.expiring_defaults().unwrap(), "defaultTableExpirationMs = 3600000");
    }
}
