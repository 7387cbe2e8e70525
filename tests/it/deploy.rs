//! The deployment files stay honest: every manifest parses and carries the settings the README promises.

use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    })
}

fn secret_env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| !e["valueFrom"]["secretKeyRef"].is_null())
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_kubernetes_cronjob_is_safe_to_leave_alone() {
    let cj = yaml("deploy/kubernetes/cronjob.yaml");
    assert_eq!(cj["kind"], "CronJob");
    assert_eq!(at(&cj, "spec.concurrencyPolicy"), "Forbid");
    assert!(at(&cj, "spec.startingDeadlineSeconds").as_u64().unwrap() > 0);
    assert!(at(&cj, "spec.timeZone").as_str().is_some());
    let job = at(&cj, "spec.jobTemplate.spec");
    assert!(job["backoffLimit"].as_u64().is_some());
    assert!(job["activeDeadlineSeconds"].as_u64().unwrap() > 7200, "longer than dealsync's own 2h deadline");
    let rules = job["podFailurePolicy"]["rules"].as_sequence().unwrap();
    let fail_78 = rules.iter().any(|r| {
        r["action"] == "FailJob"
            && r["onExitCodes"]["operator"] == "In"
            && r["onExitCodes"]["values"].as_sequence().unwrap().iter().any(|v| v.as_u64() == Some(78))
    });
    assert!(fail_78, "exit 78 (configuration) is not retried");
    let pod = at(job, "template.spec");
    assert_eq!(pod["restartPolicy"], "Never", "podFailurePolicy needs restartPolicy Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "dealsync", "podFailurePolicy names this container");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    let mut secrets = secret_env_names(c);
    secrets.sort();
    assert_eq!(secrets, ["ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"]);
    let plain: Vec<&str> = c["env"].as_sequence().unwrap().iter().filter(|e| e["value"].is_string()).map(|e| e["name"].as_str().unwrap()).collect();
    assert!(!plain.iter().any(|n| n.contains("SECRET") || n.contains("TOKEN")), "no secret as a literal value");
}

#[test]
fn the_indexed_backfill_job_passes_the_task_count() {
    let job = yaml("deploy/kubernetes/backfill-indexed-job.yaml");
    assert_eq!(at(&job, "spec.completionMode"), "Indexed");
    let completions = at(&job, "spec.completions").as_u64().unwrap();
    let c = at(&job, "spec.template.spec.containers.0");
    let count = c["env"].as_sequence().unwrap().iter().find(|e| e["name"] == "DEALSYNC_TASK_COUNT").unwrap();
    assert_eq!(count["value"].as_str().unwrap().parse::<u64>().unwrap(), completions);
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--from") && args.contains(&"--to"), "sharding applies to backfills");
}

#[test]
fn the_cloud_run_job_takes_secrets_from_secret_manager() {
    let job = yaml("deploy/cloudrun/job.yaml");
    assert_eq!(job["apiVersion"], "run.googleapis.com/v1");
    assert_eq!(job["kind"], "Job");
    let task = at(&job, "spec.template.spec.template.spec");
    assert!(task["timeoutSeconds"].as_u64().unwrap() > 7200);
    assert!(task["maxRetries"].as_u64().is_some());
    assert!(task["serviceAccountName"].as_str().unwrap().ends_with(".iam.gserviceaccount.com"));
    let c = &task["containers"][0];
    let mut secrets = secret_env_names(c);
    secrets.sort();
    assert_eq!(secrets, ["ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"]);
    for e in c["env"].as_sequence().unwrap().iter().filter(|e| !e["valueFrom"].is_null()) {
        assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], "latest");
    }
}

#[test]
fn the_systemd_units_and_the_crontab_run_the_sync_from_an_env_file() {
    let service = std::fs::read_to_string(root().join("deploy/systemd/dealsync.service")).unwrap();
    for line in ["Type=oneshot", "EnvironmentFile=/etc/dealsync/dealsync.env", "ExecStart=/usr/local/bin/dealsync sync", "NoNewPrivileges=yes"] {
        assert!(service.lines().any(|l| l.trim() == line), "{line}");
    }
    assert!(!service.contains("User=root"));
    let timer = std::fs::read_to_string(root().join("deploy/systemd/dealsync.timer")).unwrap();
    assert!(timer.contains("OnCalendar=") && timer.contains("Persistent=true"));
    let cron = std::fs::read_to_string(root().join("deploy/cron/crontab")).unwrap();
    let entry = cron.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    assert!(entry.split_whitespace().count() > 5, "five schedule fields, then a command: {entry}");
    assert!(entry.contains("flock -n") && entry.contains("dealsync sync"));
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 3, "multi-stage: {froms:?}");
    assert!(froms.iter().any(|l| l.contains("AS chef")), "a cached dependency layer (cargo-chef)");
    assert!(lines.iter().any(|l| l.starts_with("RUN cargo chef cook") && l.contains("--locked")));
    assert!(lines.iter().any(|l| l.starts_with("RUN cargo build --release --locked")));
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last_from..];
    assert!(runtime[0].contains("distroless/cc") && runtime[0].contains("nonroot"), "{}", runtime[0]);
    let user = runtime.iter().find(|l| l.starts_with("USER ")).expect("USER in the runtime stage");
    assert!(!user.contains("root:") || user.contains("nonroot"), "{user}");
    let entry = runtime.iter().find(|l| l.starts_with("ENTRYPOINT ")).unwrap();
    let exec_form: Vec<String> = serde_json::from_str(entry.trim_start_matches("ENTRYPOINT ")).expect("exec form");
    assert_eq!(exec_form, ["/usr/local/bin/dealsync"]);
    assert!(!lines.iter().any(|l| l.starts_with("ADD ")), "no ADD");
    assert!(!lines.iter().any(|l| l.contains("SECRET") || l.contains("TOKEN") || l.contains(".env")), "no secrets in layers");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for entry in ["target", ".git", "*.env", ".venv*", "*.db"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
    }
}

#[test]
fn the_example_configuration_covers_every_variable_the_readme_documents() {
    let env = std::fs::read_to_string(root().join("config/example.env")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for var in [
        "ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "ZOHO_DC", "ZOHO_ACCOUNTS_URL", "ZOHO_API_DOMAIN",
        "ZOHO_MAX_CONCURRENCY", "BIGQUERY_PROJECT", "BIGQUERY_DATASET", "BIGQUERY_TABLE", "BIGQUERY_LOCATION",
        "GOOGLE_APPLICATION_CREDENTIALS", "BIGQUERY_EMULATOR_HOST", "LOG_FORMAT", "RUST_LOG", "DEALSYNC_CONFIG",
        "DEALSYNC_TASK_COUNT",
    ] {
        assert!(env.contains(var), "config/example.env lacks {var}");
        assert!(readme.contains(&format!("`{var}`")), "README lacks {var}");
    }
    let file: dealsync::config::FileConfig =
        toml::from_str(&std::fs::read_to_string(root().join("config/dealsync.example.toml")).unwrap()).expect("the example parses");
    assert!(file.sync.overlap.is_some() && file.bigquery.dataset.is_some());
}
