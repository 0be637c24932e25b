//! `payrun sandbox`: the providers' emulator on a port, until interrupted.

use super::Error;
use crate::exit;
use std::io::Write;

pub(super) fn sandbox(args: crate::cli::SandboxArgs) -> Result<i32, Error> {
    use crate::sandbox::{self, Config, Faults};
    let config = Config {
        app_id: args.app_id,
        secret_key: args.secret_key,
        kyc_delay: args.kyc_delay,
        payout_delay: args.payout_delay,
        balances: args.balances.into_iter().collect(),
        faults: Faults {
            latency: args.latency,
            error_rate: args.error_rate,
            rate_limit: args.rate_limit,
            reset_rate: args.reset_rate,
            lost_response_rate: args.lost_response_rate,
            timeout_rate: args.timeout_rate,
            timeout_delay: args.timeout_delay,
            late_apply_rate: args.late_apply_rate,
            late_apply_delay: args.late_apply_delay,
            listing_lag: args.listing_lag,
            garbled_rate: args.garbled_rate,
            inconsistent_pages: args.inconsistent_pages,
            arrivals: args.arrivals,
        },
        seed: args.seed,
        seed_data: args.seed_data,
        finhub: sandbox::FinhubConfig {
            client_id: args.finhub_client_id,
            client_secret: args.finhub_client_secret,
            tenant: args.finhub_tenant,
            token_ttl: args.finhub_token_ttl,
            claimed_expires_in: None,
        },
        payto_funding: args.payto_funding,
        unfunded_expiry: args.unfunded_expiry,
        payin_delay: args.payin_delay,
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Error::Fatal(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.bind, args.port))
            .await
            .map_err(|e| {
                Error::Fatal(format!("cannot listen on {}:{}: {e}", args.bind, args.port))
            })?;
        let server = sandbox::start(listener, config)
            .await
            .map_err(|e| Error::Fatal(format!("cannot start the sandbox: {e}")))?;
        // The first line is a contract: tests and scripts read the address from it.
        println!("payrun sandbox listening on http://{}", server.addr);
        println!("Hello Clever API base URL: {}", server.base_url());
        println!("FinHub gateway URL: {}", server.finhub_url());
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        Ok(exit::SUCCESS)
    })
}
