//! The deployment files stay honest: every manifest parses, carries the settings the README promises, and
//! follows one exit-code policy: 0 ok; 3 done but needs a look, never retried; 2 (usage) and 78 (configuration)
//! fail at once; 75 (unavailable, interrupted) and 1 (internal) may be retried. scripts/validate_deploy.py checks
//! the same files against the Kubernetes and Cloud Run schemas and systemd-analyze.

use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    })
}

/// The client secret and the refresh token come as files from the Secret, readable by the pod's group only,
/// and the pod mounts no Kubernetes API token.
fn assert_secrets_are_files(pod: &Value) {
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    let env = c["env"].as_sequence().unwrap();
    let value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap().to_string());
    assert_eq!(value("ZOHO_CLIENT_SECRET_FILE").as_deref(), Some("/var/run/secrets/dealsync/client-secret"));
    assert_eq!(value("ZOHO_REFRESH_TOKEN_FILE").as_deref(), Some("/var/run/secrets/dealsync/refresh-token"));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/run/secrets/dealsync");
    let volume = &pod["volumes"][0]["secret"];
    assert_eq!(volume["secretName"], "dealsync-zoho");
    assert_eq!(volume["defaultMode"].as_u64(), Some(0o440));
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
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

/// The exit codes of a Job's one `FailJob` rule, which must watch the dealsync container.
fn fail_job_exit_codes(job: &Value) -> Vec<u64> {
    let rules = job["podFailurePolicy"]["rules"].as_sequence().unwrap();
    let fail: Vec<&Value> = rules.iter().filter(|r| r["action"] == "FailJob").collect();
    assert_eq!(fail.len(), 1, "one FailJob rule: {rules:?}");
    let on = &fail[0]["onExitCodes"];
    assert_eq!(on["containerName"], "dealsync", "podFailurePolicy names the container");
    assert_eq!(on["operator"], "In");
    on["values"].as_sequence().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

/// An `Ignore` rule on `{type: DisruptionTarget, status: "True"}`: evictions and drains use up no retry.
fn ignores_disruptions(job: &Value) -> bool {
    job["podFailurePolicy"]["rules"].as_sequence().unwrap().iter().any(|r| {
        r["action"] == "Ignore"
            && r["onPodConditions"].as_sequence().is_some_and(|conditions| {
                conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True")
            })
    })
}

#[test]
fn the_kubernetes_cronjob_is_safe_to_leave_alone() {
    let cj = yaml("deploy/kubernetes/cronjob.yaml");
    assert_eq!(cj["kind"], "CronJob");
    assert_eq!(at(&cj, "spec.concurrencyPolicy"), "Forbid");
    assert!(at(&cj, "spec.startingDeadlineSeconds").as_u64().unwrap() > 0);
    assert!(at(&cj, "spec.timeZone").as_str().is_some());
    let job = at(&cj, "spec.jobTemplate.spec");
    let retries = job["backoffLimit"].as_u64().unwrap();
    assert!((1..=6).contains(&retries), "a few retries for 75 and 1: {retries}");
    assert!(job["activeDeadlineSeconds"].as_u64().unwrap() > 7200, "longer than dealsync's own 2h deadline");
    let pod = at(job, "template.spec");
    assert_eq!(pod["restartPolicy"], "Never", "podFailurePolicy needs restartPolicy Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "dealsync", "podFailurePolicy names this container");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    assert_eq!(secret_env_names(c), ["ZOHO_CLIENT_ID"]);
    assert_secrets_are_files(pod);
    let plain: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| e["value"].is_string())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let literal_secret = |n: &&str| (n.contains("SECRET") || n.contains("TOKEN")) && !n.ends_with("_FILE");
    assert!(!plain.iter().any(literal_secret), "no secret as a literal value (a _FILE variable names a mounted file)");
}

#[test]
fn both_kubernetes_jobs_fail_at_once_on_2_3_and_78_and_retry_only_75_and_1() {
    let cj = yaml("deploy/kubernetes/cronjob.yaml");
    let backfill = yaml("deploy/kubernetes/backfill-indexed-job.yaml");
    for (name, job) in [("cronjob", at(&cj, "spec.jobTemplate.spec")), ("backfill", at(&backfill, "spec"))] {
        // Sorted and unique, as the API server requires; 0 never with operator In.
        assert_eq!(fail_job_exit_codes(job), [2u64, 3, 78], "{name}: usage, partial and configuration");
        assert!(ignores_disruptions(job), "{name}: DisruptionTarget with status \"True\" is ignored");
        assert_eq!(at(job, "template.spec.restartPolicy"), "Never", "{name}: podFailurePolicy needs Never");
        let retries =
            if job["completionMode"] == "Indexed" { &job["backoffLimitPerIndex"] } else { &job["backoffLimit"] };
        assert!(retries.as_u64().unwrap() > 0, "{name}: 75 and 1 are retried");
    }
}

#[test]
fn the_indexed_backfill_job_passes_the_task_count() {
    let job = yaml("deploy/kubernetes/backfill-indexed-job.yaml");
    assert_eq!(at(&job, "spec.completionMode"), "Indexed");
    let completions = at(&job, "spec.completions").as_u64().unwrap();
    assert!(at(&job, "spec.backoffLimitPerIndex").as_u64().is_some(), "a failed slice is retried alone");
    let c = at(&job, "spec.template.spec.containers.0");
    let count = c["env"].as_sequence().unwrap().iter().find(|e| e["name"] == "DEALSYNC_TASK_COUNT").unwrap();
    assert_eq!(count["value"].as_str().unwrap().parse::<u64>().unwrap(), completions);
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--from") && args.contains(&"--to"), "sharding applies to backfills");
    assert_secrets_are_files(at(&job, "spec.template.spec"));
}

#[test]
fn the_cloud_run_job_takes_secrets_from_secret_manager() {
    let job = yaml("deploy/cloudrun/job.yaml");
    assert_eq!(job["apiVersion"], "run.googleapis.com/v1");
    assert_eq!(job["kind"], "Job");
    // Job -> ExecutionTemplateSpec -> ExecutionSpec -> TaskTemplateSpec -> TaskSpec.
    let task = at(&job, "spec.template.spec.template.spec");
    assert!(task["timeoutSeconds"].as_u64().unwrap() > 7200);
    assert!(task["serviceAccountName"].as_str().unwrap().ends_with(".iam.gserviceaccount.com"));
    let c = &task["containers"][0];
    assert!(c["image"].is_string());
    let mut secrets = secret_env_names(c);
    secrets.sort();
    assert_eq!(secrets, ["ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"]);
    for e in c["env"].as_sequence().unwrap().iter().filter(|e| !e["valueFrom"].is_null()) {
        assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], "latest");
    }
}

