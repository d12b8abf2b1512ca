//! Headless Chromium driven over the Chrome DevTools Protocol, for testing
//! the collector's web page as a person's browser sees it.
//!
//! The browser runs inside a network namespace (a fleet's hub, or the calling
//! thread's own), listens for DevTools on that namespace's loopback, and is
//! reached from a socket opened inside the same namespace. Messages are the
//! protocol's JSON `{id, method, params, sessionId}` over one WebSocket, with
//! one page target attached in flattened mode. Dropping the [`Browser`] kills
//! Chromium's whole process group and removes its profile directory, also
//! when the test panics.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

use crate::patient;
use crate::process::scrub_env;

/// How long Chromium may take to print its DevTools address.
const STARTUP: Duration = Duration::from_secs(30);
/// Longest wait for the answer to one protocol command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of Chromium's stderr kept for failure messages.
const KEEP_LINES: usize = 200;

/// The Chromium binary: `REACHMAP_CHROMIUM` if set, else `chromium`.
pub fn chromium_binary() -> String {
    std::env::var("REACHMAP_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Whether the Chromium binary can be run at all.
pub fn chromium_available() -> bool {
    Command::new(chromium_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    profile: Option<TempDir>,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts Chromium inside `netns` (`ip netns exec`), or in the calling
    /// thread's namespace when `None`, and attaches to a blank page.
    pub fn launch(netns: Option<&str>) -> Result<Browser, String> {
        Self::launch_with(netns, &[])
    }

    /// `launch` with more Chromium flags.
    pub fn launch_with(netns: Option<&str>, extra: &[String]) -> Result<Browser, String> {
        let profile = tempfile::Builder::new()
            .prefix("rmt-chromium-")
            .tempdir()
            .map_err(|e| format!("cannot create a Chromium profile dir: {e}"))?;
        let profile_arg = format!("--user-data-dir={}", profile.path().display());
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &chromium_binary()]);
                c
            }
            None => Command::new(chromium_binary()),
        };
        scrub_env(&mut cmd);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-breakpad",
            "--mute-audio",
            "--window-size=1280,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .args(extra)
        .args([&profile_arg, "about:blank"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that renderers and helpers die with it.
        .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromium_binary()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let lines = Arc::clone(&stderr);
            std::thread::spawn(move || follow_stderr(pipe, &lines, &tx));
        }
        let url = match rx.recv_timeout(patient(STARTUP)) {
            Ok(url) => url,
            Err(_) => {
                kill_group(&mut child);
                let log = stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
                return Err(format!(
                    "Chromium printed no DevTools address within {STARTUP:?}; stderr:\n{log}"
                ));
            }
        };
        let mut partial = Partial {
            child: Some(child),
            profile: Some(profile),
        };
        let ws = connect(netns, &url)?;
        let mut browser = Browser {
            child: partial.child.take().ok_or("child vanished")?,
            profile: partial.profile.take(),
            ws,
            session: String::new(),
            next_id: 0,
            stderr,
        };
        let target = browser.send(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| format!("Target.createTarget gave no targetId: {target}"))?
            .to_string();
        let attached = browser.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("Target.attachToTarget gave no sessionId: {attached}"))?
            .to_string();
        Ok(browser)
    }

    /// Sends a command to the attached page and returns its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{method}: cannot send: {e}"))?;
        let deadline = Instant::now() + patient(COMMAND_TIMEOUT);
        loop {
            if Instant::now() >= deadline {
                return Err(format!("{method}: no answer within {COMMAND_TIMEOUT:?}"));
            }
            let frame = self
                .ws
                .read()
                .map_err(|e| format!("{method}: connection to Chromium failed: {e}"))?;
            let Message::Text(text) = frame else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str())
                .map_err(|e| format!("{method}: invalid JSON from Chromium ({e}): {text}"))?;
            // Events (no id) and answers to other ids are not ours.
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Navigates the page and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        // Chromium aborts a load with ERR_NETWORK_CHANGED when it sees its
        // namespace's interfaces settle (other tests make and remove veths
        // beside it); a browser retries that, and so does this.
        let mut attempts = 0;
        loop {
            let nav = self.call("Page.navigate", json!({"url": url}))?;
            match nav.get("errorText").and_then(Value::as_str) {
                Some(err) if err.contains("ERR_NETWORK_CHANGED") && attempts < 3 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Some(err) => return Err(format!("cannot load {url}: {err}")),
                None => break,
            }
        }
        let deadline = Instant::now() + patient(COMMAND_TIMEOUT);
        loop {
            let state = self.eval("document.readyState")?;
            let here = self.eval("location.href")?;
            if state == "complete" && here.as_str().is_some_and(|h| h.starts_with(url)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{url} did not finish loading: {state} at {here}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and
    /// returns its value as JSON; a thrown exception is an error.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("exception");
            return Err(format!("`{expression}` threw: {text}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// A real mouse click (move, press, release) at the centre of the first
    /// element matching `selector`, scrolled into view first.
    pub fn click(&mut self, selector: &str) -> Result<(), String> {
        let sel = serde_json::to_string(selector).map_err(|e| e.to_string())?;
        let centre = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ))?;
        let (Some(x), Some(y)) = (centre[0].as_f64(), centre[1].as_f64()) else {
            return Err(format!("no element matches {selector}"));
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )?;
        }
        Ok(())
    }

    /// A PNG of the viewport, for a person to look at.
    pub fn screenshot_base64(&mut self) -> Result<String, String> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        r["data"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no screenshot data: {r}"))
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) -> Result<(), String> {
        let png = base64_decode(&self.screenshot_base64()?)?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The last lines Chromium wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if let Some(dir) = self.profile.take() {
            remove_profile(dir);
        }
    }
}

