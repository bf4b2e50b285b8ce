//! MCP over standard input and output: one JSON-RPC message per line each way, as agents
//! start local servers. Each request runs on a thread of its own, so a long `reindex` does not
//! hold up a `search`; replies may come out of order, as JSON-RPC allows. Logs go to standard
//! error, never to standard output.

use crate::protocol::Incoming;
use crate::McpServer;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

/// Serves `server` until standard input ends, then waits for the requests in flight.
pub fn serve_stdio(server: Arc<McpServer>) -> std::io::Result<()> {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let send = move |message: Value| {
        // A panic while writing could cut one message short; later ones still go out.
        let mut out = crate::lock(&out);
        // A client that went away cannot be told anything; the loop ends when stdin closes.
        let _ = writeln!(out, "{message}").and_then(|()| out.flush());
    };
    let send: Arc<dyn Fn(Value) + Send + Sync> = Arc::new(send);
    let mut running = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let incoming = Incoming::parse(&line);
        let server = server.clone();
        let send = send.clone();
        running.push(std::thread::spawn(move || {
            if let Some(reply) = server.handle(incoming, &*send) {
                send(reply);
            }
        }));
        running.retain(|thread| !thread.is_finished());
    }
    for thread in running {
        let _ = thread.join();
    }
    Ok(())
}
