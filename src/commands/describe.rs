//! `dealsync schema`: the target table's columns as the config file shapes it (promoted columns included), for a
//! person, as BigQuery's JSON schema and DDL, or as SQLite DDL. Every form comes from the one column table.

use crate::config::cli::SchemaFormat;
use crate::exit::Exit;
use crate::sink;

pub fn run(format: SchemaFormat, config: &crate::config::Config) -> Exit {
    let columns = match config.promoted() {
        Ok(promoted) => crate::schema::columns(&promoted),
        Err(e) => return e.report(),
    };
    let out = match format {
        SchemaFormat::Text => {
            let mut out = format!("{:<18} {:<10} {:<9} {}\n", "column", "type", "mode", "description");
            for c in &columns {
                out.push_str(&format!("{:<18} {:<10} {:<9} {}\n", c.name, c.ty.bigquery(), c.mode(), c.description));
            }
            out
        }
        // A file `bq mk --table --schema schema.json --time_partitioning_field closing_date
        // --clustering_fields deal_id DATASET.closed_won_deals` takes as it is.
        SchemaFormat::Json | SchemaFormat::Bigquery => {
            serde_json::to_string_pretty(&columns).expect("columns serialize") + "\n"
        }
        SchemaFormat::Sqlite => sink::sqlite::create_table_sql(&columns) + ";\n",
        SchemaFormat::BigqueryDdl => sink::bigquery::sql::target_ddl("`PROJECT.DATASET.closed_won_deals`", &columns),
    };
    print!("{out}");
    Exit::Ok
}