#[test]
fn the_cloud_run_job_never_retries_because_it_cannot_tell_exit_codes_apart() {
    // dealsync retries transient failures within the run; a retry of 3, 78 or 2 would repeat the failure and
    // the alert, and the next scheduled run starts from the last good run anyway.
    let job = yaml("deploy/cloudrun/job.yaml");
    assert_eq!(at(&job, "spec.template.spec.template.spec.maxRetries").as_u64(), Some(0));
    assert!(at(&job, "spec.template.spec.maxRetries").is_null(), "maxRetries belongs to the TaskSpec");
}

#[test]
fn the_systemd_units_and_the_crontab_run_the_sync_from_an_env_file() {
    let service = text("deploy/systemd/dealsync.service");
    for line in [
        "Type=oneshot",
        "EnvironmentFile=/etc/dealsync/dealsync.env",
        "ExecStart=/usr/local/bin/dealsync sync",
        "NoNewPrivileges=yes",
    ] {
        assert!(service.lines().any(|l| l.trim() == line), "{line}");
    }
    assert!(!service.contains("User=root"));
    let timer = text("deploy/systemd/dealsync.timer");
    assert!(timer.contains("OnCalendar=") && timer.contains("Persistent=true"));
    let cron = text("deploy/cron/crontab");
    let entry = cron.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    assert!(entry.split_whitespace().count() > 5, "five schedule fields, then a command: {entry}");
    assert!(entry.contains("flock -n") && entry.contains("dealsync sync"));
}

#[test]
fn the_systemd_service_keeps_its_state_private_and_alerts_on_failure() {
    let service = text("deploy/systemd/dealsync.service");
    for line in [
        "UMask=0077",
        "StateDirectory=dealsync",
        "WorkingDirectory=/var/lib/dealsync",
        "OnFailure=dealsync-failure@%n.service",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(service.lines().any(|l| l.trim() == line), "dealsync.service lacks {line}");
    }
    assert!(!service.lines().any(|l| l.trim().starts_with("Restart=")), "no automatic restart of 3 or 78");
    let failure = text("deploy/systemd/dealsync-failure@.service");
    assert!(failure.lines().any(|l| l.trim() == "Type=oneshot"));
    assert!(failure.contains("MONITOR_EXIT_STATUS") && failure.contains("logger"), "it logs the exit code");
}

