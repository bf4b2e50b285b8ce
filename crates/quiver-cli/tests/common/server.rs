//! A real `quiver serve` process on a loopback port, and a small JSON client for it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

pub struct Served {
    child: Mutex<Child>,
    pub base: String,
    /// Standard error lines after the "serving" one.
    log: Mutex<mpsc::Receiver<String>>,
}

/// Starts `quiver serve --port 0 ARGS` with `env`, and waits until it listens.
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .args(["serve", "--port", "0"])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn quiver serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match log.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some(address) = line
                    .split(" on ")
                    .nth(1)
                    .filter(|_| line.contains("serving"))
                {
                    return Served {
                        child: Mutex::new(child),
                        base: address.trim().to_string(),
                        log: Mutex::new(log),
                    };
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("quiver serve did not start: {}", seen.join("\n"));
            }
        }
    }
}

/// A status code and a JSON body (Null when the body is not JSON).
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub retry_after: Option<String>,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, None)
    }

    pub fn post_with(&self, path: &str, body: &str, bearer: Option<&str>) -> Reply {
        let mut request = ureq::post(&self.url(path)).set("content-type", "application/json");
        if let Some(token) = bearer {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        reply(request.send_string(body))
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(ureq::get(&self.url(path)).call())
    }

    pub fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .expect("GET")
            .into_string()
            .expect("text body")
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status and remaining log.
    pub fn terminate(&self) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = self.child.lock().expect("lock");
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        // The reader thread ends with the process; give it a moment to pass the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let rest = self.log.lock().expect("lock").try_iter().collect();
        (status, rest)
    }
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_string);
    let text = response.into_string().unwrap_or_default();
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        retry_after,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
