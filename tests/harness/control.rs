//! Starting and stopping the collector and agents of a fleet, and querying it
//! with the `reachmap` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;

use crate::bins::binary;
use crate::fleet::{
    COLLECTOR_GRPC_PORT, COLLECTOR_HTTP_PORT, COLLECTOR_HTTP_URL, COLLECTOR_URL, Fleet, HUB_ADDR,
    run_in,
};
use crate::netns::describe;
use crate::nodes::{NodeView, node_views};
use crate::process::{self, GRACE, Proc};
use crate::{eventually, patient};

/// How long the collector may take to start listening.
const COLLECTOR_STARTUP: Duration = Duration::from_secs(15);
/// How long one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// The fleet's trust material, made the way an operator would before the
/// first start: the CA (`reachmap-collector ca init`), an enrolment token
/// every agent uses, an operator bundle for the CLI and a viewer token for
/// HTTP.
#[derive(Debug, Clone)]
pub struct FleetTrust {
    pub pin: String,
    pub enroll_token: String,
    /// `reachmap --credentials` bundle, role operator.
    pub operator_bundle: PathBuf,
    /// A viewer bundle.
    pub viewer_bundle: PathBuf,
    /// `Authorization: Bearer` for HTTP, role viewer.
    pub viewer_token: String,
    /// The CA certificate (PEM), for curl's --cacert.
    pub ca_file: PathBuf,
}

impl Fleet {
    fn collector_data_dir(&self) -> PathBuf {
        self.dir().join("collector-data")
    }

    /// The collector's data directory (its store, its CA).
    pub fn collector_data(&self) -> PathBuf {
        self.collector_data_dir()
    }

    /// Keeps the collector's store elsewhere (a PostgreSQL database:
    /// `--store URL --store-ca FILE`) for every later run of the collector,
    /// its offline commands included (those then run in the hub, where the
    /// database can be reached). Call before anything starts.
    pub fn use_store(&mut self, flags: &[&str]) {
        assert!(
            self.trust.is_none() && self.collector.is_none(),
            "use_store comes before the collector's first run"
        );
        self.store_flags = flags.iter().map(|f| f.to_string()).collect();
    }