/// What `launch` has made before the `Browser` exists, cleaned up if a later
/// step fails.
struct Partial {
    child: Option<Child>,
    profile: Option<TempDir>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child);
        }
        if let Some(dir) = self.profile.take() {
            remove_profile(dir);
        }
    }
}

/// SIGKILL to the whole process group before reaping the leader, so the
/// group id cannot have been reused by then.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.wait();
}

/// Removes the profile; dying helpers may still write to it for a moment.
fn remove_profile(dir: TempDir) {
    let path = dir.keep();
    for _ in 0..20 {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("harness: cannot remove Chromium profile {}", path.display());
}

/// Keeps the tail of Chromium's stderr and passes on the DevTools address.
fn follow_stderr(
    pipe: std::process::ChildStderr,
    lines: &Mutex<Vec<String>>,
    tx: &mpsc::Sender<String>,
) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if let Some(url) = line.strip_prefix("DevTools listening on ") {
            let _ = tx.send(url.trim().to_string());
        }
        if let Ok(mut l) = lines.lock() {
            if l.len() == KEEP_LINES {
                l.remove(0);
            }
            l.push(line);
        }
    }
}

/// Opens the DevTools WebSocket at `url` (`ws://127.0.0.1:PORT/...`) from
/// inside `netns`: a socket belongs to the namespace it was created in, so a
/// short-lived thread enters the namespace, connects, and hands it back.
fn connect(netns: Option<&str>, url: &str) -> Result<WebSocket<TcpStream>, String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected DevTools address {url:?}"))?
        .to_string();
    let stream = match netns {
        None => TcpStream::connect(&authority).map_err(|e| format!("{authority}: {e}"))?,
        Some(ns) => {
            let ns_path = format!("/run/netns/{ns}");
            std::thread::spawn(move || -> Result<TcpStream, String> {
                let file = std::fs::File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {ns_path}: {e}"))?;
                TcpStream::connect(&authority).map_err(|e| format!("{authority}: {e}"))
            })
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())??
        }
    };
    stream
        .set_read_timeout(Some(patient(COMMAND_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let (ws, _) = tungstenite::client::client(url, stream)
        .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
    Ok(ws)
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 byte {c:#x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("aGVsbG8=").expect("valid"), b"hello");
        assert_eq!(base64_decode("aGk=").expect("valid"), b"hi");
        assert_eq!(base64_decode("").expect("valid"), b"");
        assert!(base64_decode("a*b=").is_err());
    }
}
