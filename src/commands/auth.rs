//! `dealsync auth`: first-time set-up. `exchange` turns a Self Client grant code into the refresh token a nightly
//! run needs (the only place a secret is ever printed); `scopes` prints the OAuth scopes to ask for.

use crate::config;
use crate::exit::Exit;
use crate::zoho;

pub fn scopes() -> Exit {
    println!("{}", zoho::auth::SCOPES.join(","));
    Exit::Ok
}

pub async fn exchange(grant_token: &str, config: &config::Config) -> Exit {
    let mut code = grant_token.to_string();
    if grant_token == "-" {
        code.clear();
        if std::io::stdin().read_line(&mut code).is_err() {
            eprintln!("error: could not read the grant code from stdin");
            return Exit::Usage;
        }
    }
    let code = code.trim();
    if code.is_empty() {
        eprintln!("error: --grant-token is empty");
        return Exit::Usage;
    }
    let settings = match config.settings(config::Needs::ZohoClient) {
        Ok(s) => s.zoho.expect("client settings requested"),
        Err(e) => return e.report(),
    };
    // A redirect would carry the grant code and the client secret to wherever it points: never followed.
    let http = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Internal;
        }
    };
    match zoho::auth::exchange_grant(&http, &settings, &secrecy::SecretString::from(code.to_string())).await {
        Ok(ex) => {
            use secrecy::ExposeSecret;
            // The only place a secret is ever printed: stdout, once, for the operator to store.
            println!("ZOHO_REFRESH_TOKEN={}", ex.refresh_token.expose_secret());
            let granted = ex.scope.unwrap_or_default();
            let missing: Vec<&str> =
                zoho::auth::SCOPES.iter().copied().filter(|s| !granted.split([' ', ',']).any(|g| g == *s)).collect();
            eprintln!("Store it in your secret manager as ZOHO_REFRESH_TOKEN; it is not shown again.");
            eprintln!("API domain: {}", ex.api_domain);
            if !missing.is_empty() {
                let missing = missing.join(",");
                eprintln!("warning: the grant lacks scopes dealsync needs: {missing} (generate a new code with them)");
            }
            Exit::Ok
        }
        Err(e) => {
            tracing::error!(event = "auth_exchange_failed", "{e}");
            e.exit()
        }
    }
}