    /// Runs the collector (as `start_collector` would, in the hub) and
    /// waits up to `timeout` for it to exit: for starts that must fail.
    pub fn collector_run(&mut self, extra: &[&str], timeout: Duration) -> Output {
        let data = self.collector_data_dir();
        let listen = format!("{HUB_ADDR}:{COLLECTOR_GRPC_PORT}");
        let http = format!("{HUB_ADDR}:{COLLECTOR_HTTP_PORT}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hub])
            .arg(binary("reachmap-collector"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen, "--http", &http])
            .args(&self.store_flags)
            .args(extra);
        process::scrub_env(&mut cmd);
        cmd.envs(self.isolated_config().iter().map(|(k, v)| (*k, v)));
        process::output_with_timeout(cmd, patient(timeout))
    }

    /// Runs `reachmap-collector --data-dir D ARGS` (offline subcommands)
    /// and returns its standard output; panics unless it succeeds.
    pub fn collector_cmd(&self, args: &[&str]) -> String {
        let data = self.collector_data_dir();
        let listen = format!("{HUB_ADDR}:{COLLECTOR_GRPC_PORT}");
        let http = format!("{HUB_ADDR}:{COLLECTOR_HTTP_PORT}");
        let mut cmd = if self.store_flags.is_empty() {
            Command::new(binary("reachmap-collector"))
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.hub])
                .arg(binary("reachmap-collector"));
            c
        };
        process::scrub_env(&mut cmd);
        cmd.envs(self.isolated_config().iter().map(|(k, v)| (*k, v)))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen, "--http", &http])
            .args(&self.store_flags)
            .args(args);
        let out = process::output_with_timeout(cmd, patient(CLI_TIMEOUT));
        if !out.status.success() {
            panic!(
                "reachmap-collector {} failed\n{}",
                args.join(" "),
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The fleet's trust material, made on first use.
    pub fn trust(&mut self) -> FleetTrust {
        if let Some(t) = &self.trust {
            return t.clone();
        }
        std::fs::create_dir_all(self.collector_data_dir())
            .expect("cannot create the collector data dir");
        let pin = self.collector_cmd(&["ca", "init"]);
        let enroll_token = self.collector_cmd(&[
            "token",
            "create",
            "--uses",
            "100000",
            "--ttl",
            "24h",
            "--description",
            "harness",
        ]);
        let viewer_token =
            self.collector_cmd(&["token", "create", "--role", "viewer", "--ttl", "24h"]);
        let bundle = |fleet: &Fleet, role: &str| {
            let path = fleet.dir().join(format!("{role}.pem"));
            let p = path.to_str().expect("temp dir path is not UTF-8");
            fleet.collector_cmd(&[
                "issue-client",
                &format!("harness-{role}"),
                "--role",
                role,
                "-o",
                p,
            ]);
            path
        };
        let operator_bundle = bundle(self, "operator");
        let viewer_bundle = bundle(self, "viewer");
        let t = FleetTrust {
            pin,
            enroll_token,
            operator_bundle,
            viewer_bundle,
            viewer_token,
            ca_file: self.collector_data_dir().join("tls/ca.crt"),
        };
        self.trust = Some(t.clone());
        t
    }

    /// Starts `reachmap-collector` in the hub namespace (gRPC on
    /// 198.18.0.1:7440, HTTP on 198.18.0.1:7441, data in the fleet directory,
    /// agents probing every second)
    /// and waits until it accepts connections. The data directory survives
    /// restarts of the collector.
    pub fn start_collector(&mut self) {
        self.start_collector_with(&[]);
    }

    /// `start_collector` with more flags.
    pub fn start_collector_with(&mut self, extra: &[&str]) {
        assert!(self.collector.is_none(), "the collector is already running");
        let data_dir = self.collector_data_dir();
        std::fs::create_dir_all(&data_dir).expect("cannot create the collector data dir");
        if !extra.contains(&"--insecure") {
            self.trust();
        }
        let listen = format!("{HUB_ADDR}:{COLLECTOR_GRPC_PORT}");
        let http = format!("{HUB_ADDR}:{COLLECTOR_HTTP_PORT}");
        let data = data_dir.to_str().expect("temp dir path is not UTF-8");
        let args = [
            "--listen",
            &listen,
            "--http",
            &http,
            "--data-dir",
            data,
            "--probe-interval",
            "1s",
            "--probe-timeout",
            "1s",
        ];
        let store: Vec<&str> = self.store_flags.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().chain(&store).chain(extra).copied().collect();
        let log = process::log_path(self.dir(), "collector");
        let bin = binary("reachmap-collector");
        let env = self.isolated_config();
        let p = Proc::spawn("collector", &self.hub, &bin, &args, &env, &log);
        self.collector = Some(p);
        let port = format!("sport = :{COLLECTOR_GRPC_PORT}");
        let hub = self.hub.clone();
        eventually(COLLECTOR_STARTUP, "collector listening on :7440", || {
            if let Some(status) = self.collector.as_mut().and_then(Proc::try_status) {
                panic!(
                    "the collector exited during startup ({status}); log:\n{}",
                    process::tail(&log, 60)
                );
            }
            let out = run_in(&hub, &["ss", "-Hltn", &port], Duration::from_secs(10));
            let listening = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if listening.is_empty() {
                Err(format!("nothing listening yet\n{}", describe(&out)))
            } else {
                Ok(())
            }
        });
    }

    /// Points `REACHMAP_CONFIG` at an empty file, so that a config installed
    /// on this machine (/etc/reachmap/*.toml) never reaches the fleet: only
    /// the harness's flags configure it.
    fn isolated_config(&self) -> [(&'static str, PathBuf); 1] {
        let empty = self.dir().join("empty-config.toml");
        if !empty.exists() {
            std::fs::write(&empty, "").expect("cannot write the empty config file");
        }
        [("REACHMAP_CONFIG", empty)]
    }

    /// Stops the collector with SIGTERM (SIGKILL after a grace period) and
    /// returns its exit status.
    pub fn stop_collector(&mut self) -> ExitStatus {
        let mut p = self.collector.take().expect("the collector is not running");
        p.terminate(GRACE)
    }

    /// Kills the collector with SIGKILL and returns its exit status.
    pub fn kill_collector(&mut self) -> ExitStatus {
        let mut p = self.collector.take().expect("the collector is not running");
        p.kill()
    }

    /// Starts `reachmap-agent` in node `i` as `node-<i>`, reporting to the hub's
    /// collector with a 1 s heartbeat, at most 1 s between reconnects, socket
    /// figures and resources read every second, and its own state directory.
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// `start_agent` with extra flags (they come last, so they win).
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        self.start_agent_env(i, extra, &[]);
    }

    /// `start_agent_with`, and more environment variables for the agent
    /// (`PATH`, say).
    pub fn start_agent_env(&mut self, i: usize, extra: &[&str], vars: &[(&'static str, PathBuf)]) {
        self.start_agent_via(i, &[], extra, vars);
    }

    /// `start_agent_env`, with the agent started by `wrapper` (a command
    /// and its flags that run the agent, e.g. `setpriv` dropping a
    /// capability); an empty wrapper starts it directly.
    pub fn start_agent_via(
        &mut self,
        i: usize,
        wrapper: &[&str],
        extra: &[&str],
        vars: &[(&'static str, PathBuf)],
    ) {
        let node = self.node(i).clone();
        assert!(
            self.agents[i].is_none(),
            "the agent of {} is already running",
            node.name
        );
        let state_dir = self.dir().join(format!("agent-state-{}", node.name));
        let state_dir = state_dir.to_str().expect("temp dir path is not UTF-8");
        let insecure = extra.contains(&"--insecure");
        let trust = (!insecure).then(|| self.trust());
        let (token, pin) = trust
            .as_ref()
            .map(|t| (t.enroll_token.clone(), t.pin.clone()))
            .unwrap_or_default();
        let plain_url = COLLECTOR_URL.replace("https://", "http://");
        let mut defaults = vec![
            (
                "--collector",
                if insecure {
                    plain_url.as_str()
                } else {
                    COLLECTOR_URL
                },
            ),
            ("--node", node.name.as_str()),
            ("--heartbeat-interval", "1s"),
            ("--reconnect-max", "1s"),
            ("--poll-interval", "1s"),
            ("--socket-poll-interval", "1s"),
            ("--state-dir", state_dir),
        ];
        if !insecure {
            defaults.push(("--enroll-token", token.as_str()));
            defaults.push(("--ca-pin", pin.as_str()));
        }
        // A flag given in `extra` replaces its default (a flag given twice
        // is a usage error).
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let label = format!("agent-{}", node.name);
        let log = process::log_path(self.dir(), &label);
        let agent = binary("reachmap-agent");
        let agent = agent.to_str().expect("binary path is not UTF-8");
        let (bin, args) = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut all: Vec<&str> = rest.to_vec();
                all.push(agent);
                all.extend(args);
                (PathBuf::from(first), all)
            }
            None => (PathBuf::from(agent), args),
        };
        let mut env = self.isolated_config().to_vec();
        env.extend(vars.iter().cloned());
        self.agents[i] = Some(Proc::spawn(&label, &node.netns, &bin, &args, &env, &log));
    }

    /// Starts the agent of every node.
    pub fn start_agents(&mut self) {
        for i in 0..self.nodes().len() {
            self.start_agent(i);
        }
    }

    /// Stops the agent of node `i` with SIGTERM (SIGKILL after a grace
    /// period) and returns its exit status.
    pub fn stop_agent(&mut self, i: usize) -> ExitStatus {
        self.take_agent(i).terminate(GRACE)
    }

    /// Kills the agent of node `i` with SIGKILL and returns its exit status.
    pub fn kill_agent(&mut self, i: usize) -> ExitStatus {
        self.take_agent(i).kill()
    }

    /// Waits up to `timeout` for the agent of node `i` to exit by itself;
    /// its exit status, or `None` while it still runs.
    pub fn wait_agent_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let p = self.agents[i].as_mut()?;
        let status = p.wait_timeout(patient(timeout));
        if status.is_some() {
            self.agents[i] = None;
        }
        status
    }

    /// The log of the agent of node `i` (every start of it).
    pub fn agent_log(&self, i: usize) -> String {
        let label = format!("agent-{}", self.node(i).name);
        std::fs::read_to_string(process::log_path(self.dir(), &label)).unwrap_or_default()
    }

    /// The collector's log.
    pub fn collector_log(&self) -> String {
        std::fs::read_to_string(process::log_path(self.dir(), "collector")).unwrap_or_default()
    }

    fn take_agent(&mut self, i: usize) -> Proc {
        let name = self.node(i).name.clone();
        self.agents[i]
            .take()
            .unwrap_or_else(|| panic!("the agent of {name} is not running"))
    }

    /// Starts any long-running command inside node `i` (a listener, a load
    /// generator...); it is stopped with the fleet. Returns its pid.
    pub fn spawn(&mut self, i: usize, label: &str, args: &[&str]) -> u32 {
        let (program, rest) = args.split_first().expect("spawn: empty command line");
        let netns = self.node(i).netns.clone();
        let log = process::log_path(self.dir(), &format!("{}-{label}", self.node(i).name));
        let p = Proc::spawn(label, &netns, Path::new(program), rest, &[], &log);
        let pid = p.pid();
        self.extra.push(p);
        pid
    }

    /// Starts a long-running command in the hub namespace (a Prometheus, a
    /// client...); stopped with the fleet. Returns its pid.
    pub fn spawn_hub(&mut self, label: &str, args: &[&str]) -> u32 {
        let (program, rest) = args.split_first().expect("spawn: empty command line");
        let hub = self.hub.clone();
        let log = process::log_path(self.dir(), &format!("hub-{label}"));
        let p = Proc::spawn(label, &hub, Path::new(program), rest, &[], &log);
        let pid = p.pid();
        self.extra.push(p);
        pid
    }

    /// Runs `reachmap --collector https://198.18.0.1:7440 --credentials
    /// OPERATOR-BUNDLE ARGS...` inside the hub namespace and returns its
    /// output whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Output {
        let bundle = self.trust.as_ref().map(|t| t.operator_bundle.clone());
        let mut pre: Vec<String> = vec!["--collector".into(), COLLECTOR_URL.into()];
        if let Some(b) = bundle {
            pre.push("--credentials".into());
            pre.push(b.to_str().expect("temp dir path is not UTF-8").into());
        }
        let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
        self.cli_as(&pre, args)
    }

    /// Runs `reachmap PRE... ARGS...` inside the hub namespace with no
    /// credentials but those in `pre`.
    pub fn cli_as(&self, pre: &[&str], args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        process::scrub_env(&mut cmd);
        cmd.args(["netns", "exec", self.hub()])
            .arg(binary("reachmap"))
            .args(pre)
            .args(args);
        process::output_with_timeout(cmd, patient(CLI_TIMEOUT))
    }

    /// The Chromium flag that trusts the fleet's CA (by its key, as the pin
    /// names it) and nothing else.
    pub fn chromium_trust_flag(&mut self) -> String {
        use base64::Engine;
        let pin = self.trust().pin;
        let hex = pin.trim_start_matches("sha256:");
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("pin is hex"))
            .collect();
        format!(
            "--ignore-certificate-errors-spki-list={}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// `curl -sf` of the collector's HTTPS side at `path` with the viewer
    /// token, from the hub; panics unless it succeeds.
    pub fn http_get(&self, path: &str) -> Output {
        let out = self.try_http_get(path, &["-f"]);
        if !out.status.success() {
            panic!("GET {path} failed\n{}", describe(&out));
        }
        out
    }

    /// `curl -s` of `path` with the viewer token (and the CA) and `extra`
    /// curl flags, whatever the status.
    pub fn try_http_get(&self, path: &str, extra: &[&str]) -> Output {
        let t = self
            .trust
            .as_ref()
            .expect("the collector has not been started");
        let ca = t.ca_file.to_str().expect("temp dir path is not UTF-8");
        let auth = format!("Authorization: Bearer {}", t.viewer_token);
        let url = format!("{COLLECTOR_HTTP_URL}{path}");
        let mut args = vec!["curl", "-s", "--cacert", ca, "-H", &auth];
        args.extend_from_slice(extra);
        args.push(&url);
        run_in(&self.hub, &args, patient(Duration::from_secs(30)))
    }

    /// `reachmap nodes --format json`, parsed. Errors carry the CLI's output.
    pub fn try_nodes_json(&self) -> Result<Value, String> {
        let out = self.cli(&["nodes", "--format", "json"]);
        if !out.status.success() {
            return Err(format!("reachmap nodes failed\n{}", describe(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "reachmap nodes printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `reachmap nodes --format json`, parsed; panics if the CLI fails.
    pub fn nodes_json(&self) -> Value {
        self.try_nodes_json().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The nodes the collector reports, as [`NodeView`]s.
    pub fn try_node_views(&self) -> Result<Vec<NodeView>, String> {
        node_views(&self.try_nodes_json()?)
    }
}