#[test]
fn the_crontab_line_exits_with_dealsyncs_own_code_and_logs_a_failure() {
    use std::os::unix::fs::PermissionsExt;

    let cron = text("deploy/cron/crontab");
    let entry = cron.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    let command = entry.splitn(6, ' ').nth(5).expect("five schedule fields, then a command");
    // Run the line as cron would (/bin/sh -c), with a stand-in dealsync and logger in a scratch directory.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("bin")).unwrap();
    std::fs::create_dir(d.join("state")).unwrap();
    let script = |path: &Path, body: &str| {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(d.join("dealsync").as_path(), "#!/bin/sh\necho \"stand-in $* $ZOHO_DC\"\nexit \"$FAKE_EXIT\"\n");
    script(d.join("bin/logger").as_path(), "#!/bin/sh\n{ echo \"logger $*\"; cat; } >> \"$FAKE_LOG\"\n");
    std::fs::write(d.join("env"), "ZOHO_DC=eu\n").unwrap();
    let command = command
        .replace("/usr/local/bin/dealsync", d.join("dealsync").to_str().unwrap())
        .replace("/etc/dealsync/dealsync.env", d.join("env").to_str().unwrap())
        .replace("/var/lib/dealsync", d.join("state").to_str().unwrap());
    for code in [0, 3, 75, 78] {
        let log = d.join(format!("log-{code}"));
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", command.as_str()])
            .env("PATH", format!("{}:/usr/bin:/bin", d.join("bin").display()))
            .env("FAKE_EXIT", code.to_string())
            .env("FAKE_LOG", &log)
            .output()
            .unwrap();
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        assert_eq!(out.status.code(), Some(code), "the line keeps dealsync's exit code; log: {logged}");
        assert!(logged.contains("stand-in sync eu"), "the output, with the env file loaded, goes to logger: {logged}");
        assert!(logged.contains("logger -t dealsync --size 65536"), "a long run_summary stays one record: {logged}");
        if code != 0 {
            assert!(logged.contains(&format!("exited {code}")), "a failure line names the code: {logged}");
        }
    }
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_as_non_root() {
    let text = text("Dockerfile");
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
    assert!(
        !lines.iter().any(|l| l.contains("SECRET") || l.contains("TOKEN") || l.contains(".env")),
        "no secrets in layers"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for entry in ["target", ".git", "*.env", ".venv*", "*.db"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
    }
}

#[test]
fn the_container_keeps_its_sqlite_file_in_a_volume_owned_by_nonroot() {
    let text = text("Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last_from..];
    assert!(runtime.contains(&"WORKDIR /var/lib/dealsync"), "the default sqlite:./dealsync.db lands in the volume");
    assert!(runtime.contains(&"VOLUME /var/lib/dealsync"));
    assert!(
        runtime.iter().any(|l| l.starts_with("COPY ") && l.contains("--chown=65532:65532") && l.contains("/var/lib/")),
        "distroless has no shell: the directory comes from the builder, owned by nonroot"
    );
    assert!(text.contains("-v dealsync-data:/var/lib/dealsync"), "the header's docker run mounts the volume");
}

#[test]
fn the_example_configuration_covers_every_variable_the_readme_documents() {
    let env = std::fs::read_to_string(root().join("config/example.env")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    // Every variable of the README's configuration table (its first column), whatever is added to it later.
    let table = readme.split("| Variable | Default | Meaning |").nth(1).expect("the README's variable table");
    let documented: Vec<&str> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| l.split('|').nth(1).unwrap_or("").split('`').skip(1).step_by(2))
        .collect();
    assert!(documented.len() >= 20 && documented.contains(&"ZOHO_CLIENT_ID"), "{documented:?}");
    for var in documented.iter().filter(|v| !v.starts_with("CLOUD_RUN_") && **v != "JOB_COMPLETION_INDEX") {
        assert!(env.contains(var), "config/example.env lacks {var}");
    }
    // And the other way round: every variable dealsync reads is documented.
    for var in [
        "ZOHO_CLIENT_ID",
        "ZOHO_CLIENT_SECRET",
        "ZOHO_REFRESH_TOKEN",
        "ZOHO_DC",
        "ZOHO_ACCOUNTS_URL",
        "ZOHO_API_DOMAIN",
        "ZOHO_MAX_CONCURRENCY",
        "BIGQUERY_PROJECT",
        "BIGQUERY_DATASET",
        "BIGQUERY_TABLE",
        "BIGQUERY_LOCATION",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "BIGQUERY_EMULATOR_HOST",
        "LOG_FORMAT",
        "RUST_LOG",
        "NO_COLOR",
        "DEALSYNC_CONFIG",
        "DEALSYNC_TASK_COUNT",
        "DEALSYNC_PUSHGATEWAY_URL",
        "DEALSYNC_INSTANCE",
    ] {
        assert!(documented.contains(&var), "README's variable table lacks {var}");
    }
    let file: dealsync::config::FileConfig =
        toml::from_str(&std::fs::read_to_string(root().join("config/dealsync.example.toml")).unwrap())
            .expect("the example parses");
    assert!(file.sync.overlap.is_some() && file.bigquery.dataset.is_some());
}

#[test]
fn shell_blocks_marked_sh_use_nothing_bash_only_and_the_guide_runs_the_image_it_built() {
    for file in ["README.md", "docs/deploy.md"] {
        let doc = text(file);
        for block in doc.split("```sh\n").skip(1).map(|b| b.split("```").next().unwrap()) {
            assert!(!block.contains("read -rs") && !block.contains("read -s"), "{file}: `read -s` is bash's:\n{block}");
        }
    }
    let guide = text("docs/deploy.md");
    for line in guide.lines().filter(|l| l.trim_start().starts_with("docker run")) {
        let line = line.trim_end_matches('\\').trim();
        let image_follows =
            guide.contains(&format!("{line} \\\n  \"$REGION-docker.pkg.dev/$PROJECT/dealsync/dealsync:$TAG\""));
        assert!(line.contains("dealsync/dealsync:$TAG") || image_follows, "runs an image it did not build: {line}");
    }
    assert!(guide.contains("python3 -m venv .venv-bqemu"), "the venv the checks use is created first");
}
