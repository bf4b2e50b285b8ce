//! `quiver mcp`: the index as an MCP server for coding agents, over stdio (the default, how
//! agents start local servers) or streamable HTTP (`--http PORT`). The index is brought up to
//! date in the background as the server starts, then kept fresh by a watcher.

use super::watch::{updater, TreeArgs};
use anyhow::{bail, Context};
use clap::Args;
use quiver_index::{watch, WatchOptions, Watcher};
use quiver_mcp::McpServer;
use quiver_server::{Connection, Timeouts};
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct McpArgs {
    #[command(flatten)]
    tree: TreeArgs,
    /// Serve streamable HTTP on this port (at /mcp) instead of stdio.
    #[arg(long, value_name = "PORT")]
    http: Option<u16>,
    /// Address for --http; 127.0.0.1 keeps the server to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// With --http: require `Authorization: Bearer KEY`.
    #[arg(long, env = "QUIVER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// With --http and no key: also accept requests naming HOST (repeatable; `*`: any).
    #[arg(long = "allowed-host", value_name = "HOST", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Follow file edits (re-index in the background after changes settle). On by default;
    /// `--watch false` leaves updates to the `reindex` tool.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    watch: Option<bool>,
}

pub fn run(args: McpArgs) -> anyhow::Result<()> {
    if args.api_key.as_deref() == Some("") {
        bail!("the API key is empty: give a key, or leave --api-key out");
    }
    let updater = updater(&args.tree)?;
    let server = Arc::new(McpServer::new(updater.clone()));
    // Kept alive as long as the process: dropping it would stop the watching.
    let watcher: Arc<Mutex<Option<Watcher>>> = Arc::new(Mutex::new(None));
    {
        let server = server.clone();
        let watcher = watcher.clone();
        let watching = args.watch.unwrap_or(true);
        std::thread::spawn(move || {
            match updater.update(&quiver_index::NoProgress) {
                Ok(report) => eprintln!("quiver mcp: index up to date: {}", report.summary()),
                Err(error) => eprintln!("quiver mcp: updating the index failed: {error}"),
            }
            if !watching {
                return;
            }
            match watch(updater, WatchOptions::default(), |outcome| match outcome {
                Ok(report) => eprintln!("quiver mcp: {}", report.summary()),
                Err(error) => eprintln!("quiver mcp: updating the index failed: {error}"),
            }) {
                Ok(started) => {
                    *watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
                    server.set_watching(true);
                }
                Err(error) => eprintln!("quiver mcp: {error}"),
            }
        });
    }
    match args.http {
        None => quiver_mcp::serve_stdio(server).context("serving MCP on stdio"),
        Some(port) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind((args.host.as_str(), port))
                    .await
                    .with_context(|| format!("listening on {}:{port}", args.host))?;
                let address = listener.local_addr()?;
                if !address.ip().is_loopback() && args.api_key.is_none() {
                    eprintln!(
                        "quiver mcp: WARNING: listening on {address} WITHOUT AN API KEY: anyone \
                         who can reach it can read the index. Pass --api-key."
                    );
                }
                let app =
                    quiver_mcp::router(server, args.api_key.clone(), address, &args.allowed_hosts);
                let connection = Connection {
                    authenticated: args.api_key.is_some(),
                    allowed_hosts: args.allowed_hosts.clone(),
                    timeouts: Timeouts::default(),
                    payload_limit: 1 << 20,
                };
                eprintln!("quiver mcp: serving http://{address}/mcp");
                quiver_server::serve(app, listener, &connection, super::serve::shutdown_signal())
                    .await?;
                anyhow::Ok(())
            })
        }
    }
}
